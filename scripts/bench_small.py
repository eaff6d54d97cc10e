"""Small models' per-call latency: what each part of ``predict``'s call path costs.

The small models of ``scripts/bench.py`` (the tiny CNN and the VAD LSTM step, built and
exported by its ``prepare``) run at batch 1 in fresh processes, one per dispatch setting,
alternating round by round:

* ``inline`` — mlc's default: JAX's CPU client runs each call in the calling thread
  (``mlc.runtime.xla_options.run_cpu_calls_inline``);
* ``async`` — ``MLC_CPU_ASYNC_DISPATCH=1``: JAX's default asynchronous dispatch.

In each process, blocks of calls alternate between onnxruntime (2 threads, its defaults),
``model.predict`` (inputs of a known signature skip their checks and take the call plan,
``mlc.call_plan``), ``model.predict`` with the checks made on every call (the known-signature
memory disabled, and with it the plan: the whole path every call), and the model's pure
function under ``jax.jit`` on device-resident inputs (JAX's dispatch and XLA alone). Median
wall and CPU (``time.process_time``, all threads) per call, microseconds; ratios to
onnxruntime from the same process.

    .venv/bin/python scripts/bench_small.py [--rounds 3] [--out bench/small_models.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("tinycnn", "vad")
SETTINGS = {"inline": {}, "async": {"MLC_CPU_ASYNC_DISPATCH": "1"}}
VARIANTS = ("onnxruntime", "predict", "predict, checked every call", "jit(fn), device inputs")

TIMER = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import bench
import jax, numpy as np, onnxruntime as ort
import mlc
from pathlib import Path

class _NoMemory(dict):
    def __setitem__(self, key, value):
        pass

d, blocks, calls = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
meta = json.loads((d / "meta.json").read_text())
inputs = bench.make_inputs(meta["name"], meta["size"], 1)
so = ort.SessionOptions()
so.intra_op_num_threads = 2
session = ort.InferenceSession(str(d / meta["onnx"]["1"]), so, providers=["CPUExecutionProvider"])
model = mlc.load(bench.coreml_path(d, meta), cache_dir=False)
checked = mlc.load(bench.coreml_path(d, meta), cache_dir=False)
checked._known_inputs = _NoMemory()
fn, params = model.jax_function()
jitted = jax.jit(fn)
device_inputs = {k: jax.device_put(v) for k, v in model._prepare(inputs).items()}
variants = {
    "onnxruntime": lambda: session.run(None, inputs),
    "predict": lambda: model.predict(inputs),
    "predict, checked every call": lambda: checked.predict(inputs),
    "jit(fn), device inputs": lambda: jax.block_until_ready(jitted(params, device_inputs)),
}
for call in variants.values():
    for _ in range(100):
        call()
wall = {k: [] for k in variants}
cpu = {k: [] for k in variants}
for b in range(blocks):
    order = list(variants) if b % 2 else list(variants)[::-1]
    for k in order:
        t, c = time.perf_counter(), time.process_time()
        for _ in range(calls):
            variants[k]()
        wall[k].append((time.perf_counter() - t) / calls * 1e6)
        cpu[k].append((time.process_time() - c) / calls * 1e6)
print(json.dumps({k: [statistics.median(wall[k]), statistics.median(cpu[k])] for k in variants}))
"""


def _run(d: Path, env: dict, blocks: int, calls: int) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("MLC_CPU_ASYNC_DISPATCH", "JAX_CPU_ENABLE_ASYNC_DISPATCH")}
    environment.update(env)
    out = subprocess.run(
        [sys.executable, "-c", TIMER, str(ROOT / "scripts"), str(d), str(blocks), str(calls)],
        capture_output=True, text=True, env=environment, cwd=ROOT, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(values: list[list[float]]) -> str:
    wall = statistics.median(v[0] for v in values)
    cpu = statistics.median(v[1] for v in values)
    return f"{wall:.0f} (CPU {cpu:.0f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--blocks", type=int, default=11)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--size", choices=("full", "tiny"), default="full", help="'tiny': bench.py's small variants (smoke runs)")
    p.add_argument("--models-dir", default=str(ROOT / "bench" / ".models"))
    p.add_argument("--out", default=str(ROOT / "bench" / "small_models.md"))
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    load_start = os.getloadavg()
    results: dict = {m: {s: [] for s in SETTINGS} for m in MODELS}
    dirs = {m: bench.model_dir(Path(a.models_dir), m, a.size) for m in MODELS}
    for m in MODELS:
        bench.prepare(m, a.size, Path(a.models_dir))
    for r in range(a.rounds):
        for m in MODELS:
            settings = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
            for s in settings:
                results[m][s].append(_run(dirs[m], SETTINGS[s], a.blocks, a.calls))
                print(f"round {r + 1} {m} {s}: {results[m][s][-1]}", flush=True)
    load_end = os.getloadavg()
    lines = [
        "# Small models: the cost of each part of predict's call path",
        "",
        f"Written by `scripts/bench_small.py` on {datetime.date.today()} (python {platform.python_version()}, "
        f"{os.cpu_count()} cores; load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end).",
        "",
        __doc__.split("\n\n")[1].replace("\n", " ").strip(),
        "",
        f"{a.rounds} rounds; each cell is the median over rounds of each process's median of {a.blocks} blocks of {a.calls} calls: "
        "wall µs per call (CPU µs per call).",
        "",
        "| model | dispatch | " + " | ".join(VARIANTS) + " | predict / onnxruntime |",
        "|---|---|" + "---|" * (len(VARIANTS) + 1),
    ]
    for m in MODELS:
        for s in SETTINGS:
            runs = results[m][s]
            cells = [_cell([run[v] for run in runs]) for v in VARIANTS]
            ratio = statistics.median(run["predict"][0] / run["onnxruntime"][0] for run in runs)
            lines.append(f"| {bench.TITLES.get(m, m)} | {s} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps({"results": results, "load": [load_start, load_end]}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
