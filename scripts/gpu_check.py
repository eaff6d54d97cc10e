"""mlc on an NVIDIA GPU: the bench models against torch, fp32 precision (TF32 or not), fp16 programs.

Run by ``scripts/gpu_check.sh`` (which installs what this needs on a fresh GPU machine); by hand:

    .venv/bin/python scripts/gpu_check.py [--models resnet18,vit] [--out bench/gpu_check.md]
    .venv/bin/python scripts/gpu_check.py --dry-run          # on the CPU, tiny sizes: the same code paths
    .venv/bin/python scripts/gpu_check.py --prepare-only     # convert the models here, to carry them over

For each model of ``scripts/bench.py`` (its definitions, conversion and ONNX export, cached in
``--models-dir``):

1. **fp32 against torch.** The reference is torch on the CPU in float32 (scikit-learn for the
   forest). mlc runs the fp32 ML Program on the GPU twice: with JAX's default matmul precision
   (on NVIDIA GPUs from Ampere on, XLA may then compute float32 matrix products and
   convolutions in TF32, a 10-bit mantissa) and under ``jax.default_matmul_precision("highest")``.
   Each output is checked at the bench's fp32 tolerance (max |diff| <= 1e-3 * max |ref| + 1e-5), the
   error written both ways; torch on CUDA (its defaults, recorded: ``cudnn.allow_tf32`` is on by
   default) and onnxruntime's CUDA provider (if ``onnxruntime-gpu`` is installed) are checked too.
2. **What mlc asks for.** The model's pure function (``Model.jax_function``) is traced and every
   ``dot_general`` / ``conv_general_dilated`` counted: the precision it asks for (HIGHEST, or
   none, which follows ``jax_default_matmul_precision``) and its operand dtype. Done for each
   ``mlc.load(compute_precision=...)`` value ("auto", "float32", "float16") on an fp32 and an
   fp16 program: this is what mlc uses by default, measured rather than assumed.
3. **fp16 programs.** The same torch module converted with ``compute_precision=FLOAT16``; mlc
   with ``compute_precision="auto"`` (fp16 on a GPU) and ``"float32"``, checked against the fp32
   reference at an fp16 tolerance (3e-2 * max |ref|) and timed.
4. **Timing** (informational): median latency at batch 1 and time per batch of 32, frameworks
   alternating as in ``scripts/bench.py`` (mlc ``predict`` / ``predict_batch``, torch CUDA,
   onnxruntime CUDA).

Writes one Markdown file (``--out``, default ``bench/gpu_check.md``), rewritten after every
model, so a run cut short still leaves what it measured. ``--budget-s`` bounds the run: models
not started by then are listed as skipped.

Dry run (``--dry-run``, or no GPU visible to JAX): the same steps on the CPU with the tiny
variants of two small models, a few calls each; the file's header says it was a dry run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (scripts/bench.py: the models, their conversion, the runners)

# The GPU run: the bench's suite, most telling first (a run cut short by the budget keeps these).
GPU_MODELS = ("resnet18", "vit", "gpt", "mobilenetv2", "efficientnet", "lstm", "tinycnn", "vad", "trees")
DRY_MODELS = ("tinycnn", "vad")
NO_FP16 = ("trees", "efficientnet")  # not torch conversions: no fp16 program to make
FP16_RTOL = 3e-2  # fp16 programs against the fp32 reference: max |diff| <= FP16_RTOL * max |ref| + ATOL
PRECISIONS = ("auto", "float32", "float16")


# ============================================================================================
# the machine
# ============================================================================================


def gpu_devices() -> list:
    import jax

    try:
        return list(jax.devices("gpu"))
    except RuntimeError:
        return []


def environment(device: str) -> dict:
    import jax
    import jaxlib

    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": f"{platform.node()}, {platform.system()} {platform.release()} ({platform.machine()}), {os.cpu_count()} CPU cores",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax_devices": [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip() for d in jax.devices()],
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "device": device,
    }
    try:
        import jax_cuda12_plugin  # noqa: F401

        env["jax_cuda_plugin"] = "jax-cuda12-plugin"
    except ImportError:
        try:
            import jax_cuda13_plugin  # noqa: F401

            env["jax_cuda_plugin"] = "jax-cuda13-plugin"
        except ImportError:
            env["jax_cuda_plugin"] = "none"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip() or f"rc {smi.returncode}"
    except (OSError, subprocess.TimeoutExpired) as e:
        env["nvidia_smi"] = f"not available ({type(e).__name__})"
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.cuda.is_available() and f"{torch.version.cuda}, {torch.cuda.get_device_name(0)}"
        env["torch_tf32"] = (f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                             f"torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}")  # fmt: skip
    except ImportError:
        env["torch"] = "not installed"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = f"{ort.__version__}, providers {ort.get_available_providers()}"
    except ImportError:
        env["onnxruntime"] = "not installed"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    env["mlc"] = rev or "?"
    return env


def ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


# ============================================================================================
# what mlc asks XLA for: matmul precision and dtype of every dot / convolution
# ============================================================================================


def _subjaxprs(eqn):
    from jax.extend.core import ClosedJaxpr, Jaxpr

    for v in eqn.params.values():
        for item in v if isinstance(v, (list, tuple)) else (v,):
            if isinstance(item, ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, Jaxpr):
                yield item


def matmul_ops(jaxpr) -> dict:
    """Every ``dot_general`` / ``conv_general_dilated`` of ``jaxpr`` (sub-jaxprs included):
    counts by the precision asked for and by operand dtype."""
    out = {"ops": 0, "precision": {}, "dtype": {}}

    def walk(j):
        for eqn in j.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                out["ops"] += 1
                p = eqn.params.get("precision")
                if isinstance(p, tuple):
                    p = p[0] if p and p[0] == p[-1] else p
                key = "unset (follows jax_default_matmul_precision)" if p is None else str(p).replace("Precision.", "")
                out["precision"][key] = out["precision"].get(key, 0) + 1
                dt = str(eqn.invars[0].aval.dtype)
                out["dtype"][dt] = out["dtype"].get(dt, 0) + 1
            for sub in _subjaxprs(eqn):
                walk(sub)

    walk(jaxpr)
    return out


def program_ops(runner) -> dict:
    """``matmul_ops`` of an ``mlc-jit`` bench runner's function at batch 1, and whether the
    model computes fp16 in fp32 (mlc's policy for this load)."""
    import jax

    with jax.enable_x64(runner.name == "trees"):
        jaxpr = jax.make_jaxpr(runner.jax_fn)(runner.jax_params, runner.device_feeds[1])
    out = matmul_ops(jaxpr.jaxpr)
    out["fp16_as_fp32"] = bool(getattr(runner.model.runner, "fp16_as_fp32", None))
    return out


# ============================================================================================
# one model
# ============================================================================================


class Precise:
    """A bench runner whose calls (and so its jit's trace and compile) run under
    ``jax.default_matmul_precision(precision)``."""

    def __init__(self, runner, precision: str, label: str):
        self.runner, self.precision, self.label = runner, precision, label
        self.error = runner.error
        self.name = runner.name

    def call(self, batch):
        import jax

        with jax.default_matmul_precision(self.precision):
            return self.runner.call(batch)


def _labelled(runner, label):
    runner.label = label
    return runner


def compare(got: np.ndarray, expected: np.ndarray, rtol: float) -> dict:
    if got.shape != expected.shape:
        return {"error": f"output shape {got.shape}, expected {expected.shape}"}
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    return {"max_abs_diff": diff, "ref_max_abs": scale, "rel": diff / scale if scale else diff, "ok": diff <= rtol * scale + bench.ATOL}


def check_all(runners, expected: dict, rtol: float) -> dict:
    out = {}
    for r in runners:
        if r.error:
            out[r.label] = {"error": r.error}
            continue
        res = {}
        try:
            for b in (1, bench.BATCH):
                res[str(b)] = compare(r.call(b), expected[b], rtol)
        except Exception as e:  # noqa: BLE001 - recorded, the check goes on
            r.error = f"run failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            res = {"error": r.error}
        out[r.label] = res
    return out


def prepare_fp16(name: str, size: str, root: Path, log) -> dict:
    """The fp16 twin of a bench model: ``model_fp16.mlpackage`` in the model's folder (coremltools'
    ``compute_precision=FLOAT16``), converted once; returns a meta dict naming it."""
    meta = bench.prepare(name, size, root, log, onnx=False)
    d = bench.model_dir(root, name, size)
    path = d / "model_fp16.mlpackage"
    stamp = d / "model_fp16.key.json"
    key = json.dumps(meta["key"], sort_keys=True)
    if not (path.exists() and stamp.exists() and stamp.read_text() == key):
        t = time.perf_counter()
        bench.convert_coreml(bench.torch_module(name, size), name, size, path, precision="fp16")
        stamp.write_text(key)
        log(f"{name}: fp16 program converted in {time.perf_counter() - t:.1f} s")
    return {**meta, "coreml": path.name}


def check_model(name: str, args, device: str, log) -> dict:
    import jax

    size, root = args.size, args.models_dir
    use_ort = device == "gpu" and ort_has_cuda()
    t0 = time.perf_counter()
    meta = bench.prepare(name, size, root, log, onnx=use_ort)
    d = bench.model_dir(root, name, size)
    res = {"prepare_s": time.perf_counter() - t0}
    threads = os.cpu_count()
    ref = bench.Runner("torch", "cpu", name, size, d, meta, threads)
    res["reference"] = "torch fp32 on the CPU" if name != "trees" else "scikit-learn on the CPU"
    if ref.error and "ModuleNotFoundError" in ref.error and name != "trees":
        # no torch here: mlc on the CPU at "highest" (within 1e-6 of torch in scripts/bench.py) stands in
        with jax.default_matmul_precision("highest"):
            ref = Precise(bench.Runner("mlc", "cpu", name, size, d, meta, threads), "highest", "reference")
        res["reference"] = "mlc fp32 on the CPU (torch is not installed)"
    if ref.error:
        return {**res, "error": f"the reference failed: {ref.error}"}
    expected = {b: ref.call(b) for b in (1, bench.BATCH)}
    dev = "GPU" if device == "gpu" else "CPU, dry run"

    # 1. fp32: default matmul precision vs highest; torch and onnxruntime on the device
    runners = [_labelled(bench.Runner("mlc", device, name, size, d, meta, threads), "mlc, default precision")]
    with jax.default_matmul_precision("highest"):
        highest = bench.Runner("mlc", device, name, size, d, meta, threads)
    runners.append(Precise(highest, "highest", "mlc, precision highest"))
    runners.append(_labelled(bench.Runner("torch", device, name, size, d, meta, threads), f"torch ({'CUDA' if device == 'gpu' else 'CPU'})"))
    if device == "gpu":
        ort_runner = bench.Runner("ort", device, name, size, d, meta, threads)
        if not use_ort:
            ort_runner.error = "n/a: onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu not installed)"
        runners.append(_labelled(ort_runner, "onnxruntime (CUDA)"))
    res["fp32"] = check_all(runners, expected, bench.RTOL)
    for lab, c in res["fp32"].items():
        log(f"  {name} fp32 {lab} ({dev}): " + ("; ".join(f"b{b} |diff| {v['max_abs_diff']:.2g} rel {v['rel']:.2g} {'ok' if v['ok'] else 'FAIL'}"
                                                          for b, v in c.items() if isinstance(v, dict) and 'rel' in v) or c.get("error", "?")))  # fmt: skip
    res["time"] = {}
    res["time"]["1"], res["load_1"] = bench.time_round_robin(runners, 1, args.repeats, args.warmup, args.block)
    res["time"][str(bench.BATCH)], res["load_32"] = bench.time_round_robin(runners, bench.BATCH, args.repeats32, 1, args.block)

    # 2. what mlc asks for, per compute_precision, on this device
    res["ops"] = {}
    for cp in PRECISIONS:
        r = bench.Runner("mlc-jit", device, name, size, d, meta, threads, mlc_kwargs={"compute_precision": cp})
        res["ops"][cp] = {"error": r.error} if r.error else program_ops(r)

    # 3. the fp16 program
    if name not in NO_FP16 and not args.no_fp16:
        try:
            meta16 = prepare_fp16(name, size, root, log)
        except Exception as e:  # noqa: BLE001
            res["fp16"] = {"error": f"conversion failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        else:
            r16 = [
                _labelled(bench.Runner("mlc", device, name, size, d, meta16, threads, mlc_kwargs={"compute_precision": "auto"}), "mlc fp16 program, auto"),
                _labelled(bench.Runner("mlc", device, name, size, d, meta16, threads, mlc_kwargs={"compute_precision": "float32"}), "mlc fp16 program, float32"),
            ]
            res["fp16"] = check_all(r16, expected, FP16_RTOL)
            res["fp16_time"] = {}
            res["fp16_time"]["1"], _ = bench.time_round_robin(r16, 1, args.repeats, args.warmup, args.block)
            res["fp16_time"][str(bench.BATCH)], _ = bench.time_round_robin(r16, bench.BATCH, args.repeats32, 1, args.block)
            res["fp16_ops"] = {}
            for cp in PRECISIONS:
                r = bench.Runner("mlc-jit", device, name, size, d, meta16, threads, mlc_kwargs={"compute_precision": cp})
                res["fp16_ops"][cp] = {"error": r.error} if r.error else program_ops(r)
    res["total_s"] = time.perf_counter() - t0
    return res


# ============================================================================================
# the report
# ============================================================================================


def _err(c: dict | None, b: str) -> str:
    if not c:
        return "—"
    if "error" in c:
        return c["error"]
    v = c.get(b)
    if not v:
        return "—"
    if "error" in v:
        return v["error"]
    return f"{v['max_abs_diff']:.2g} (rel {v['rel']:.1g}){'' if v['ok'] else ' **FAIL**'}"


def _t(t: dict | None) -> str:
    if not t:
        return "—"
    if "error" in t:
        return t["error"]
    return f"{t['median_s'] * 1e3:.3g} ms"


def _ops(o: dict | None) -> str:
    if not o:
        return "—"
    if "error" in o:
        return o["error"]
    if not o["ops"]:
        return "no dot/conv"
    prec = ", ".join(f"{k} {v}" for k, v in o["precision"].items())
    dt = ", ".join(f"{k} {v}" for k, v in o["dtype"].items())
    return f"{o['ops']} ops: {prec}; operands {dt}"


def _policy(results: dict) -> list[str]:
    """Per compute_precision and program kind: the operand dtypes and precisions seen, over all models."""
    out = []
    for cp in PRECISIONS:
        parts = []
        for prog, key in (("fp32", "ops"), ("fp16", "fp16_ops")):
            dts, precs = {}, {}
            for r in results["models"].values():
                o = r.get(key, {}).get(cp)
                if isinstance(o, dict) and o.get("ops"):
                    for k, v in o["dtype"].items():
                        dts[k] = dts.get(k, 0) + v
                    for k, v in o["precision"].items():
                        precs[k.split(" ")[0]] = precs.get(k.split(" ")[0], 0) + v
            if dts:
                parts.append(f"{prog} programs compute their products in {'/'.join(sorted(dts))} with precision "
                             + ", ".join(f"{k} ({v})" for k, v in precs.items()))
        if parts:
            out.append(f"compute_precision={cp!r}: " + "; ".join(parts) + ".")
    return out


def verdict(results: dict) -> list[str]:
    """The TF32 finding in words, from the measurements."""
    lines = []
    unset = {n: r["ops"]["auto"] for n, r in results["models"].items() if isinstance(r.get("ops", {}).get("auto"), dict) and "ops" in r["ops"]["auto"]}
    follows = {n: o["precision"].get("unset (follows jax_default_matmul_precision)", 0) for n, o in unset.items()}
    total = {n: o["ops"] for n, o in unset.items()}
    if unset:
        n_unset, n_all = sum(follows.values()), sum(total.values())
        asked = {}
        for o in unset.values():
            for k, v in o["precision"].items():
                if not k.startswith("unset"):
                    asked[k] = asked.get(k, 0) + v
        jdp = results["env"]["jax_default_matmul_precision"]
        lines.append(
            f"Of the {n_all} matrix products and convolutions in the checked fp32 programs (mlc.load's default "
            f"compute_precision=\"auto\"), {n_unset} ask for no precision, so they follow `jax_default_matmul_precision` "
            f"({'unset: JAX' + chr(39) + 's default' if jdp == 'None' else repr(jdp)}); "
            + (", ".join(f"{v} ask for {k}" for k, v in asked.items()) or "none asks for one")
            + " (mlc's NeuralNetwork convolutions and recurrent layers ask for HIGHEST; its ML Program ops ask for nothing). "
            + ("So mlc does not force \"highest\" for float32 compute on a GPU: with JAX's default, XLA may run those products "
               "in TF32 on Ampere and later GPUs. " if n_unset else "mlc asks for HIGHEST everywhere. ")
            + "compute_precision chooses fp16 or fp32 dtypes only; it sets no matmul precision."
        )
        lines += _policy(results)
    fails = {"default": [], "highest": []}
    worst = {"default": 0.0, "highest": 0.0}
    for n, r in results["models"].items():
        for key, lab in (("default", "mlc, default precision"), ("highest", "mlc, precision highest")):
            c = r.get("fp32", {}).get(lab, {})
            for b in ("1", str(bench.BATCH)):
                v = c.get(b)
                if isinstance(v, dict) and "rel" in v:
                    worst[key] = max(worst[key], v["rel"])
                    if not v["ok"]:
                        fails[key].append(f"{bench.TITLES[n]} batch {b}")
    if any(r.get("fp32") for r in results["models"].values()):
        lines.append(
            f"Measured on {results['device_words']}: largest relative error (max |diff| / max |reference|) of mlc's fp32 "
            f"programs against torch fp32 on the CPU: {worst['default']:.2g} with JAX's default matmul precision, "
            f"{worst['highest']:.2g} with \"highest\". Outside the fp32 tolerance: "
            f"default: {', '.join(fails['default']) or 'none'}; highest: {', '.join(fails['highest']) or 'none'}."
        )
        if results["dry_run"]:
            lines.append("This is a CPU dry run: XLA's CPU backend has no TF32, so both settings compute the same; only "
                         "a GPU run measures the TF32 error.")
        elif fails["default"] and not fails["highest"]:
            lines.append("TF32 breaks fp32 models here: mlc should compute float32 programs with \"highest\" on GPU by "
                         "default (or per compute_precision=\"float32\"); not changed by this script.")
    return lines


def report(results: dict) -> str:
    env = results["env"]
    dry = results["dry_run"]
    L = ["# mlc on the GPU: fp32 against torch, TF32, fp16 programs", ""]
    if dry:
        L += [f"**DRY RUN on the CPU** ({results['dry_reason']}): the GPU check's code paths with tiny models and a few "
              "calls each. Its numbers say nothing about a GPU; run `scripts/gpu_check.sh` on a machine with an NVIDIA GPU "
              "for those." + (f" {results['note']}" if results.get("note") else ""), ""]  # fmt: skip
    elif results.get("note"):
        L += [results["note"], ""]
    L += [f"Written by `scripts/gpu_check.py` on {env['date'][:10]} (`{results['command']}`), in {results['run_s']:.0f} s.", "",
          "## Machine", ""]  # fmt: skip
    for k in ("host", "nvidia_smi", "jax_devices", "jax", "jaxlib", "jax_cuda_plugin", "jax_default_matmul_precision", "torch",
              "torch_cuda", "torch_tf32", "onnxruntime", "python", "mlc"):  # fmt: skip
        if k in env:
            L.append(f"- {k}: {env[k]}")
    L += ["", "## Finding", ""] + [f"- {line}" for line in verdict(results)]

    models = results["models"]
    L += ["", "## fp32 programs against torch (fp32, CPU)", "",
          f"Max |diff| against torch in float32 on the CPU (scikit-learn for the forest), and relative to max |reference|; "
          f"**FAIL** beyond the fp32 tolerance ({bench.RTOL:g} * max |ref| + {bench.ATOL:g}). \"default\": JAX's default "
          "matmul precision; \"highest\": under `jax.default_matmul_precision(\"highest\")`.", ""]  # fmt: skip
    labs = []
    for r in models.values():
        for lab in r.get("fp32", {}):
            if lab not in labs:
                labs.append(lab)
    L += ["| model | " + " | ".join(f"{lab}, batch 1 / {bench.BATCH}" for lab in labs) + " |", "|---|" + "---|" * len(labs)]
    for n, r in models.items():
        if "fp32" not in r:
            L.append(f"| {bench.TITLES[n]} | " + " | ".join([r.get("error", r.get("skipped", "—"))] + ["—"] * (len(labs) - 1)) + " |")
            continue
        title = bench.TITLES[n] + ("" if r.get("reference", "").startswith(("torch", "scikit")) else f" (reference: {r.get('reference')})")
        L.append(f"| {title} | " + " | ".join(f"{_err(r['fp32'].get(lab), '1')} / {_err(r['fp32'].get(lab), str(bench.BATCH))}" for lab in labs) + " |")

    L += ["", "## What mlc asks XLA for, per compute_precision", "",
          "Every `dot_general` and `conv_general_dilated` in the model's traced function (`Model.jax_function`, as "
          "`mlc.load(path, compute_precision=...)` on this device builds it): the precision it asks for and the dtype of its "
          "operands. \"unset\" follows `jax_default_matmul_precision` (on NVIDIA Ampere+ GPUs JAX's default lets float32 "
          "products run in TF32).", ""]  # fmt: skip
    L += ["| model | program | " + " | ".join(f"compute_precision={cp!r}" for cp in PRECISIONS) + " |", "|---|---|" + "---|" * len(PRECISIONS)]
    for n, r in models.items():
        for prog, key in (("fp32", "ops"), ("fp16", "fp16_ops")):
            if key in r:
                L.append(f"| {bench.TITLES[n]} | {prog} | " + " | ".join(_ops(r[key].get(cp)) for cp in PRECISIONS) + " |")

    L += ["", "## fp16 programs", "",
          f"The same torch module converted with `compute_precision=FLOAT16`, against the fp32 reference; **FAIL** beyond "
          f"{FP16_RTOL:g} * max |ref| + {bench.ATOL:g}. \"auto\" computes fp16 on a GPU (in fp32 on the CPU); \"float32\" "
          "forces fp32. Times: median at batch 1 / per batch of 32.", "",
          "| model | auto: error b1 / b32 | auto: time b1 / b32 | float32: error b1 / b32 | float32: time b1 / b32 |",
          "|---|---|---|---|---|"]  # fmt: skip
    for n, r in models.items():
        f16 = r.get("fp16")
        if not f16:
            continue
        if "error" in f16:
            L.append(f"| {bench.TITLES[n]} | {f16['error']} | — | — | — |")
            continue
        cells = []
        for lab in ("mlc fp16 program, auto", "mlc fp16 program, float32"):
            c = f16.get(lab, {})
            t = r.get("fp16_time", {})
            cells += [f"{_err(c, '1')} / {_err(c, str(bench.BATCH))}", f"{_t(t.get('1', {}).get(lab))} / {_t(t.get(str(bench.BATCH), {}).get(lab))}"]
        L.append(f"| {bench.TITLES[n]} | " + " | ".join(cells) + " |")

    L += ["", "## Timing", "",
          f"Median wall time at batch 1 / per batch of {bench.BATCH} ({results['settings']['repeats']} / "
          f"{results['settings']['repeats32']} runs each, frameworks alternating as in `scripts/bench.py`; mlc's `predict` and "
          "`predict_batch` include the host-device copies; torch's calls end with `.cpu()`). Informational: the fp32 check "
          "above is the point.", "",
          "| model | " + " | ".join(labs) + " |", "|---|" + "---|" * len(labs)]  # fmt: skip
    for n, r in models.items():
        if "time" not in r:
            continue
        t1, t32 = r["time"].get("1", {}), r["time"].get(str(bench.BATCH), {})
        L.append(f"| {bench.TITLES[n]} | " + " | ".join(f"{_t(t1.get(lab))} / {_t(t32.get(lab))}" for lab in labs) + " |")
    skipped = [f"{bench.TITLES[n]} ({r['skipped']})" for n, r in models.items() if "skipped" in r]
    errors = [f"{bench.TITLES[n]}: {r['error']}" for n, r in models.items() if "error" in r]
    if skipped or errors:
        L += ["", "## Not checked", ""] + [f"- skipped: {s}" for s in skipped] + [f"- {e}" for e in errors]
    L += ["", "## Per model", "", "| model | prepare (convert/export, s) | total (s) |", "|---|---|---|"]
    for n, r in models.items():
        if "total_s" in r:
            L.append(f"| {bench.TITLES[n]} | {r['prepare_s']:.1f} | {r['total_s']:.1f} |")
    return "\n".join(L) + "\n"


# ============================================================================================


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(GPU_MODELS)} (default: all; dry run: {','.join(DRY_MODELS)})")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes, a few calls (the default when JAX sees no GPU)")
    p.add_argument("--size", default=None, choices=sorted(bench.CONFIGS), help="model sizes (default: full; dry run: tiny)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs at batch 1 (default 20; dry run 2)")
    p.add_argument("--repeats32", type=int, default=None, help="timed runs at batch 32 (default 5; dry run 1)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block", type=int, default=5)
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 programs")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no new model after this many seconds")
    p.add_argument("--models-dir", default=str(ROOT / "bench" / ".models"), help="converted models (bench.py's cache; carry it to skip conversions)")
    p.add_argument("--out", default=str(ROOT / "bench" / "gpu_check.md"))
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    p.add_argument("--note", default="", help="a sentence for the report's header (why this run, what was missing)")
    p.add_argument("--prepare-only", action="store_true", help="convert and export the models (fp32, fp16, ONNX) and stop")
    args = p.parse_args(argv)
    args.models_dir = Path(args.models_dir)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    bench._quiet()
    t0 = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.prepare_only:
        size = args.size or "full"
        for name in (args.models or ",".join(GPU_MODELS)).split(","):
            bench.prepare(name, size, args.models_dir, log)
            if name not in NO_FP16:
                prepare_fp16(name, size, args.models_dir, log)
        log(f"prepared in {time.perf_counter() - t0:.0f} s under {args.models_dir}")
        return {}
    gpus = gpu_devices()
    dry = args.dry_run or not gpus
    reason = "--dry-run" if args.dry_run else "JAX sees no GPU here" if not gpus else ""
    if dry and not args.dry_run:
        log("JAX sees no GPU: dry run on the CPU")
    device = "cpu" if dry else "gpu"
    args.size = args.size or ("tiny" if dry else "full")
    args.repeats = args.repeats or (2 if dry else 20)
    args.repeats32 = args.repeats32 or (1 if dry else 5)
    if dry:
        args.warmup, args.block = min(args.warmup, 1), min(args.block, 2)
    names = [n.strip() for n in (args.models or ",".join(DRY_MODELS if dry else GPU_MODELS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in bench.MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {','.join(bench.MODELS)}")
    env = environment(device)
    results = {
        "command": shlex.join(["scripts/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "dry_run": dry,
        "dry_reason": reason,
        "note": args.note,
        "device_words": f"the GPU ({env.get('nvidia_smi', '?')})" if not dry else "the CPU (dry run)",
        "env": env,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write():
        results["run_s"] = time.perf_counter() - t0
        out.write_text(report(results))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    for name in names:
        spent = time.perf_counter() - t0
        if spent > args.budget_s:
            results["models"][name] = {"skipped": f"budget of {args.budget_s:.0f} s spent"}
            continue
        log(f"{name}: {'dry run, ' if dry else ''}{device}, size {args.size}")
        try:
            results["models"][name] = check_model(name, args, device, log)
        except Exception as e:  # noqa: BLE001 - one model's failure is a line in the report
            results["models"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            log(f"{name}: failed: {results['models'][name]['error']}")
        write()
    write()
    for line in verdict(results):
        log(line)
    log(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    main()
