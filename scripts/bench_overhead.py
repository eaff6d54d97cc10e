"""Per-call overhead: a model with one small op, so the time is all dispatch.

The model is ``y = relu(x)`` on a float32 (1, 16) input, as an ML Program (converted from the
torch module with coremltools) and as ONNX (``torch.onnx.export``). Timed in one process,
alternating, after warm-up: mlc ``model.predict`` (feature checks, dtype handling, the jitted
call, output conversion), the model's pure function under ``jax.jit`` (JAX's own dispatch),
onnxruntime ``session.run`` and torch eager. Median and min of ``--repeats`` blocks of
``--calls`` calls each, in microseconds per call. Writes ``bench/overhead.md``.

    .venv/bin/python scripts/bench_overhead.py [--repeats 15 --calls 2000]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(folder: str):
    import torch

    from mlc.testing.torch_models import convert

    module = torch.nn.ReLU().eval()
    x = torch.zeros(1, 16)
    path = convert(module, (x,), target="iOS16", path=os.path.join(folder, "relu.mlpackage"))
    onnx_path = os.path.join(folder, "relu.onnx")
    torch.onnx.export(module, (x,), onnx_path, input_names=["x"], output_names=["y"], dynamo=False)
    return module, path, onnx_path


def runners(module, path: str, onnx_path: str, x: np.ndarray) -> dict:
    import jax
    import onnxruntime as ort
    import torch

    import mlc

    model = mlc.load(path, cache_dir=False)
    fn, params = model.jax_function()
    jitted = jax.jit(fn)
    device_x = {"x": jax.device_put(x)}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    xt = torch.from_numpy(x)
    torch.set_num_threads(1)

    def torch_call():
        with torch.inference_mode():
            return module(xt).numpy()

    return {
        "mlc predict": lambda: model.predict({"x": x}),
        "mlc jit(fn), device input": lambda: jitted(params, device_x)["y"].block_until_ready(),
        "onnxruntime run": lambda: session.run(None, {"x": x}),
        "torch eager": torch_call,
    }


def measure(calls: dict, repeats: int, n: int) -> dict:
    for call in calls.values():
        for _ in range(200):
            call()
    times = {k: [] for k in calls}
    for i in range(repeats):
        order = list(calls)[i % len(calls):] + list(calls)[: i % len(calls)]
        for name in order:
            call = calls[name]
            start = time.perf_counter()
            for _ in range(n):
                call()
            times[name].append((time.perf_counter() - start) / n * 1e6)
    return {k: {"median_us": statistics.median(v), "min_us": min(v)} for k, v in times.items()}


def report(results: dict, args) -> str:
    import jax
    import onnxruntime
    import torch

    lines = [
        "# Per-call overhead: a model with one small op",
        "",
        f"Written by `scripts/bench_overhead.py` on {datetime.date.today()} "
        f"(python {platform.python_version()}, jax {jax.__version__}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}).",
        "",
        f"`y = relu(x)`, x float32 (1, 16). Median (and min) of {args.repeats} blocks of {args.calls} calls, "
        "the frameworks alternating block by block; microseconds per call. The goal for mlc `predict` is under 50 µs.",
        "",
        "| runner | median µs/call | min µs/call |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['median_us']:.1f} | {r['min_us']:.1f} |")
    lines += [
        "",
        "`mlc predict` does what Core ML's `prediction(from:)` does around the computation: it checks the input "
        "names, shapes and dtypes against the model's description, casts to the program's dtype, calls the "
        "jitted program (JAX's C++ dispatch path) and converts the outputs to the declared types. "
        "`mlc jit(fn)` is JAX's dispatch alone, on an input already on the device.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--out", default=str(ROOT / "bench" / "overhead.md"))
    args = p.parse_args(argv)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    with tempfile.TemporaryDirectory() as folder:
        module, path, onnx_path = build(folder)
        calls = runners(module, path, onnx_path, x)
        out = calls["mlc predict"]()["y"]
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        results = measure(calls, args.repeats, args.calls)
    text = report(results, args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
