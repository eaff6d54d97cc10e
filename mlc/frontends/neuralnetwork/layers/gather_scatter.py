"""Gather, scatter and index layers (NeuralNetwork.proto ``GatherLayerParams`` ... ``ArgSortLayerParams``).

Indices arrive as float32 tensors (NeuralNetwork tensors are float) and are cast to int32 here.
Negative indices count from the end ("negative indexing is supported"). Out-of-range indices are
undefined in Core ML: gathers fill (NaN) and scatters drop their updates, as mlc's ML Program
lowerings do. Layers that output indices (``topK``, ``argMax``, ``argMin``, ``argSort``,
``whereNonZero``) output them as float32.

Scatter with ``SCATTER_UPDATE`` and repeated indices keeps the update that comes last in
row-major order of ``updates``, as a sequential loop over the proto's pseudo-code would,
deterministically on every device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import DataDependentShapeError
from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer


# -- helpers -------------------------------------------------------------------------------------
def _axis(ctx, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` as a non-negative axis, or a parameters error."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ctx.fail(f"{what} {axis} is out of range for an input of rank {rank}")
    return axis % rank


def _indices(x):
    """A float index tensor as int32 (values are exact integers in valid models)."""
    return jnp.asarray(x).astype(jnp.int32)


def _wrap(i, n):
    """Negative indices count from the end of a dimension of size ``n``."""
    return jnp.where(i < 0, i + n, i)


def _scalar(ctx, value, what: str) -> int:
    """The integer value of a one-element input known at trace time (a shape-deciding input)."""
    v = np.asarray(value).reshape(-1)
    if v.size != 1:
        raise ctx.fail(f"the {what} input must hold one value, it has {v.size}")
    return int(v[0])


def _index_output(i):
    return jnp.asarray(i).astype(jnp.float32)


# -- scatter core --------------------------------------------------------------------------------
SCATTER_MODES = ("UPDATE", "ADD", "SUB", "MUL", "DIV", "MAX", "MIN")  # ScatterMode enum order


def _scatter(ctx, data, index: tuple, updates, mode: int):
    """``data`` with ``updates`` combined in at ``data[index]`` (advanced indexing) by ScatterMode ``mode``.

    Repeated indices accumulate; out-of-range indices are dropped (negatives are wrapped by the caller).
    """
    if not 0 <= int(mode) < len(SCATTER_MODES):
        raise ctx.fail(f"unknown scatter mode {int(mode)}")
    name = SCATTER_MODES[int(mode)]
    data, updates = f32(data), f32(updates)
    at = data.at[index]
    if name == "UPDATE":
        return _scatter_last_wins(data, index, updates)
    if name == "ADD":
        return at.add(updates, mode="drop")
    if name == "SUB":
        return at.add(-updates, mode="drop")
    if name == "MUL":
        return at.multiply(updates, mode="drop")
    if name == "DIV":
        return at.divide(updates, mode="drop")
    if name == "MAX":
        return at.max(updates, mode="drop")
    return at.min(updates, mode="drop")


def _scatter_last_wins(data, index: tuple, updates):
    """Scatter-update where, for a repeated index, the last update (row-major) wins on any device."""
    order = jnp.arange(updates.size, dtype=jnp.int32).reshape(updates.shape)
    winner = jnp.full(data.shape, -1, jnp.int32).at[index].max(order, mode="drop")
    picked = jnp.take(updates.reshape(-1), jnp.maximum(winner, 0))
    return jnp.where(winner >= 0, picked, data)


def _check_rank(ctx, x, least: int, what: str = "input"):
    if jnp.ndim(x) < least:
        raise ctx.fail(f"the {what} must have rank at least {least}, it has rank {jnp.ndim(x)}")


# -- gather / scatter ----------------------------------------------------------------------------
@layer("gather")
def gather(ctx, p, x, indices):
    """``GatherLayerParams``: numpy.take along ``axis``; output rank = (x.rank - 1) + indices.rank."""
    x = f32(x)
    axis = _axis(ctx, p.axis, jnp.ndim(x))
    n = jnp.shape(x)[axis]
    return jnp.take(x, _wrap(_indices(indices), n), axis=axis, mode="fill", fill_value=jnp.nan)


@layer("scatter")
def scatter(ctx, p, data, indices, updates):
    """``ScatterLayerParams``: updates of shape data.shape[:axis] + indices.shape + data.shape[axis+1:]
    combined into ``data`` at ``indices`` along ``axis``."""
    axis = _axis(ctx, p.axis, jnp.ndim(data))
    i = _wrap(_indices(indices), jnp.shape(data)[axis])
    return _scatter(ctx, data, (slice(None),) * axis + (i,), updates, p.mode)


@layer("gatherND")
def gather_nd(ctx, p, x, indices):
    """``GatherNDLayerParams``: out[i..j] = x[indices[i..j, :]]; the last axis of ``indices`` (K) addresses
    the leading K axes of ``x``."""
    x, i = f32(x), _indices(indices)
    k = jnp.shape(i)[-1] if jnp.ndim(i) else 0
    if jnp.ndim(i) < 1 or not 1 <= k <= jnp.ndim(x):
        raise ctx.fail(f"indices of shape {jnp.shape(i)} cannot address an input of rank {jnp.ndim(x)}")
    index = tuple(_wrap(i[..., d], jnp.shape(x)[d]) for d in range(k))
    return x.at[index].get(mode="fill", fill_value=jnp.nan)


@layer("scatterND")
def scatter_nd(ctx, p, data, indices, updates):
    """``ScatterNDLayerParams``: updates[i..j] combined into data[indices[i..j, :]]."""
    i = _indices(indices)
    k = jnp.shape(i)[-1] if jnp.ndim(i) else 0
    if jnp.ndim(i) < 1 or not 1 <= k <= jnp.ndim(data):
        raise ctx.fail(f"indices of shape {jnp.shape(i)} cannot address a container of rank {jnp.ndim(data)}")
    index = tuple(_wrap(i[..., d], jnp.shape(data)[d]) for d in range(k))
    return _scatter(ctx, data, index, updates, p.mode)


@layer("gatherAlongAxis")
def gather_along_axis(ctx, p, x, indices):
    """``GatherAlongAxisLayerParams``: numpy.take_along_axis."""
    x, i = f32(x), _indices(indices)
    if jnp.ndim(i) != jnp.ndim(x):
        raise ctx.fail(f"indices have rank {jnp.ndim(i)}, the data rank {jnp.ndim(x)}; they must match")
    axis = _axis(ctx, p.axis, jnp.ndim(x))
    i = _wrap(i, jnp.shape(x)[axis])
    return jnp.take_along_axis(x, i, axis=axis, mode="fill", fill_value=jnp.nan)


@layer("scatterAlongAxis")
def scatter_along_axis(ctx, p, data, indices, updates):
    """``ScatterAlongAxisLayerParams``: numpy.put_along_axis with ScatterMode accumulation."""
    i = _indices(indices)
    if jnp.ndim(i) != jnp.ndim(data):
        raise ctx.fail(f"indices have rank {jnp.ndim(i)}, the container rank {jnp.ndim(data)}; they must match")
    axis = _axis(ctx, p.axis, jnp.ndim(data))
    grid = list(jnp.indices(jnp.shape(i), sparse=True))
    grid[axis] = _wrap(i, jnp.shape(data)[axis])
    return _scatter(ctx, data, tuple(grid), updates, p.mode)


# -- data-dependent and masks --------------------------------------------------------------------
@layer("whereNonZero", eager=True)
def where_non_zero(ctx, p, x):
    """``WhereNonZeroLayerParams``: the (N, rank) multi-indices of the non-zero elements, row-major, as float.

    The output shape depends on the values, so the layer runs eagerly on concrete arrays."""
    if isinstance(x, jax.core.Tracer):
        raise DataDependentShapeError(f"{ctx.where}: the output shape depends on the input values; Model.predict runs it")
    return np.argwhere(np.asarray(x) != 0).astype(np.float32)


def _band(x, lower: int | None, upper: int | None):
    """``x`` with the inner-most matrices zeroed outside rows-cols <= lower and cols-rows <= upper
    (None: unbounded)."""
    m, n = jnp.shape(x)[-2:]
    rows = jnp.arange(m)[:, None]
    cols = jnp.arange(n)[None, :]
    keep = jnp.ones((m, n), bool)
    if lower is not None:
        keep &= rows - cols <= lower
    if upper is not None:
        keep &= cols - rows <= upper
    return jnp.where(keep, x, jnp.zeros((), x.dtype))


@layer("matrixBandPart")
def matrix_band_part(ctx, p, x):
    """``MatrixBandPartLayerParams``: a negative numLower/numUpper keeps that whole triangle."""
    x = f32(x)
    _check_rank(ctx, x, 2)
    lo, up = int(p.numLower), int(p.numUpper)
    return _band(x, lo if lo >= 0 else None, up if up >= 0 else None)


@layer("lowerTriangular")
def lower_triangular(ctx, p, x):
    """``LowerTriangularLayerParams``: numpy.tril(x, k) over the last two axes."""
    x = f32(x)
    _check_rank(ctx, x, 2)
    return _band(x, None, int(p.k))


@layer("upperTriangular")
def upper_triangular(ctx, p, x):
    """``UpperTriangularLayerParams``: numpy.triu(x, k) over the last two axes."""
    x = f32(x)
    _check_rank(ctx, x, 2)
    return _band(x, -int(p.k), None)


# -- one-hot, top-k, arg* ------------------------------------------------------------------------
@layer("oneHot", static=(1,))
def one_hot(ctx, p, indices, depth=None):
    """``OneHotLayerParams``: a new axis ``axis`` (of the output) of length oneHotVectorSize (or the
    second input's value) holding onValue at the index and offValue elsewhere; an index outside
    [0, size) gives all offValue."""
    size = int(p.oneHotVectorSize) if depth is None else _scalar(ctx, depth, "oneHotVectorSize")
    if size < 1:
        raise ctx.fail(f"oneHotVectorSize must be positive, got {size}")
    i = _indices(indices)
    axis = _axis(ctx, p.axis, jnp.ndim(i) + 1)
    hot = i[..., None] == jnp.arange(size, dtype=jnp.int32)
    out = jnp.where(hot, jnp.float32(p.onValue), jnp.float32(p.offValue))
    return jnp.moveaxis(out, -1, axis)


@layer("topK", static=(1,))
def top_k(ctx, p, x, k=None):
    """``TopKLayerParams``: the K largest (useBottomK: smallest) values along ``axis``, sorted, and
    their indices (float); equal values keep their input order."""
    x = f32(x)
    axis = _axis(ctx, p.axis, jnp.ndim(x))
    n = jnp.shape(x)[axis]
    kk = int(p.K) if k is None else _scalar(ctx, k, "K")
    if not 1 <= kk <= n:
        raise ctx.fail(f"K = {kk} must lie in [1, {n}] (the size of axis {p.axis})")
    moved = jnp.moveaxis(x, axis, -1)
    values, idx = jax.lax.top_k(-moved if p.useBottomK else moved, kk)
    if p.useBottomK:
        values = -values
    return jnp.moveaxis(values, -1, axis), jnp.moveaxis(_index_output(idx), -1, axis)


def _arg(ctx, p, x, fn):
    """``ArgMaxLayerParams``/``ArgMinLayerParams``: first index of the extreme value along ``axis``;
    ``removeDim`` drops the axis unless the input has rank 1."""
    x = f32(x)
    axis = _axis(ctx, p.axis, jnp.ndim(x))
    keep = not p.removeDim or jnp.ndim(x) == 1
    return _index_output(fn(x, axis=axis, keepdims=keep))


@layer("argMax")
def arg_max(ctx, p, x):
    return _arg(ctx, p, x, jnp.argmax)


@layer("argMin")
def arg_min(ctx, p, x):
    return _arg(ctx, p, x, jnp.argmin)


@layer("argSort")
def arg_sort(ctx, p, x):
    """``ArgSortLayerParams``: indices (float) sorting ``x`` along ``axis`` (which must lie in
    [0, rank)), ascending or descending; a stable sort, so equal values keep their input order."""
    x = f32(x)
    rank = jnp.ndim(x)
    if not 0 <= int(p.axis) < rank:
        raise ctx.fail(f"axis {p.axis} must lie in [0, {rank}) (the input rank)")
    key = -x if p.descending else x
    return _index_output(jnp.argsort(key, axis=int(p.axis), stable=True))


@layer("cumSum", static=(1,))
def cum_sum(ctx, p, x, axis_input=None):
    """``CumSumLayerParams``: inclusive (or with excludeFinalSum, exclusive) running sum along ``axis``
    (or the second input's value), from the end when ``reverse``."""
    x = f32(x)
    axis = p.axis if axis_input is None else _scalar(ctx, axis_input, "axis")
    axis = _axis(ctx, axis, jnp.ndim(x))
    if p.reverse:
        x = jnp.flip(x, axis)
    out = jnp.cumsum(x, axis=axis)
    if p.excludeFinalSum:
        zero = jnp.zeros_like(jax.lax.slice_in_dim(out, 0, 1, axis=axis))
        out = jnp.concatenate([zero, jax.lax.slice_in_dim(out, 0, jnp.shape(out)[axis] - 1, axis=axis)], axis=axis)
    if p.reverse:
        out = jnp.flip(out, axis)
    return out
