"""``predict_batch`` on CPU: the batch split into parts that run at once, one thread each.

XLA:CPU runs each loop fusion of a program (the elementwise work between convolutions and
products, the depthwise loops, Winograd's transforms) on one thread, so a batched call keeps
only part of a multi-core CPU busy (CPU time over wall time 1.4 to 1.7 on 2 cores, where
onnxruntime reaches 2.0). Two calls on halves of the batch, made at the same time from two
threads, fill the cores: with JAX's CPU client running calls inline (``xla_options``) each
call computes in its calling thread and releases the GIL. Measured on 2 cores, batch 32,
the same model alternated in one process (``bench/experiments.md``, "Cores"): ResNet-18
-31% wall time per image, MobileNetV2 -15%, the LSTM -20%, the tiny CNN -13%; the same two
halves one after the other gain nothing, so it is the concurrency, not the smaller batch.

The parts differ in size by at most one example (at most two more compiled signatures), each
part is the same vmapped program, and the outputs are the parts' outputs concatenated: what
one call returns, up to the summation order XLA picks for another batch size.

``MLC_BATCH_SPLIT``: how many parts (``1`` turns the split off; any other number splits
every batch it can, without timing); by default as many as the
process may use cores, at most ``MAX_PARTS``. Only on CPU devices; a batch smaller than two
parts' worth (``MIN_PART`` examples each) runs as one call, and so does every batch of a size
whose parts, timed at its first call, take less than ``MIN_SECONDS`` (small models, where the
second thread costs more than it gains). The first call of a batch size runs its parts one
after the other (it traces and compiles, and times one part); the next ones split or not.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import jax
import numpy as np

from mlc._errors import MLCParametersError

SPLIT_VARIABLE = "MLC_BATCH_SPLIT"
MAX_PARTS = 8  # measured on 2 cores only: more parts than that are not known to pay
MIN_PART = 2  # examples per part: a part of one gives XLA's vmapped kernels nothing to batch
# A part must take at least this long for the split to pay: running parts at once costs a
# thread hand-off and one more call's host work (about 0.15 ms each on 2 cores), and small
# models lose (the VAD step at batch 32: 0.3 -> 0.6 ms a call split; the tiny CNN, 8 ms a
# call, gains 13%).
MIN_SECONDS = 2e-3


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def forced() -> bool:
    """Whether ``MLC_BATCH_SPLIT`` sets the number of parts (then batches split without timing)."""
    return bool(os.environ.get(SPLIT_VARIABLE, "").strip())


def parts_for(batch: int, platform: str) -> int:
    """How many parts a batch of ``batch`` examples is split into on ``platform``."""
    if platform != "cpu":
        return 1
    value = os.environ.get(SPLIT_VARIABLE, "").strip()
    if value:
        try:
            wanted = int(value)
        except ValueError:
            wanted = 0
        if wanted < 1:
            raise MLCParametersError(f"{SPLIT_VARIABLE}={value!r}: expected a whole number of parts, 1 or more (1: no split)")
    else:
        wanted = min(available_cores(), MAX_PARTS)
    return max(1, min(wanted, batch // MIN_PART))


def bounds(batch: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(batch)``, the first ones
    one example longer when ``parts`` does not divide ``batch``."""
    size, extra = divmod(batch, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def batch_size(inputs: Any) -> int | None:
    """The common leading axis of every input leaf, or None when the leaves are not all arrays
    that share one (such inputs are not split)."""
    leaves = jax.tree_util.tree_leaves(inputs)
    sizes = {np.shape(leaf)[0] if getattr(leaf, "ndim", 0) >= 1 else None for leaf in leaves}
    if not leaves or len(sizes) != 1:
        return None
    return sizes.pop()


def _concatenate(outputs: list, sizes: list[int]):
    """The parts' outputs as one batch, leaf by leaf; None if a leaf has no leading batch axis."""
    flat = [jax.tree_util.tree_flatten(o) for o in outputs]
    tree = flat[0][1]
    if any(t != tree for _, t in flat):
        return None
    joined = []
    for pieces in zip(*(leaves for leaves, _ in flat)):
        arrays = [np.asarray(p) for p in pieces]
        if any(a.ndim == 0 or a.shape[0] != n for a, n in zip(arrays, sizes)):
            return None
        joined.append(np.concatenate(arrays))
    return jax.tree_util.tree_unflatten(tree, joined)


class BatchSplitter:
    """Runs ``call(inputs)`` on parts of a batch at once (a runner's batched call), where that
    pays: the first call of a batch size decides, from how long one part took (``MIN_SECONDS``)."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0  # the pool's threads
        self._split: dict = {}  # (batch, parts, key) -> whether such batches run split
        self._lock = threading.Lock()

    def __call__(self, call: Callable[[Any], Any], inputs: Any, parts: int, *, key: Any = None, enter: Callable | None = None,
                 force: bool = False):
        """``call(inputs)``, as ``parts`` calls on slices of the leading axis when that pays
        (``force``: whenever it splits, without timing). ``key`` names what the calls compute
        with (the params), ``enter`` the context each worker thread runs a part in (the
        runner's 64-bit mode, which is thread-local)."""
        n = batch_size(inputs) if parts > 1 else None
        if n is None or n < 2 * MIN_PART:
            return call(inputs)
        decided = self._split.get((n, parts, key))
        if decided is False:
            return call(inputs)
        ranges = bounds(n, parts)
        pieces = [jax.tree_util.tree_map(lambda a, lo=lo, hi=hi: a[lo:hi], inputs) for lo, hi in ranges]
        sizes = [hi - lo for lo, hi in ranges]
        if decided is None:
            results = self._first(call, pieces, sizes, (n, parts, key), force)
        else:
            results = self._at_once(call, pieces, enter)
        joined = _concatenate(results, sizes)
        if joined is not None:
            return joined
        with self._lock:  # outputs without a batch axis to join: such batches run whole from now on
            self._split[(n, parts, key)] = False
        return call(inputs)

    def runs_whole(self, inputs: Any, parts: int, *, key: Any = None) -> bool:
        """Whether ``self(call, inputs, parts, key=key)`` would make one call on the whole batch:
        no split to make, or one this batch size's first call found not to pay."""
        n = batch_size(inputs) if parts > 1 else None
        return n is None or n < 2 * MIN_PART or self._split.get((n, parts, key)) is False

    def _first(self, call, pieces: list, sizes: list[int], decision_key, force: bool) -> list:
        """The first batch of its size: the parts one after the other in this thread (each part
        size's first run traces, splits off the weight-only part and compiles, here and in
        order), one run of an already compiled size timed to decide for the next batches."""
        results: list = [None] * len(pieces)
        compiled: set = set()
        seconds = None
        for i, piece in enumerate(pieces):
            if sizes[i] in compiled and seconds is None:
                start = time.perf_counter()
                results[i] = jax.block_until_ready(call(piece))
                seconds = time.perf_counter() - start
            else:
                results[i] = call(piece)
                compiled.add(sizes[i])
        if seconds is None and not force:  # every part had a size of its own: time the first again
            start = time.perf_counter()
            jax.block_until_ready(call(pieces[0]))
            seconds = time.perf_counter() - start
        with self._lock:
            self._split[decision_key] = force or seconds >= MIN_SECONDS
        return results

    def _at_once(self, call, pieces: list, enter) -> list:
        """Every part at once: the first in this thread, the others in the pool's."""
        pool = self._executor(len(pieces))
        futures = [pool.submit(self._in_context, enter, call, piece) for piece in pieces[1:]]
        first = call(pieces[0])
        return [first] + [f.result() for f in futures]

    @staticmethod
    def _in_context(enter, call, piece):
        if enter is None:
            return call(piece)
        with enter():
            return call(piece)

    def _executor(self, parts: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._workers < parts - 1:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._workers = parts - 1
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="mlc-batch")
            return self._pool
