"""Score a folder of images or an array file with a Core ML model, sharded over every local device.

    python scripts/batch_predict.py Model.mlpackage photos/ -o scores.jsonl
    python scripts/batch_predict.py Model.mlpackage inputs.npz -o outputs.npz --batch-size 256
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/batch_predict.py ...   # 4 CPU "devices"

INPUTS is a folder (every image file under it, at any depth, in sorted order; unreadable images
are skipped with a warning and recorded), an ``.npy`` (the model's single input, examples along
the first axis) or an ``.npz`` (one array per input name). OUT is an ``.npz`` (one array per
output, plus ``_input``, ``_skipped`` and ``_skipped_reason``) or a ``.jsonl`` (one object per
input, in order), written atomically. Errors (a bad INPUTS or OUT, inputs that do not match the
model) print ``batch_predict: error [code]: ...`` and exit with status 2, writing nothing.

``--distributed`` calls ``jax.distributed.initialize()`` first, with ``--coordinator``,
``--num-processes`` and ``--process-id`` where given, the rest auto-detected from the cluster
(SLURM, Open MPI, TPU pods; see JAX's multi-process docs). Every process then reads its own
contiguous share of INPUTS and process 0 writes OUT. It has been tested on one host only
(2 processes on CPU, tests/test_batch_predict.py), not across machines:

    for i in 0 1; do XLA_FLAGS=--xla_force_host_platform_device_count=2 python scripts/batch_predict.py \
        Model.mlpackage photos/ -o scores.jsonl --distributed --coordinator localhost:1234 --num-processes 2 --process-id $i & done

The logic lives in ``mlc.deploy.batch``; this is its command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mlc._errors import MLCError  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batch_predict", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="a .mlpackage or .mlmodel")
    p.add_argument("inputs", metavar="INPUTS", help="a folder of images, an .npy or an .npz file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the results: .npz or .jsonl")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step over all devices, rounded up to a multiple of their count (default 32)")
    p.add_argument("--workers", type=int, help="threads decoding images (default: the CPU count, at most 16)")
    p.add_argument("--prefetch", type=int, default=2, help="batches decoded ahead of the one computing (default 2)")
    p.add_argument("--device", help="cpu, gpu or tpu: every device of that kind (default: JAX's default backend)")
    p.add_argument("--function", help="function of a multifunction package")
    p.add_argument("--compute-precision", default="auto", choices=["auto", "float32", "float16"])
    p.add_argument("--distributed", action="store_true", help="multi-host: call jax.distributed.initialize() first; process 0 writes OUT")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed: process 0's address (default: from the cluster environment)")
    p.add_argument("--num-processes", type=int, help="with --distributed: how many processes (default: from the cluster environment)")
    p.add_argument("--process-id", type=int, help="with --distributed: this process's rank (default: from the cluster environment)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (TQDM_DISABLE=1 works too)")
    return p


def _devices(kind: str | None) -> list:
    import jax

    if kind is None:
        return jax.devices()
    try:
        return jax.devices(kind.lower())
    except RuntimeError as e:
        raise MLCError(f"--device {kind!r}: not available here: {e}") from e


def _initialize_distributed(args) -> None:
    """JAX's multi-process runtime; settings not given are auto-detected (SLURM, Open MPI, TPU pods, ...)."""
    import jax

    try:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as e:
        raise MLCError(f"--distributed: jax.distributed.initialize() failed: {e}") from e


def _progress(total: int, quiet: bool):
    """A tqdm bar counting inputs (items/s); ``TQDM_DISABLE`` applies unless --quiet decides."""
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc="batch_predict", **({"disable": True} if quiet else {}))


def run(args) -> int:
    from mlc.deploy import batch

    batch.check_output_path(args.output)
    batch.input_kind(args.inputs)
    if args.distributed:
        _initialize_distributed(args)
    import jax

    import mlc

    devices = _devices(args.device)
    local = next(d for d in devices if d.process_index == jax.process_index())  # the params' home: one of this process's devices
    model = mlc.load(args.model, function_name=args.function, device=local, compute_precision=args.compute_precision)
    source = batch.open_inputs(model, args.inputs)
    predictor = batch.BatchPredictor(model, devices, args.batch_size, workers=args.workers, prefetch=args.prefetch)
    writer = jax.process_index() == 0
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _progress(len(source), args.quiet or not writer) as bar:
            results = predictor.predict(source, progress=bar.update)
    seconds = time.perf_counter() - start
    for w in caught:  # after the bar is gone, so they do not land inside it
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if writer:
        batch.write_results(results, args.output)
        print(
            f"{len(results.indices)} of {results.total} inputs scored on {len(devices)} {devices[0].platform} device(s), "
            f"batch {predictor.batch_size}, in {seconds:.2f} s ({results.total / seconds:.1f} items/s); "
            f"{len(results.skipped)} skipped; wrote {args.output}"
        )
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"batch_predict: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # restored on exit
        try:
            return run(args)
        except MLCError as e:
            print(f"batch_predict: error [{e.code}]: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
