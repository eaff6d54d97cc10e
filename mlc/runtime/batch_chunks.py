"""``predict_batch`` and batch scoring on CPU: a batch whose activations leave the cache, computed a few examples at a time.

A vmapped call computes each layer for every example of the batch before the next layer. On
MobileNetV2 at 16 images a call (one part of ``batch_split``'s batch of 32), the largest
activations are 16 x 112x112x96 floats (80 MB, the processor's L3 cache is 32 MiB), so each
layer reads and writes memory. The same program as a loop over chunks of two images
(``lax.map`` of the vmapped program over the batch reshaped to ``(chunks, 2, ...)``: one
compiled loop, one call) keeps them in cache, at the price of reading the weights once per
chunk. Measured at batch 32 (``bench/experiments.md``, "Batch chunks"): MobileNetV2 -39% wall
time per image, EfficientNet-Lite0 -30%; by a first version of the same idea (the chunks as
calls from Python), ResNet-18 (47 MB of weights) -3% in chunks of two, the GPT decoder (82 MB)
+23%, the LSTM (small activations, a scan whose products want rows) +10% in chunks of eight.

**The rule**, decided while the batched program is traced (so the trace cache keeps it), from
the program traced once more for one example (``footprint``): ``A``, the largest value that
depends on the inputs, and ``W``, the weights' bytes. A batch of ``n`` runs in chunks of ``k``
examples, ``k`` the largest power of two with ``k * A <= CHUNK_BYTES``, when

- ``n * A > SPILL_BYTES``: the whole call's largest activation would not stay in cache;
- ``W <= WEIGHT_RATIO * k * A``: the weights a chunk reads again are not more than what it
  keeps in cache;
- the program computes no XLA convolution (``conv_general_dilated``): inside a loop's body
  XLA:CPU ran one 6 to 12 times slower (a 3x3 convolution of 64 channels at 56x56, 16 images:
  78 ms as one call, 904 ms in chunks of two; ResNet-18 at batch 32, 12 times slower). Winograd
  convolutions (products), depthwise loops, patch matrices and 1x1 convolutions (products) are
  not XLA convolutions;
- ``k < n``.

The constants are measured on one machine (2 cores of an AMD EPYC, 32 MiB L3): MobileNetV2 and
EfficientNet-Lite0 (A about 5 MB, W 14 MB) run in chunks of two; ResNet-18, ViT, the GPT
decoder, the LSTM and the small models run as one vmapped call, as before.

A batch that ``k`` does not divide is padded with copies of its last example, whose results
are dropped (a copy of a real example raises no run-time check the real one would not), so
every batch size compiles one loop body. ``MLC_BATCH_CHUNK``: ``0`` never chunks; a number
``k`` chunks every batch larger than ``k`` by ``k``, without the rule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jax_core

from mlc._errors import MLCParametersError
from mlc.runtime import batch_split, target, xla_options

CHUNK_VARIABLE = "MLC_BATCH_CHUNK"
CHUNK_BYTES = 10 << 20  # a chunk's largest activation: MobileNetV2's two images (10.0 MB) in, four (20 MB) out
SPILL_BYTES = 32 << 20  # the L3 cache of the machine measured: a call whose largest activation fits it is left whole
WEIGHT_RATIO = 2  # MobileNetV2 and EfficientNet-Lite0: weights 1.4x a chunk's activation (gain); ResNet-18 3.6x, GPT 4.9x (no gain, loss)


def vmapped(fn: Callable) -> Callable:
    """``jax.vmap(fn)`` over the inputs' leading axis (``fn`` computes one example), traced as
    a loop over chunks of the batch where ``chunk_size`` says it pays (on CPU only)."""
    batched = jax.vmap(fn, in_axes=(None, 0))
    footprints: dict = {}  # one example's signature -> its footprint (each part size traces again)

    def measure(params, inputs) -> Footprint:
        key = (jax.tree_util.tree_structure(inputs), _example_signature(inputs), _example_signature(params, batched=False))
        if key not in footprints:
            footprints[key] = footprint(fn, params, inputs)
        return footprints[key]

    @functools.wraps(fn)
    def batched_in_chunks(params, inputs):
        n = batch_split.batch_size(inputs)  # None without a common leading axis: not chunked
        k = None
        if n is not None and target.platform() == "cpu":
            k = chunk_size(n, lambda: measure(params, inputs))
        if k is None:
            return batched(params, inputs)
        return _in_chunks(batched, params, inputs, n, k)

    return batched_in_chunks


@dataclasses.dataclass(frozen=True)
class Footprint:
    """What the rule reads of a program traced for one example (``footprint``)."""

    weights: int  # bytes of the params
    activation: int  # bytes of the largest value that depends on the inputs
    convolutions: bool  # whether it computes an XLA convolution (slow inside a loop)


def chunk_size(batch: int, measure: Callable[[], Footprint]) -> int | None:
    """Examples per chunk for a batch of ``batch`` (None: one vmapped call). ``measure()`` gives
    the program's ``Footprint``, called only where the rule needs it."""
    forced = _forced()
    if forced is not None:
        return forced if 0 < forced < batch else None
    found = measure()
    activation = found.activation
    if activation <= 0 or batch * activation <= SPILL_BYTES or found.convolutions:
        return None
    k = 1 << max(0, int(math.floor(math.log2(max(1, CHUNK_BYTES // activation)))))
    if k >= batch or found.weights > WEIGHT_RATIO * k * activation:
        return None
    return k


def _forced() -> int | None:
    value = os.environ.get(CHUNK_VARIABLE, "").strip()
    if not value:
        return None
    try:
        k = int(value)
    except ValueError:
        k = -1
    if k < 0:
        raise MLCParametersError(f"{CHUNK_VARIABLE}={value!r}: expected a whole number of examples per chunk (0: never chunk)")
    return k


def footprint(fn: Callable, params: Any, inputs: Any) -> Footprint:
    """``fn`` traced for one example of ``inputs`` (a batch): the bytes of ``params``, of the
    largest value of its jaxpr that depends on the inputs (a value inside a nested jaxpr, a
    loop's body, counts by the nested call's outputs), and whether it computes an XLA
    convolution."""
    params_shape = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), params)
    example = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), inputs)
    with target.lowering_for(target.platform(), vmapped_batch=1):
        closed = jax.make_jaxpr(fn)(params_shape, example)
    weights = sum(_nbytes(s) for s in jax.tree_util.tree_leaves(params_shape))
    jaxpr = closed.jaxpr
    depends = set(jaxpr.invars[len(jax.tree_util.tree_leaves(params_shape)) :])
    largest = 0
    for eqn in jaxpr.eqns:
        if any(isinstance(v, jax_core.Var) and v in depends for v in eqn.invars):
            depends.update(eqn.outvars)
            largest = max([largest] + [_nbytes(v.aval) for v in eqn.outvars])
    convolutions = xla_options.contains(jaxpr, lambda eqn: eqn.primitive.name == "conv_general_dilated")
    return Footprint(weights, largest, convolutions)


def _example_signature(tree: Any, batched: bool = True) -> tuple:
    return tuple((np.shape(a)[1:] if batched else np.shape(a), str(a.dtype)) for a in jax.tree_util.tree_leaves(tree))


def _nbytes(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize


def _in_chunks(batched: Callable, params, inputs, n: int, k: int):
    """``batched(params, inputs)`` as ``lax.map`` over chunks of ``k`` examples, the last chunk
    filled with copies of the last example; the kernels inside trace for a batch of ``k``."""
    chunks = -(-n // k)
    padded = chunks * k

    def arrange(a):
        if padded > n:
            a = jnp.concatenate([a, jnp.broadcast_to(a[-1:], (padded - n,) + a.shape[1:])])
        return a.reshape((chunks, k) + a.shape[1:])

    platform = target.platform()

    def one_chunk(chunk):
        with target.lowering_for(platform, vmapped_batch=k):
            return batched(params, chunk)

    out = lax.map(one_chunk, jax.tree_util.tree_map(arrange, inputs))
    return jax.tree_util.tree_map(lambda a: a.reshape((padded,) + a.shape[2:])[:n], out)
