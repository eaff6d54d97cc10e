"""Batch scoring: a model run over a folder of images or an array file, sharded over every device.

    predictor = BatchPredictor(mlc.load("Model.mlpackage"), batch_size=64)
    results = predictor.predict(open_inputs(predictor.model, "photos/"))   # or "x.npy", "inputs.npz"
    write_results(results, "scores.jsonl")                                  # or ".npz"

How a run goes (``scripts/batch_predict.py`` is the command line over it):

- **Sharding.** A ``Mesh`` over the devices (default ``jax.devices()``: every device of every
  process) with one axis, ``"batch"``. Inputs are global arrays sharded along their first axis
  (``NamedSharding(mesh, P("batch"))``), the params are replicated (``P()``), and the program is
  the model's pure function vmapped over the batch and jitted. The batch size is rounded up to a
  multiple of the device count and every step has exactly that many rows (the last, partial batch
  is padded with copies of one of its real examples and the padding dropped afterwards), so a run
  compiles once. On one CPU device, a batch whose activations would leave the processor's cache
  is computed as a compiled loop over chunks of a few examples (``mlc.runtime.batch_chunks``).
- **Overlap.** A thread pool decodes and resizes images (``mlc.createml.load_image``, then
  ``fit_image`` as ``mlc predict`` does) up to ``prefetch`` batches ahead, and the outputs of one step are fetched
  and converted while the next one computes (JAX dispatches asynchronously).
- **Unreadable images** are skipped, never raised: each is left out of its batch, listed in one
  ``MLCDataWarning`` at the end of the run, and recorded in ``Results.skipped``.
- **Several processes** (``jax.distributed.initialize()`` called first): each process takes a
  contiguous share of the inputs and feeds its own devices
  (``jax.make_array_from_process_local_data``); each step's outputs are gathered on every
  process (``multihost_utils.process_allgather``), so ``predict`` returns all results everywhere
  and the caller writes them from process 0. Every process runs the same number of steps (the
  largest share's), a process with nothing left feeding padding. Load the model on one of the
  process's own devices (its params are copied from there). A skipped input's reason is known
  only to the process that read it (the others record "skipped by another process"). Tested on
  one host: 2 processes of 2 CPU devices each, JAX's CPU collectives over localhost.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from mlc import features as F
from mlc.runtime import batch_chunks, xla_options
from mlc.runtime.hoist import HoistedFunction
from mlc.io.atomic import atomic_write
from mlc._errors import MLCDataWarning, MLCFeatureTypeError, MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.deploy.formats import IMAGE_SUFFIXES, jsonable

__all__ = [
    "ArraySource",
    "Batch",
    "BatchPredictor",
    "ImageFolderSource",
    "OUTPUT_SUFFIXES",
    "Results",
    "check_output_path",
    "image_files",
    "input_kind",
    "open_inputs",
    "write_results",
]

OUTPUT_SUFFIXES = (".npz", ".jsonl")
AXIS = "batch"
MAX_LISTED = 20  # how many skipped files a warning names


# --------------------------------------------------------------------------------------------
# Inputs


def input_kind(path: str | os.PathLike) -> str:
    """``"images"`` (a folder), ``"npy"`` or ``"npz"``; ``MLCIOError`` for anything else."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "images"
    if not os.path.exists(path):
        raise MLCIOError(f"{path}: no such file or folder (INPUTS is a folder of images, an .npy or an .npz file)")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    raise MLCIOError(f"{path}: unknown kind of inputs {suffix or '(no suffix)'!r}; give a folder of images, an .npy or an .npz file")


def open_inputs(model, path: str | os.PathLike) -> "ImageFolderSource | ArraySource":
    """The source for ``path``: a folder of images, an ``.npy`` (the model's one input) or an
    ``.npz`` (one array per input name), checked against the model's inputs."""
    path = os.fspath(path)
    kind = input_kind(path)
    if kind == "images":
        return ImageFolderSource(model, image_files(path))
    if kind == "npy":
        name = _single_input(model, path)
        return ArraySource(model, {name: _read_npy(path)}, where=path)
    return ArraySource(model, _read_npz(path), where=path)


def image_files(folder: str) -> list[str]:
    """Every image file (``IMAGE_SUFFIXES``) under ``folder``, at any depth, sorted by path
    relative to it; other files, and hidden files and folders (a name starting with ``.``), are
    left out. Paths start with ``folder``."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(os.path.relpath(os.path.join(root, name), folder))
    if not found:
        raise MLCIOError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder or its subfolders")
    return [os.path.join(folder, rel) for rel in sorted(found)]


def _single_input(model, path: str) -> str:
    required = [n for n, f in model.input_description.items() if not f.optional and f.kind != "state"]
    if len(required) != 1:
        raise MLCFeatureTypeError(
            f"{path}: an .npy file feeds a model with one input; {model.name} has {list(model.input_description)}: "
            "give an .npz with one array per input name"
        )
    return required[0]


def _read_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MLCIOError(f"{path}: cannot read it as an .npy array: {e}") from e


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise MLCIOError(f"{path}: cannot read it as an .npz file of arrays: {e}") from e


def _host(prepared: dict) -> dict[str, np.ndarray]:
    """Program inputs as host numpy arrays (``Model.program_batch`` puts them on a non-default model device)."""
    return {k: np.asarray(v) for k, v in prepared.items()}


class ArraySource:
    """Examples along the first axis of one array per model input (from an ``.npy`` or ``.npz``).

    The arrays' names, leading sizes and the first example's shapes and dtypes are checked
    against the model when the source is made, so a bad file fails before anything runs.
    """

    kind = "arrays"

    def __init__(self, model, arrays: dict[str, np.ndarray], where: str = "inputs"):
        self.model, self.arrays, self.where = model, arrays, where
        self._check_names()
        self._length = self._common_length()
        self._check_first()

    def _check_names(self) -> None:
        described = self.model.input_description
        unknown = [k for k in self.arrays if k not in described]
        missing = [n for n, f in described.items() if n not in self.arrays and not f.optional and f.kind != "state"]
        if unknown or missing:
            problem = f"has no input named {unknown[0]!r}" if unknown else f"needs input {missing[0]!r}, which the file lacks"
            raise MLCFeatureTypeError(
                f"{self.where}: the arrays {sorted(self.arrays)} do not match the model's inputs: {self.model.name} "
                f"{problem} (its inputs: {list(described)})"
            )

    def _common_length(self) -> int:
        lengths = {k: (np.shape(a)[0] if np.ndim(a) else None) for k, a in self.arrays.items()}
        if None in lengths.values():
            scalar = next(k for k, n in lengths.items() if n is None)
            raise MLCFeatureTypeError(f"{self.where}: array {scalar!r} is a scalar; examples go along the first axis")
        if len(set(lengths.values())) > 1:
            raise MLCFeatureTypeError(f"{self.where}: the arrays hold different numbers of examples: {lengths}")
        length = next(iter(lengths.values()))
        if length == 0:
            raise MLCFeatureTypeError(f"{self.where}: the arrays hold no examples")
        return length

    def _check_first(self) -> None:
        try:
            self.model.program_batch({k: np.asarray(a[:1]) for k, a in self.arrays.items()})
        except MLCFeatureTypeError as e:
            raise MLCFeatureTypeError(f"{self.where}: {e}") from e

    def __len__(self) -> int:
        return self._length

    def input(self, index: int) -> int:
        """How results name example ``index``: its position."""
        return int(index)

    def submit(self, pool, start: int, stop: int) -> list:
        """Start preparing examples ``start:stop``: one ``(start, future)`` task, a slice of each array."""
        return [(start, pool.submit(self._prepare, start, stop))] if stop > start else []

    def _prepare(self, start: int, stop: int):
        prepared, _ = self.model.program_batch({k: np.asarray(a[start:stop]) for k, a in self.arrays.items()})
        return _host(prepared), np.arange(start, stop)

    def collect(self, futures: list) -> tuple[dict | None, np.ndarray, list]:
        """``(program inputs, their indices, skipped)`` of a submitted chunk (arrays skip nothing)."""
        if not futures:
            return None, np.zeros(0, np.int64), []
        prepared, indices = futures[0][1].result()
        return prepared, indices, []

    def blank(self) -> dict:
        """One example's program inputs, to feed when a process has no real one left (the first)."""
        return self._prepare(0, 1)[0]


class ImageFolderSource:
    """Image files for a model with one image input (any other inputs must be optional).

    Each file is read with ``mlc.createml.load_image`` (EXIF orientation applied, transparency
    over white, any Pillow format), converted to the declared colour space and resized to the
    declared size with ``fit_image``. A flexible input (size range or enumerated sizes) gets its
    default size, so that every batch has one shape. Files that cannot be read are skipped.
    """

    kind = "images"

    def __init__(self, model, paths: list[str]):
        self.model, self.paths = model, list(paths)
        self.name, self.feature = self._image_input(model)

    @staticmethod
    def _image_input(model) -> tuple[str, F.Feature]:
        described = model.input_description
        images = [n for n, f in described.items() if f.kind == "image"]
        others = [n for n, f in described.items() if f.kind not in ("image", "state") and not f.optional]
        if len(images) != 1 or others:
            raise MLCFeatureTypeError(
                f"a folder of images feeds a model with one image input and no other required input; {model.name} has "
                + ", ".join(str(f) for f in described.values())
                + " (give an .npz with one array per input instead)"
            )
        return images[0], described[images[0]]

    def __len__(self) -> int:
        return len(self.paths)

    def input(self, index: int) -> str:
        """How results name example ``index``: its path."""
        return self.paths[index]

    def submit(self, pool, start: int, stop: int) -> list:
        """Start decoding images ``start:stop``: an ``(index, future)`` task each."""
        return [(i, pool.submit(self._prepare, i)) for i in range(start, stop)]

    def _prepare(self, index: int) -> dict:
        from mlc.createml.data import load_image

        return self._as_program_input(load_image(self.paths[index]))

    def _as_program_input(self, image) -> dict:
        image = F.fit_image(image, self.feature)
        height, width = self.feature.shape
        if image.size != (width, height):
            image = image.resize((width, height))  # a flexible input: its default size
        prepared, _ = self.model.program_batch({self.name: [image]})
        return _host(prepared)

    def collect(self, futures: list) -> tuple[dict | None, np.ndarray, list]:
        """``(program inputs, their indices, skipped)`` of a submitted chunk; an unreadable file
        goes to ``skipped`` as ``(index, reason)``."""
        rows, indices, skipped = [], [], []
        for index, future in futures:
            try:
                rows.append(future.result())
                indices.append(index)
            except MLCIOError as e:
                skipped.append((index, str(e)))
        prepared = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]} if rows else None
        return prepared, np.asarray(indices, dtype=np.int64), skipped

    def blank(self) -> dict:
        """A black image of the declared size, to feed when a process has no readable image left."""
        from PIL import Image

        height, width = self.feature.shape
        return self._as_program_input(Image.new(F.PIL_MODES[self.feature.color_space], (width, height)))


# --------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class Batch:
    """One step's results: ``outputs`` as ``Model.predict_batch`` returns them, for the examples
    ``indices`` (ascending), and ``done``: how many inputs the step consumed on every process,
    unreadable ones included (for a progress bar)."""

    indices: np.ndarray
    outputs: dict
    done: int


@dataclasses.dataclass
class Results:
    """A whole run, in input order: ``outputs[name]`` holds one entry per row of ``indices``
    (an array with a leading axis, or a list for labels, probability dicts and images);
    ``inputs`` names each row (an image's path, or an array example's index); ``skipped`` lists
    ``(index, input, reason)`` for each input that could not be read; ``total`` counts every input."""

    indices: np.ndarray
    inputs: list
    outputs: dict
    skipped: list
    total: int


class BatchPredictor:
    """Runs ``model`` on batches sharded over ``devices`` (default: ``jax.devices()``).

    ``batch_size`` is the global batch, rounded up to a multiple of the device count;
    ``workers`` threads decode inputs (default: the CPU count, at most 16), ``prefetch``
    batches ahead of the one computing. Stateful models and models whose output shapes depend on
    their input values cannot be batched (``MLCUnsupportedError``). Run-time index checks
    (``validate_indices``) are not enforced here: the pure function carries none.
    """

    def __init__(self, model, devices=None, batch_size: int = 32, *, workers: int | None = None, prefetch: int = 2):
        if model.state_description:
            raise MLCUnsupportedError(f"{model.name}: a stateful model cannot be batched; call predict per example with a state")
        if int(batch_size) < 1 or int(prefetch) < 0:
            raise MLCParametersError(f"batch_size must be >= 1 and prefetch >= 0, got {batch_size} and {prefetch}")
        self.model = model
        self.devices = list(devices) if devices is not None else jax.devices()
        if not self.devices:
            raise MLCParametersError("no devices to run on")
        self.mesh = jax.sharding.Mesh(np.array(self.devices), (AXIS,))
        self.batch_size = math.ceil(int(batch_size) / len(self.devices)) * len(self.devices)
        self._processes = sorted({d.process_index for d in self.devices})
        self.local_batch = self._local_batch()
        self.workers = workers or min(16, os.cpu_count() or 1)
        self.prefetch = int(prefetch)
        self._sharded = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(AXIS))
        fn, params = model.jax_function()
        # weight-only work (fp16 widening, kernel layouts) once per run, not per batch (mlc.runtime.hoist)
        # on one CPU device, a batch whose activations leave the cache runs as a loop over chunks
        # (mlc.runtime.batch_chunks); a mesh's batch axis is sharded and stays one vmapped call
        one_cpu = len(self.devices) == 1 and self.devices[0].platform == "cpu"
        batched = batch_chunks.vmapped(fn) if one_cpu else jax.vmap(fn, in_axes=(None, 0))
        self._fn = HoistedFunction(batched, compiler_options=xla_options.compiler_options(self.devices[0]),
                                   host_prepare=False)  # params are replicated over the mesh: prepare there
        self._params = self._replicated(params)
        self.skipped: list[tuple[int, str]] = []

    def _local_batch(self) -> int:
        """This process's rows of each global batch (its devices' share of it)."""
        counts = collections.Counter(d.process_index for d in self.devices)
        mine = counts.get(jax.process_index(), 0)
        if mine == 0 or len(set(counts.values())) > 1:
            raise MLCParametersError(f"every process must own the same number (>= 1) of the devices; devices per process: {dict(counts)}")
        return self.batch_size * mine // len(self.devices)

    def _replicated(self, params):
        """The params on every device of the mesh (``P()``), built from each process's own copy."""
        sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

        def replicate(value):
            host = np.asarray(value)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        with self.model.runner.x64():
            return jax.tree.map(replicate, params)

    # -- the share of this process -----------------------------------------------------------
    def _share(self, total: int) -> tuple[range, int]:
        """This process's contiguous range of the inputs, and the steps every process runs."""
        count = len(self._processes)
        rank = self._processes.index(jax.process_index())
        bounds = [total * p // count for p in range(count + 1)]
        largest = max(b - a for a, b in zip(bounds, bounds[1:]))
        return range(bounds[rank], bounds[rank + 1]), math.ceil(largest / self.local_batch)

    def _chunks(self, total: int) -> tuple[list[tuple[int, int]], int]:
        share, steps = self._share(total)
        starts = range(share.start, share.stop, self.local_batch)
        chunks = [(s, min(s + self.local_batch, share.stop)) for s in starts]
        return chunks + [(share.stop, share.stop)] * (steps - len(chunks)), steps

    # -- a run -------------------------------------------------------------------------------
    def run(self, source, progress: Callable[[int], None] | None = None) -> Iterator[Batch]:
        """Yield a ``Batch`` per step, while the next step computes and later inputs decode.

        With one process, batches come in input order; with several, each step holds a chunk
        of every process's share (``predict`` puts them in order). ``progress(n)`` is called
        with the inputs each step consumed. Unreadable inputs are collected in ``self.skipped``
        and warned about (one ``MLCDataWarning``) when the run ends.
        """
        self.skipped = []
        chunks, steps = self._chunks(len(source))
        pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="mlc-batch")
        try:
            submitted = collections.deque()
            in_flight = None
            for step in range(steps):
                while len(submitted) < self.prefetch + 1 and step + len(submitted) < steps:
                    submitted.append(source.submit(pool, *chunks[step + len(submitted)]))
                prepared, indices, skipped = source.collect(submitted.popleft())
                self.skipped += skipped
                done = len(indices) + len(skipped)
                if not len(indices) and len(self._processes) == 1:
                    if progress is not None and done:
                        progress(done)
                    continue  # nothing readable in this chunk, and no other process to keep in step with
                launched = self._launch(source, prepared, indices, done)
                if in_flight is not None:
                    yield self._finish(*in_flight, progress)
                in_flight = launched
            if in_flight is not None:
                yield self._finish(*in_flight, progress)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        _warn_skipped(source, self.skipped)

    def _launch(self, source, prepared: dict | None, indices: np.ndarray, done: int):
        """Pad the chunk to the local batch, place it on the mesh and start the program."""
        pad = self.local_batch - len(indices)
        inputs = _padded(prepared if len(indices) else None, pad, source)
        rows = np.concatenate([indices, np.full(pad, -1, np.int64)]).astype(np.int32)
        with self.model.runner.x64():
            placed = {k: jax.make_array_from_process_local_data(self._sharded, v) for k, v in inputs.items()}
            outputs = self._fn(self._params, placed)
        if len(self._processes) > 1:
            rows = jax.make_array_from_process_local_data(self._sharded, rows)  # laid out as the inputs are
        return outputs, rows, np.asarray([done], np.int64)

    def _finish(self, outputs, rows, done, progress) -> Batch:
        """Fetch a step's outputs (gathered from every process), drop the padding, convert them."""
        with self.model.runner.x64():
            host = _gather({"outputs": outputs, "rows": rows, "done": done}, len(self._processes) > 1)
        rows = np.asarray(host["rows"])
        keep = np.flatnonzero(rows >= 0)
        order = keep[np.argsort(rows[keep], kind="stable")]
        raw = jax.tree.map(lambda a: np.asarray(a)[order], host["outputs"])
        batch = Batch(rows[order].astype(np.int64), self.model.batch_outputs(raw, len(order)), int(np.sum(host["done"])))
        if progress is not None:
            progress(batch.done)
        return batch

    def predict(self, source, progress: Callable[[int], None] | None = None) -> Results:
        """Run over all of ``source`` and return the results in input order (on every process)."""
        batches = list(self.run(source, progress))
        indices = np.concatenate([b.indices for b in batches]) if batches else np.zeros(0, np.int64)
        order = np.argsort(indices, kind="stable")
        outputs = {name: _reorder(_concat([b.outputs[name] for b in batches]), order) for name in (batches[0].outputs if batches else ())}
        indices = indices[order]
        reasons = dict(self.skipped)
        missing = sorted(set(range(len(source))) - set(indices.tolist()))
        skipped = [(i, source.input(i), reasons.get(i, "unreadable (skipped by another process)")) for i in missing]
        return Results(indices, [source.input(i) for i in indices], outputs, skipped, len(source))


def _padded(prepared: dict | None, pad: int, source) -> dict:
    """``pad`` more rows, copies of the last real example; all ``pad`` rows from the source's
    blank example when there is none (a process whose share is used up or unreadable)."""
    if prepared is None:
        return {k: np.repeat(v, pad, axis=0) for k, v in source.blank().items()}
    if not pad:
        return prepared
    return {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in prepared.items()}


def _gather(tree, multiprocess: bool):
    """Host copies of a step's arrays: the global values from every process when there are several."""
    if not multiprocess:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def _concat(parts: list):
    """One output's per-step values joined: arrays along the first axis, lists end to end."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return [item for part in parts for item in part]


def _reorder(values, order: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[order]
    return [values[i] for i in order]


def _warn_skipped(source, skipped: list[tuple[int, str]]) -> None:
    if not skipped:
        return
    lines = [f"  {reason}" for _, reason in sorted(skipped)[:MAX_LISTED]]
    if len(skipped) > MAX_LISTED:
        lines.append(f"  ... and {len(skipped) - MAX_LISTED} more (the results list them all)")
    warnings.warn(
        f"{len(skipped)} of {len(source)} input(s) could not be read and were skipped:\n" + "\n".join(lines),
        MLCDataWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------------------------
# Writing


def check_output_path(path: str | os.PathLike) -> str:
    """``path``'s suffix (``.npz`` or ``.jsonl``); ``MLCIOError`` for any other."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise MLCIOError(f"{os.fspath(path)}: the output must be an .npz or a .jsonl file, not {suffix or '(no suffix)'!r}")
    return suffix


def write_results(results: Results, path: str | os.PathLike) -> str:
    """Write ``results`` to ``path`` atomically (a temporary file beside it, then renamed):
    ``.npz``, one array per output plus ``_input`` (paths or indices), ``_skipped`` and
    ``_skipped_reason``; or ``.jsonl``, one object per input in input order. Raises
    ``MLCIOError`` when no input could be read (and writes nothing)."""
    suffix = check_output_path(path)
    if not len(results.indices):
        raise MLCIOError(f"none of the {results.total} input(s) could be read; nothing to write")
    path = os.fspath(path)
    if suffix == ".npz":
        arrays = _npz_arrays(results)  # converted before any file is opened
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    else:
        with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in _jsonl_lines(results))
    return path


def _npz_arrays(results: Results) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, values in results.outputs.items():
        for key, array in _npz_columns(name, values).items():
            if key in arrays:
                raise MLCFeatureTypeError(f"output {name!r}: the .npz array name {key!r} is taken; write a .jsonl")
            arrays[key] = array
    reserved = {
        "_input": np.asarray(results.inputs),
        "_skipped": np.asarray([s[1] for s in results.skipped], dtype=str if isinstance(results.inputs[0], str) else np.int64),
        "_skipped_reason": np.asarray([s[2] for s in results.skipped], dtype=str),
    }
    taken = sorted(set(reserved) & set(arrays))
    if taken:
        raise MLCFeatureTypeError(f"the model has an output named {taken[0]!r}, which the .npz needs for itself; write a .jsonl")
    return {**arrays, **reserved}


def _npz_columns(name: str, values) -> dict[str, np.ndarray]:
    """One output as .npz arrays: probability dicts as an (N, K) table plus ``<name>_keys``."""
    if isinstance(values, np.ndarray):
        return {name: values}
    first = values[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in values for k in v))
        table = np.array([[v.get(k, np.nan) for k in keys] for v in values], dtype=np.float64)
        return {name: table, f"{name}_keys": np.asarray(keys)}
    if hasattr(first, "mode") and hasattr(first, "size"):  # PIL images
        return {name: np.stack([np.asarray(v) for v in values])}
    array = np.asarray(values)
    if array.dtype == object:
        raise MLCFeatureTypeError(f"output {name!r} has entries of different shapes or kinds; write a .jsonl instead of an .npz")
    return {name: array}


def _jsonl_lines(results: Results) -> Iterator[str]:
    """One JSON object per input, in input order: ``{"input": ..., "outputs": {...}}``, or
    ``{"input": ..., "skipped": reason}`` for one that could not be read."""
    rows = {int(i): r for r, i in enumerate(results.indices)}
    skipped = {i: (inp, reason) for i, inp, reason in results.skipped}
    for index in range(results.total):
        if index in skipped:
            inp, reason = skipped[index]
            yield json.dumps({"input": _jsonable(inp), "skipped": reason})
            continue
        r = rows[index]
        outputs = {name: _jsonable(values[r]) for name, values in results.outputs.items()}
        yield json.dumps({"input": _jsonable(results.inputs[r]), "outputs": outputs})


def _jsonable(value: Any) -> Any:
    """Arrays as lists, numpy scalars as numbers, PIL images as nested lists of pixels."""
    if hasattr(value, "mode") and hasattr(value, "size") and hasattr(value, "getdata"):
        return np.asarray(value).tolist()
    return jsonable(value)
