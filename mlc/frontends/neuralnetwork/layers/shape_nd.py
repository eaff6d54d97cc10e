"""Rank-N shape and tensor layers (specification v4+; ``copy`` is older).

NeuralNetwork.proto messages ``GetShapeLayerParams``, ``LoadConstantNDLayerParams``,
``Fill*LayerParams``, ``BroadcastTo*LayerParams``, ``SqueezeLayerParams``,
``ExpandDimsLayerParams``, ``FlattenTo2DLayerParams``, ``Reshape{Like,Static,Dynamic}LayerParams``,
``RankPreservingReshapeLayerParams``, ``TransposeLayerParams``, ``TileLayerParams``,
``StackLayerParams``, ``ConcatNDLayerParams``, ``SplitNDLayerParams``,
``Slice{Static,Dynamic,BySize}LayerParams``, ``SlidingWindowsLayerParams``, ``Reverse*LayerParams``,
``ConstantPaddingLayerParams``, ``Range{Static,Dynamic}LayerParams``, ``CopyLayerParams``.

These layers keep the rank of their tensors (the exact shape world). Axes follow numpy: negative
values count from the end. Inputs that decide output shapes (a shape vector, reps, pad amounts,
slice bounds, range bounds) are registered ``static``: known at trace time they fold, computed
from the model's inputs they make the network run layer by layer. Layers that only read the
*shape* of an input (``getShape``, ``fillLike``) give numpy arrays, so shape arithmetic after
them folds too. Index-valued tensors arrive as float32 and are rounded to integers here.

Rank 0. Core ML's rank-N runtime has rank-0 blobs, though it never returns one (a rank-0 output
comes back as ``(1,)``, ``mlc.frontends.neuralnetwork.shapes``): a ``squeeze`` or a
``slice{Static,Dynamic}`` that removes every axis gives one, and ``expandDims`` on it adds exactly
``len(axes)`` axes. Neither the proto nor coremltools' validator says so; Apple's own tests
(run on Core ML on macOS in coremltools' CI, outputs compared shape for shape with torch) show
it: ``TestLinspace::test_linspace_dynamic`` with ``steps=1`` (``sliceStatic`` squeezing the one
axis of a (2,) input, then ``expandDims`` axes [0], returns shape (1,), not (1, 1)), and
``TestTensorAssign::test_tensor_assign_dynamic_slice`` with ``mixed_rank`` (``squeeze`` with
``squeezeAll`` of a (1, 1, 1) and a (1, 1) input, ``expandDims`` axes [0], then ``concatND``
with (1,) vectors along axis 0, which rank-2 (1, 1) blobs would not allow), as the same test
did before coremltools 7.1 with (1,) inputs (``squeezeAll`` of a (1,) input; 7.1's
``fuse_squeeze_expand_dims`` pass now removes that pair). It is MIL's rank semantics, which
coremltools' NeuralNetwork backend writes layer for layer.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from mlc.runtime import limits
from mlc.frontends.neuralnetwork.context import ShapeMismatchError
from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer


# -- helpers -------------------------------------------------------------------------------------


def _ints(v) -> list[int]:
    """A (static) float tensor of integer values as a list of Python ints."""
    return [int(i) for i in np.rint(np.asarray(v, np.float64)).reshape(-1)]


def _scalar(ctx, v, what: str) -> float:
    """A (static) scalar input, given as a scalar or a tensor of one element."""
    a = np.asarray(v, np.float64).reshape(-1)
    if a.size != 1:
        raise ctx.fail(f"{what} must be a scalar or a one-element tensor, got shape {tuple(np.shape(v))}")
    return float(a[0])


def _axis(ctx, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` as a non-negative axis, else a parameters error."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ctx.fail(f"{what} {axis} is out of range for a rank-{rank} tensor")
    return axis % rank


def _target_shape(ctx, target, in_shape, copy_zeros: bool) -> tuple[int, ...]:
    """A reshape target: one ``-1`` is inferred; with ``copy_zeros`` (``rankPreservingReshape``) a
    ``0`` keeps the input's dimension at that position, elsewhere it is a literal size."""
    target = [int(d) for d in target]
    if not target:
        raise ctx.fail("the target shape is empty")
    if target.count(-1) > 1:
        raise ctx.fail(f"target shape {target} has more than one -1")
    shape = []
    for i, d in enumerate(target):
        if d == 0 and copy_zeros:
            if i >= len(in_shape):
                raise ctx.fail(f"target shape {target} copies dimension {i} (0), which input shape {tuple(in_shape)} lacks")
            d = int(in_shape[i])
        elif d < -1:
            raise ctx.fail(f"target shape {target} has a negative dimension {d}")
        shape.append(d)
    total = math.prod(int(d) for d in in_shape)
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or total % known:
            raise ctx.fail(f"cannot reshape {tuple(in_shape)} to {target}")
        shape[shape.index(-1)] = total // known
    if math.prod(shape) != total:
        raise ctx.fail(f"cannot reshape {tuple(in_shape)} ({total} elements) to {tuple(shape)}")
    return tuple(shape)


def _reshape(ctx, x, target, copy_zeros: bool = False):
    return jnp.reshape(x, _target_shape(ctx, target, np.shape(x), copy_zeros))


def _broadcast(ctx, x, shape):
    shape = tuple(int(d) for d in shape)
    try:
        out = np.broadcast_shapes(np.shape(x), shape)
    except ValueError:
        out = None
    if out != shape:
        raise ctx.fail(f"cannot broadcast shape {tuple(np.shape(x))} to {shape}")
    return jnp.broadcast_to(x, shape)


def _shape_vector(ctx, v, what: str = "shape") -> tuple[int, ...]:
    shape = tuple(_ints(v))
    if any(d < 0 for d in shape):
        raise ctx.fail(f"{what} {shape} has a negative dimension")
    return shape


# -- shapes and constants ------------------------------------------------------------------------


@layer("getShape")
def get_shape(ctx, p, x):
    """The input's shape as a rank-1 float tensor; known at trace time, so it stays numpy."""
    return np.asarray(np.shape(x), np.float32)


def _load_constant_nd_weights(p):
    return {"data": (tuple(int(d) for d in p.shape), 0)}


@layer("loadConstantND", weights=_load_constant_nd_weights)
def load_constant_nd(ctx, p):
    if not len(p.shape):
        raise ctx.fail("shape is empty")
    w = ctx.weight("data")
    shape = tuple(int(d) for d in p.shape)
    if isinstance(w, np.ndarray):
        return w.astype(np.float32).reshape(shape)
    return jnp.reshape(f32(w), shape)


@layer("fillLike")
def fill_like(ctx, p, x):
    """``value`` in the shape of the input (whose values are not read)."""
    return np.full(np.shape(x), p.value, np.float32)


@layer("fillStatic")
def fill_static(ctx, p):
    return _full(_shape_vector(ctx, p.targetShape, "targetShape"), p.value)


@layer("fillDynamic", static=(0,))
def fill_dynamic(ctx, p, shape):
    return _full(_shape_vector(ctx, shape), p.value)


def _full(shape, value) -> np.ndarray:
    """``np.full`` in float32, its size checked first: the shape comes from the file."""
    limits.check_tensor(shape, 4, "the shape to fill")
    return np.full(shape, value, np.float32)


@layer("rangeStatic")
def range_static(ctx, p):
    return _arange(ctx, p.startValue, p.endValue, p.stepSizeValue)


@layer("rangeDynamic", static=(0, 1, 2))
def range_dynamic(ctx, p, end, start=None, step=None):
    """Inputs, in order: ``end``, then optionally ``start`` and ``step`` (which override the params)."""
    start = p.startValue if start is None else _scalar(ctx, start, "start")
    step = p.stepSizeValue if step is None else _scalar(ctx, step, "step")
    return _arange(ctx, start, _scalar(ctx, end, "end"), step)


def _arange(ctx, start, end, step):
    """``numpy.arange(start, end, step)`` in float32 (values computed from float32 bounds)."""
    start, end, step = (float(np.float32(v)) for v in (start, end, step))
    if step == 0:
        raise ctx.fail("range step is 0")
    n = limits.check_range(start, end, step, 4)
    return (start + step * np.arange(n, dtype=np.float64)).astype(np.float32)


@layer("copy")
def copy(ctx, p, x):
    return x


# -- broadcasting and reshaping ------------------------------------------------------------------


@layer("broadcastToLike")
def broadcast_to_like(ctx, p, x, like):
    return _broadcast(ctx, x, np.shape(like))


@layer("broadcastToStatic")
def broadcast_to_static(ctx, p, x):
    return _broadcast(ctx, x, p.targetShape)


@layer("broadcastToDynamic", static=(1,))
def broadcast_to_dynamic(ctx, p, x, shape):
    return _broadcast(ctx, x, _shape_vector(ctx, shape))


@layer("reshapeLike")
def reshape_like(ctx, p, x, like):
    shape = tuple(np.shape(like))
    if math.prod(shape) != math.prod(np.shape(x)):
        raise ctx.fail(f"cannot reshape {tuple(np.shape(x))} like {shape}: the element counts differ")
    return jnp.reshape(x, shape)


@layer("reshapeStatic")
def reshape_static(ctx, p, x):
    """``targetShape`` may hold one ``-1`` (inferred)."""
    return _reshape(ctx, x, p.targetShape)


@layer("reshapeDynamic", static=(1,))
def reshape_dynamic(ctx, p, x, shape):
    return _reshape(ctx, x, _ints(shape))


@layer("rankPreservingReshape")
def rank_preserving_reshape(ctx, p, x):
    """Like ``reshapeStatic``, but ``targetShape`` has the input's rank and a ``0`` keeps the
    input's dimension there."""
    if len(p.targetShape) != np.ndim(x):
        raise ctx.fail(f"targetShape {list(p.targetShape)} must have the input's rank {np.ndim(x)}")
    return _reshape(ctx, x, p.targetShape, copy_zeros=True)


@layer("flattenTo2D")
def flatten_to_2d(ctx, p, x):
    """``[prod(shape[:axis]), prod(shape[axis:])]``; ``axis`` in ``[-rank, rank]``."""
    shape = np.shape(x)
    rank = len(shape)
    axis = int(p.axis)
    if not -rank <= axis <= rank:
        raise ctx.fail(f"axis {axis} is out of range for a rank-{rank} tensor")
    axis = axis + rank if axis < 0 else axis
    return jnp.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:])))


@layer("squeeze")
def squeeze(ctx, p, x):
    """Drop the unit ``axes`` (all unit axes when ``squeezeAll`` or no axes). Removing every axis
    gives a rank-0 blob (see the module docstring), except that ``axes`` on a rank-1 input keep
    it rank 1 (the proto: "If input rank is 1, output rank is also 1", and
    ``validateSqueezeLayer`` exempts only a rank-1 input from output rank + len(axes) = input rank)."""
    shape = np.shape(x)
    rank = len(shape)
    if p.squeezeAll or not len(p.axes):
        axes = {i for i, d in enumerate(shape) if d == 1}
    else:
        axes = {_axis(ctx, a, rank) for a in p.axes}
        for a in sorted(axes):
            if shape[a] != 1:
                raise ctx.fail(f"cannot squeeze axis {a} of shape {tuple(shape)}: its size is not 1")
        if rank == 1:
            return x
    return jnp.reshape(x, tuple(d for i, d in enumerate(shape) if i not in axes))


@layer("expandDims")
def expand_dims(ctx, p, x):
    """Insert unit dimensions at ``axes``, which index the output (rank + len(axes))."""
    rank = np.ndim(x) + len(p.axes)
    axes = [_axis(ctx, a, rank) for a in p.axes]
    if not axes:
        raise ctx.fail("axes is empty")
    if len(set(axes)) != len(axes):
        raise ctx.fail(f"axes {list(p.axes)} repeat an axis")
    return jnp.expand_dims(x, tuple(axes))


@layer("transpose")
def transpose(ctx, p, x):
    rank = np.ndim(x)
    axes = [_axis(ctx, a, rank) for a in p.axes]
    if sorted(axes) != list(range(rank)):
        raise ctx.fail(f"axes {list(p.axes)} are not a permutation of the {rank} axes of the input")
    return jnp.transpose(x, axes)


# -- repeating, joining, splitting ---------------------------------------------------------------


@layer("tile", static=(1,))
def tile(ctx, p, x, reps=None):
    """``numpy.tile``; ``reps`` from the second input when there is one, else the parameter
    (1s prepended up to the input's rank)."""
    reps = _ints(reps) if reps is not None else [int(r) for r in p.reps]
    if not reps:
        raise ctx.fail("reps is empty")
    if any(r < 1 for r in reps):
        raise ctx.fail(f"reps {reps} must be positive")
    if len(reps) > np.ndim(x):
        raise ctx.fail(f"reps {reps} is longer than the input's rank {np.ndim(x)}")
    return jnp.tile(x, reps)


@layer("stack")
def stack(ctx, p, *xs):
    """``numpy.stack``: ``axis`` indexes the output (rank + 1). The inputs must share one shape,
    no broadcasting; Core ML also checks it at load, at the inputs' default shapes
    (``mlc.frontends.neuralnetwork.verify.verify_default_shapes``)."""
    if len({np.shape(x) for x in xs}) != 1:
        raise ShapeMismatchError(f"{ctx.where}: stack inputs must have one shape, got {[tuple(np.shape(x)) for x in xs]}")
    _axis(ctx, p.axis, np.ndim(xs[0]) + 1)
    return jnp.stack(xs, axis=int(p.axis))


@layer("concatND")
def concat_nd(ctx, p, *xs):
    """Concatenate along ``axis``; with ``interleave`` the inputs (one shape) alternate slice by slice.
    A rank-0 input counts as shape ``(1,)`` (MIL's ``concat`` of scalars, which coremltools writes
    as this layer, gives a vector)."""
    xs = [jnp.reshape(x, (1,)) if np.ndim(x) == 0 else x for x in xs]
    rank = np.ndim(xs[0])
    axis = _axis(ctx, p.axis, rank)
    if p.interleave:
        if len({np.shape(x) for x in xs}) != 1:
            raise ctx.fail("interleaved concatenation needs inputs of one shape")
        shape = list(np.shape(xs[0]))
        shape[axis] *= len(xs)
        return jnp.reshape(jnp.stack(xs, axis=axis + 1), shape)
    for x in xs:
        s = list(np.shape(x))
        if len(s) != rank or s[:axis] + s[axis + 1:] != list(np.shape(xs[0]))[:axis] + list(np.shape(xs[0]))[axis + 1:]:
            raise ctx.fail(f"cannot concatenate shapes {[tuple(np.shape(x)) for x in xs]} along axis {axis}")
    return jnp.concatenate(xs, axis=axis)


@layer("splitND")
def split_nd(ctx, p, x):
    """Split along ``axis`` into ``splitSizes`` pieces, or ``numSplits`` near-equal pieces (as
    ``numpy.array_split``: the first ``size % numSplits`` pieces are one longer; coremltools' tests)."""
    shape = np.shape(x)
    axis = _axis(ctx, p.axis, len(shape))
    dim = shape[axis]
    if len(p.splitSizes):
        sizes = [int(s) for s in p.splitSizes]
        if sum(sizes) != dim:
            raise ctx.fail(f"splitSizes {sizes} do not add up to the axis size {dim}")
    else:
        n = int(p.numSplits) or len(ctx.layer.output)
        if not 1 <= n <= dim:
            raise ctx.fail(f"axis size {dim} cannot be split into {n} parts")
        sizes = [dim // n + (1 if k < dim % n else 0) for k in range(n)]
    if len(sizes) != len(ctx.layer.output):
        raise ctx.fail(f"{len(sizes)} splits but {len(ctx.layer.output)} outputs")
    return tuple(jnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


# -- slicing ---------------------------------------------------------------------------------------


def _per_axis(values, rank: int, default, what: str, ctx):
    """A per-axis slice parameter: empty means ``default`` everywhere; longer than the rank is cut
    (coremltools' builder writes 5 defaults whatever the rank)."""
    values = list(values)
    if not values:
        return [default] * rank
    if len(values) < rank:
        raise ctx.fail(f"{what} has {len(values)} values for a rank-{rank} input")
    return values[:rank]


def _strided_slice(ctx, x, begin, end, strides, begin_masks, end_masks, squeeze_masks):
    """``SliceStaticLayerParams``: per axis ``x[begin:end:stride]`` with Python semantics (negative
    indices count from the end, a masked begin/end is omitted); a squeezed axis takes the element at
    ``begin`` (0 when ``beginMasks`` is set, as MIL's ``slice_by_index`` reference) and is dropped;
    squeezing every axis gives a rank-0 blob (see the module docstring)."""
    shape = np.shape(x)
    rank = len(shape)
    begin = _per_axis(begin, rank, 0, "beginIds", ctx)
    end = _per_axis(end, rank, 0, "endIds", ctx)
    strides = _per_axis(strides, rank, 1, "strides", ctx)
    begin_masks = _per_axis(begin_masks, rank, False, "beginMasks", ctx)
    end_masks = _per_axis(end_masks, rank, False, "endMasks", ctx)
    squeeze_masks = _per_axis(squeeze_masks, rank, False, "squeezeMasks", ctx)
    index, squeezed = [], []
    for i in range(rank):
        b, e, s = int(begin[i]), int(end[i]), int(strides[i])
        if squeeze_masks[i]:
            b = 0 if begin_masks[i] else b
            if not -shape[i] <= b < shape[i]:
                raise ctx.fail(f"squeezed index {b} is out of range for axis {i} of size {shape[i]}")
            index.append(slice(b % shape[i], b % shape[i] + 1))
            squeezed.append(i)
            continue
        if s == 0:
            raise ctx.fail(f"stride of axis {i} is 0")
        index.append(slice(None if begin_masks[i] else b, None if end_masks[i] else e, s))
    out = x[tuple(index)]
    if squeezed:
        out = jnp.reshape(out, tuple(d for i, d in enumerate(np.shape(out)) if i not in squeezed))
    return out


@layer("sliceStatic")
def slice_static(ctx, p, x):
    return _strided_slice(ctx, x, p.beginIds, p.endIds, p.strides, p.beginMasks, p.endMasks, p.squeezeMasks)


@layer("sliceDynamic", static=(1, 2, 3, 4, 5, 6))
def slice_dynamic(ctx, p, x, begin, end=None, strides=None, begin_masks=None, end_masks=None, squeeze_masks=None):
    """As ``sliceStatic``; inputs 2-7 (``beginIds``, then optionally ``endIds``, ``strides``,
    ``beginMasks``, ``endMasks``, ``squeezeMasks``) override the parameters."""

    def pick(value, param, as_bool=False):
        if value is None:
            return list(param)
        v = _ints(value)
        return [bool(i) for i in v] if as_bool else v

    return _strided_slice(
        ctx, x, _ints(begin), pick(end, p.endIds), pick(strides, p.strides), pick(begin_masks, p.beginMasks, True),
        pick(end_masks, p.endMasks, True), pick(squeeze_masks, p.squeezeMasks, True),
    )


@layer("sliceBySize")
def slice_by_size(ctx, p, x, begin):
    """``x[..., begin:begin+size, ...]`` along ``axis``. ``size`` is fixed, so ``begin`` may be
    computed from the inputs (a dynamic slice; a negative begin counts from the end)."""
    shape = np.shape(x)
    axis = _axis(ctx, p.axis, len(shape))
    size = int(p.size)
    if not 1 <= size <= shape[axis]:
        raise ctx.fail(f"size {size} is out of range for axis {axis} of size {shape[axis]}")
    if np.size(begin) != 1:
        raise ctx.fail(f"begin must hold one index, got shape {tuple(np.shape(begin))}")
    if isinstance(begin, np.ndarray) or np.isscalar(begin):
        b = _ints(begin)[0]
        b = b + shape[axis] if b < 0 else b
        if not 0 <= b <= shape[axis] - size:
            raise ctx.fail(f"begin {b} with size {size} is out of range for axis {axis} of size {shape[axis]}")
        return lax.slice_in_dim(x, b, b + size, axis=axis)
    b = jnp.round(jnp.reshape(begin, (-1,))[0]).astype(jnp.int32)
    b = jnp.where(b < 0, b + shape[axis], b)
    return lax.dynamic_slice_in_dim(x, b, size, axis=axis)


@layer("slidingWindows")
def sliding_windows(ctx, p, x):
    """Windows of ``windowSize`` every ``step`` along ``axis``: the axis of size L becomes
    ``(M, windowSize)`` with ``M = (L - windowSize) // step + 1``."""
    shape = np.shape(x)
    axis = _axis(ctx, p.axis, len(shape))
    size, step = int(p.windowSize), int(p.step)
    if size < 1 or step < 1 or size > shape[axis]:
        raise ctx.fail(f"windowSize {size} / step {step} do not fit axis {axis} of size {shape[axis]}")
    m = (shape[axis] - size) // step + 1
    index = np.arange(m)[:, None] * step + np.arange(size)[None, :]
    return jnp.take(x, index, axis=axis)


@layer("reverse")
def reverse(ctx, p, x):
    rank = np.ndim(x)
    if len(p.reverseDim) != rank:
        raise ctx.fail(f"reverseDim has {len(p.reverseDim)} values for a rank-{rank} input")
    axes = tuple(i for i, r in enumerate(p.reverseDim) if r)
    return jnp.flip(x, axes) if axes else x


@layer("reverseSeq")
def reverse_seq(ctx, p, x, lengths):
    """For each batch index b (along ``batchAxis``), reverse the first ``lengths[b]`` elements along
    ``sequenceAxis``; the rest stay. ``lengths`` may be computed from the inputs."""
    shape = np.shape(x)
    rank = len(shape)
    batch = _axis(ctx, p.batchAxis, rank, "batchAxis")
    seq = _axis(ctx, p.sequenceAxis, rank, "sequenceAxis")
    if batch == seq:
        raise ctx.fail("batchAxis and sequenceAxis are the same axis")
    n = math.prod(np.shape(lengths))
    if n != shape[batch]:
        raise ctx.fail(f"{n} sequence lengths for a batch axis of size {shape[batch]}")
    t = shape[seq]
    lens = jnp.clip(jnp.round(jnp.reshape(lengths, (-1,))).astype(jnp.int32), 0, t)
    bshape = [1] * rank
    bshape[batch] = shape[batch]
    tshape = [1] * rank
    tshape[seq] = t
    lens = jnp.reshape(lens, bshape)
    pos = jnp.reshape(jnp.arange(t, dtype=jnp.int32), tshape)
    src = jnp.where(pos < lens, lens - 1 - pos, pos)
    return jnp.take_along_axis(x, jnp.broadcast_to(src, shape), axis=seq)


# -- padding ---------------------------------------------------------------------------------------


@layer("constantPad", static=(1,))
def constant_pad(ctx, p, x, pads=None):
    """Pad with ``value``: ``padAmounts`` (or the second input) holds (before, after) per axis. With
    ``padToGivenOutputSizeMode`` a non-zero amount is the axis' output size instead, padded on
    that side (an axis already as large is left alone)."""
    amounts = _ints(pads) if pads is not None else [int(a) for a in p.padAmounts]
    shape = np.shape(x)
    rank = len(shape)
    if len(amounts) != 2 * rank:
        raise ctx.fail(f"{len(amounts)} pad amounts for a rank-{rank} input (need {2 * rank})")
    if any(a < 0 for a in amounts):
        raise ctx.fail(f"pad amounts {amounts} must not be negative")
    pairs = [(amounts[2 * i], amounts[2 * i + 1]) for i in range(rank)]
    if p.padToGivenOutputSizeMode:
        pairs = [_pad_to_size(ctx, d, b, a) for d, (b, a) in zip(shape, pairs)]
    return jnp.pad(x, pairs, constant_values=jnp.asarray(p.value, jnp.asarray(x).dtype))


def _pad_to_size(ctx, dim: int, before: int, after: int) -> tuple[int, int]:
    if before and after:
        raise ctx.fail("with padToGivenOutputSizeMode only one of an axis' two pad amounts may be non-zero")
    return max(before - dim, 0) if before else 0, max(after - dim, 0) if after else 0
