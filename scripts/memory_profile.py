"""Peak memory per phase, mlc against onnxruntime, on the bench models.

Each (framework, model) runs in a fresh process (the protocol of ``scripts/bench.py``'s
cold-start subprocess: imports, load, first result at batch 1, one batch of 32, no persistent
compilation cache) and reports, after each phase, the process's peak RSS so far (``VmHWM``) and
its RSS now (``VmRSS``, split into anonymous and file-backed pages), from ``/proc/self/status``.
For mlc it also reports what JAX holds: the bytes of ``jax.live_arrays()``, of the params as
the runner holds them, and of the weight-only values the runner computed from them
(``mlc.runtime.hoist``'s residuals, per compiled function).

Writes ``bench/memory.md`` (and ``bench/memory.json``).

    .venv/bin/python scripts/memory_profile.py [--models gpt,resnet18,vit,efficientnet] [--out bench/memory.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402  (the model definitions, inputs and files)

PHASES = ("import", "load", "first", "batch32")
MiB = 2**20


def status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def _nbytes(values) -> int:
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in values)


def jax_report(model) -> dict:
    """What JAX and the runner hold now, MiB."""
    import jax

    runner = model.runner
    held = runner.held_params
    out = {"live_arrays": _nbytes(jax.live_arrays()) / MiB, "params": _nbytes(held.values()) / MiB}
    residuals = {}
    for label in ("_jitted", "_batched"):
        fn = getattr(runner, label, None)
        prepared = getattr(fn, "_prepared", None) or {}
        computed = 0
        for _params, values in prepared.values():
            ids = {id(v) for v in held.values()}
            computed += _nbytes(v for v in values if id(v) not in ids)
        residuals[label.strip("_")] = computed / MiB
    out["residuals"] = residuals
    return out


def child(framework: str, name: str, size: str, models_dir: Path) -> dict:
    import gc

    res = {}
    d = bench.model_dir(models_dir, name, size)
    meta = json.loads((d / "meta.json").read_text())
    if framework == "mlc":
        import jax  # noqa: F401

        import mlc  # noqa: F401
    else:
        import onnxruntime as ort
    res["import"] = status()
    xs1, xs32 = bench.make_inputs(name, size, 1), bench.make_inputs(name, size, bench.BATCH)
    if framework == "mlc":
        model = mlc.load(bench.coreml_path(d, meta), cache_dir=False)
        res["load"] = {**status(), **jax_report(model)}
        r = bench.Runner.__new__(bench.Runner)
        r.name, r.inputs = name, {1: xs1, bench.BATCH: xs32}
        y1 = r._mlc_outputs(model.predict(r._mlc_feeds(1)), 1)
        gc.collect()
        res["first"] = {**status(), **jax_report(model)}
        y32 = r._mlc_outputs(model.predict_batch(r._mlc_feeds(bench.BATCH)), bench.BATCH)
        gc.collect()
        res["batch32"] = {**status(), **jax_report(model)}
    else:
        opts = bench.ort_options(ort, 2)
        files = meta["onnx"]
        s1 = ort.InferenceSession(str(d / files["1"]), opts, providers=["CPUExecutionProvider"])
        res["load"] = status()
        names = [i.name for i in s1.get_inputs()]
        y1 = np.concatenate([o.reshape(1, -1) for o in s1.run(None, dict(zip(names, xs1.values())))], axis=1)
        res["first"] = status()
        s32 = s1 if files[str(bench.BATCH)] == files["1"] else ort.InferenceSession(str(d / files[str(bench.BATCH)]), opts, providers=["CPUExecutionProvider"])
        y32 = np.concatenate([o.reshape(bench.BATCH, -1) for o in s32.run(None, dict(zip(names, xs32.values())))], axis=1)
        res["batch32"] = status()
    res["y1_head"] = [float(v) for v in y1.ravel()[:4]]
    res["y32_sum"] = float(np.sum(y32, dtype=np.float64))
    return res


def run_child(framework: str, name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", framework, "--models", name, "--size", args.size, "--models-dir", str(args.models_dir)]
    env = dict(os.environ, TQDM_DISABLE="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory(prefix="mlc-memory-") as root:
        env["MLC_CACHE_DIR"] = root
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if p.returncode:
        tail = (p.stderr or p.stdout).strip().splitlines()
        return {"error": tail[-1][:300] if tail else f"rc {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def report(results: dict, args) -> str:
    import jax

    import mlc

    lines = [
        "# Peak memory per phase: mlc and onnxruntime",
        "",
        f"`scripts/memory_profile.py`, {datetime.date.today()}, {platform.machine()} Linux, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, JAX {jax.__version__}, mlc {getattr(mlc, '__version__', '?')}.",
        "",
        "Each framework and model in a fresh process, as `scripts/bench.py`'s cold-start subprocess: imports, load, the "
        "first result at batch 1, one batch of 32 (mlc: `predict_batch`, no persistent compilation cache). Per phase the "
        "process's peak RSS so far (VmHWM, MiB) and in brackets its RSS now (anonymous + file-backed pages). "
        "The goal: mlc's peak after the batch of 32 at most 1.3x onnxruntime's.",
        "",
        "| model | framework | import | load | first result | batch of 32 | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by in results.items():
        ort_peak = by.get("ort", {}).get("batch32", {}).get("VmHWM")
        for fw in ("mlc", "ort"):
            if fw not in by:
                continue  # not measured (--frameworks)
            r = by[fw]
            if "error" in r:
                lines.append(f"| {bench.TITLES[name]} | {fw} | {r['error']} | | | | |")
                continue
            cells = [f"{r[p]['VmHWM']:.0f} ({r[p]['RssAnon']:.0f} + {r[p]['RssFile']:.0f})" for p in PHASES]
            ratio = f"{r['batch32']['VmHWM'] / ort_peak:.2f}" if fw == "mlc" and ort_peak else ""
            lines.append(f"| {bench.TITLES[name]} | {'onnxruntime' if fw == 'ort' else fw} | " + " | ".join(cells) + f" | {ratio} |")
    lines += ["", "What mlc's JAX holds after each phase (MiB): live arrays, params as held, computed weight-only values (call / batch).", "",
              "| model | load | first result | batch of 32 |", "|---|---|---|---|"]  # fmt: skip
    for name, by in results.items():
        r = by.get("mlc", {})
        if not r or "error" in r:
            continue
        cells = []
        for p in ("load", "first", "batch32"):
            q = r[p]
            cells.append(f"live {q['live_arrays']:.0f}, params {q['params']:.0f}, computed {q['residuals']['jitted']:.0f} / {q['residuals']['batched']:.0f}")
        lines.append(f"| {bench.TITLES[name]} | " + " | ".join(cells) + " |")
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gpt,resnet18,vit,efficientnet")
    p.add_argument("--size", default="full")
    p.add_argument("--models-dir", default=str(ROOT / "bench" / ".models"))
    p.add_argument("--frameworks", default="mlc,ort")
    p.add_argument("--out", default=str(ROOT / "bench" / "memory.md"))
    p.add_argument("--note", default="")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.models_dir = Path(args.models_dir)
    if args.child:
        with bench.contextlib.redirect_stdout(sys.stderr):
            res = child(args.child, args.models, args.size, args.models_dir)
        print(json.dumps(res))
        return
    results = {}
    for name in args.models.split(","):
        bench.prepare(name, args.size, args.models_dir)
        results[name] = {}
        for fw in args.frameworks.split(","):
            r = results[name][fw] = run_child(fw, name, args)
            peak = "error: " + r["error"] if "error" in r else f"peak {r['batch32']['VmHWM']:.0f} MiB"
            print(f"{name} {fw}: {peak}", flush=True)
    out = Path(args.out)
    out.write_text(report(results, args))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(out.read_text())


if __name__ == "__main__":
    main()
