"""Tensor transformations (iOS15-iOS18 tensor_transformation.py): reshapes, slices, permutations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mlc._errors import DataDependentShapeError
from mlc.frontends.mil.ops._helpers import norm_axes, static_bool, static_int, static_ints
from mlc.frontends.mil.registry import op
from mlc.runtime import limits

_SLICE_STATIC = ("begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask")


# -- reshapes ------------------------------------------------------------------------------


def _fill_minus_one(x, shape: list[int]) -> tuple[int, ...]:
    """Infer a single -1 entry of ``shape`` from the element count of ``x``."""
    if shape.count(-1) > 1:
        raise ValueError(f"reshape shape {shape} has more than one -1")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or jnp.size(x) % known:
            raise ValueError(f"cannot reshape {jnp.shape(x)} to {shape}")
        shape[shape.index(-1)] = jnp.size(x) // known
    return tuple(shape)


@op("reshape", static=("shape",))
def reshape(x, shape):
    """0 copies the same dimension of x (only when len(shape) == rank(x)); one -1 is inferred."""
    shape, x_shape = list(static_ints(shape)), jnp.shape(x)
    if 0 in shape:
        if len(shape) != len(x_shape):
            raise ValueError(f"reshape shape {shape} has a 0 but its length differs from the rank of x {x_shape}")
        shape = [x_shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return jnp.reshape(x, _fill_minus_one(x, shape))


@op("reshape", static=("shape",), since="CoreML7")
def reshape_ios17(x, shape):
    """0 copies x's dimension aligned from the right (1 where x has none); one -1 is inferred."""
    shape, x_shape = list(static_ints(shape)), jnp.shape(x)
    offset = len(x_shape) - len(shape)
    shape = [(x_shape[i + offset] if i + offset >= 0 else 1) if d == 0 else d for i, d in enumerate(shape)]
    return jnp.reshape(x, _fill_minus_one(x, shape))


@op("reshape_like", static=("begins", "ends", "end_masks"), variadic=("ref_tensors", "begins", "ends", "end_masks"))
def reshape_like(x, ref_tensors, begins, ends, end_masks):
    """The output shape concatenates ref_tensors[i].shape[begins[i]:ends[i]] (to the end if end_masks[i])."""
    shape = []
    for ref, begin, end, end_mask in zip(ref_tensors, begins, ends, end_masks, strict=True):
        ref_shape = jnp.shape(ref)
        shape += ref_shape[static_int(begin) :] if static_bool(end_mask) else ref_shape[static_int(begin) : static_int(end)]
    return jnp.reshape(x, tuple(shape))


@op("expand_dims", static=("axes",))
def expand_dims(x, axes):
    """Axes index the output (rank(x) + len(axes)); negative ones count from its end."""
    rank = jnp.ndim(x) + len(static_ints(axes))
    if rank > limits.MAX_RANK:  # before inserting axes one by one (quadratic: 600,000 axes took minutes)
        raise ValueError(f"expand_dims to rank {rank}: no array has more than {limits.MAX_RANK} dimensions")
    new = sorted(norm_axes(axes, rank))
    shape = list(jnp.shape(x))
    for a in new:
        shape.insert(a, 1)
    return jnp.reshape(x, tuple(shape))


@op("squeeze", static=("axes",))
def squeeze(x, axes=None):
    """Removes the listed size-1 axes (all of them if axes is None); listed axes of other sizes stay."""
    shape = jnp.shape(x)
    drop = range(len(shape)) if axes is None else norm_axes(axes, len(shape))
    return jnp.squeeze(x, axis=tuple(sorted({a for a in drop if shape[a] == 1})))


@op("transpose", static=("perm",))
def transpose(x, perm):
    return jnp.transpose(x, norm_axes(perm, jnp.ndim(x)))


@op("reverse", static=("axes",))
def reverse(x, axes=None):
    """Flips the listed axes (all of them if axes is None)."""
    axes = tuple(range(jnp.ndim(x))) if axes is None else norm_axes(axes, jnp.ndim(x))
    return jnp.flip(x, axis=axes)


@op("reverse_sequence", static=("seq_axis", "batch_axis"))
def reverse_sequence(x, lengths, seq_axis=0, batch_axis=0):
    """Along seq_axis, reverses the first lengths[b] elements of each batch_axis slice b."""
    rank = jnp.ndim(x)
    seq, batch = norm_axes(seq_axis, rank)[0], norm_axes(batch_axis, rank)[0]
    if seq == batch:
        raise ValueError(f"reverse_sequence needs different seq_axis and batch_axis, got {seq_axis} and {batch_axis}")
    lengths = jnp.asarray(lengths).astype(jnp.int32).reshape(-1, 1)
    i = jnp.arange(jnp.shape(x)[seq], dtype=jnp.int32)
    index = jnp.where(i < lengths, lengths - 1 - i, i)  # (batch, seq)
    if batch > seq:
        index = index.T
    dims = [1] * rank
    dims[batch], dims[seq] = jnp.shape(x)[batch], jnp.shape(x)[seq]
    index = jnp.broadcast_to(index.reshape(dims), jnp.shape(x))
    return jnp.take_along_axis(x, index, axis=seq)


# -- slicing -------------------------------------------------------------------------------


def _per_axis(v, rank: int, default) -> tuple:
    values = (default,) * rank if v is None else static_ints(v)
    if len(values) != rank:
        raise ValueError(f"slice arguments need one entry per axis of x (rank {rank}), got {len(values)}")
    return values


def _index(shape, begin, end, stride, begin_mask, end_mask, squeeze_mask) -> tuple:
    """slice_by_index's arguments as a numpy index: slices, and ints on squeezed axes.

    A negative begin/end counts from the end and clamps at 0, as coremltools infers the
    output shape: with a negative stride an end below -size stops before element 0, not after it.
    """
    rank = len(shape)
    begin, end, stride = _per_axis(begin, rank, 0), _per_axis(end, rank, 0), _per_axis(stride, rank, 1)
    begin_mask, end_mask, squeeze_mask = (_per_axis(m, rank, 0) for m in (begin_mask, end_mask, squeeze_mask))
    if 0 in stride:
        raise ValueError(f"slice strides must not be 0, got {stride}")
    index = []
    for i, d in enumerate(shape):
        if squeeze_mask[i]:
            index.append(begin[i])
            continue
        b = None if begin_mask[i] else (max(0, begin[i] + d) if begin[i] < 0 else begin[i])
        e = None if end_mask[i] else (max(0, end[i] + d) if end[i] < 0 else end[i])
        index.append(slice(b, e, stride[i]))
    return tuple(index)


@op("slice_by_index", static=_SLICE_STATIC)
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """x[begin:end:stride] per axis (negative indices: see _index); a masked begin/end is open,
    a squeezed axis is indexed at begin and dropped."""
    return jnp.asarray(x)[_index(jnp.shape(x), begin, end, stride, begin_mask, end_mask, squeeze_mask)]


@op("slice_update", static=("stride", "begin_mask", "end_mask", "squeeze_mask"), since="CoreML8")
def slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """x with x[slice] = update, the slice as in slice_by_index. With a begin/end computed at run
    time (a KV cache's write position) the update's shape sizes the slice."""
    x = jnp.asarray(x)
    if not (isinstance(begin, (np.ndarray, np.generic)) and isinstance(end, (np.ndarray, np.generic))):
        return _dynamic_slice_update(x, update, begin, stride, begin_mask, squeeze_mask)
    index = _index(x.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    target = jnp.shape(x[index])
    if math.prod(target) != jnp.size(update):
        raise ValueError(f"slice_update: update of shape {jnp.shape(update)} does not fit the slice of shape {target}")
    return x.at[index].set(jnp.reshape(update, target).astype(x.dtype))


def _dynamic_slice_update(x, update, begin, stride, begin_mask, squeeze_mask):
    """slice_update at a ``begin`` computed at run time: the update's shape gives the count per axis.

    Unit strides become lax.dynamic_update_slice (which clamps so the update fits, as a KV cache
    write wants); other strides scatter to ``start + k * stride``, dropping positions outside x.
    """
    rank = x.ndim
    stride, begin_mask, squeeze_mask = _per_axis(stride, rank, 1), _per_axis(begin_mask, rank, 0), _per_axis(squeeze_mask, rank, 0)
    begin = jnp.asarray(begin, jnp.int32).reshape(-1)
    sizes = list(jnp.shape(update))
    for i in range(rank):
        if squeeze_mask[i]:
            sizes.insert(i, 1)
    if len(sizes) != rank:
        raise ValueError(f"slice_update: update of shape {jnp.shape(update)} does not match x's rank {rank}")
    update = jnp.reshape(update, sizes).astype(x.dtype)
    starts = []
    for i in range(rank):
        if begin_mask[i]:
            starts.append(0 if stride[i] > 0 else x.shape[i] - 1)
        else:
            starts.append(jnp.where(begin[i] < 0, begin[i] + x.shape[i], begin[i]))
    if all(s == 1 for s in stride):
        return lax.dynamic_update_slice(x, update, starts)
    positions = [start + jnp.arange(n) * s for start, n, s in zip(starts, sizes, stride)]
    return x.at[jnp.ix_(*positions)].set(update, mode="drop", wrap_negative_indices=False)


@op("slice_by_size", static=("size",))
def slice_by_size(x, begin, size):
    """x[begin : begin + size] per axis (size -1: to the end). begin may be computed at run time
    (then no -1 in size), and is clamped so that the slice fits, like lax.dynamic_slice."""
    x_shape, size = jnp.shape(x), static_ints(size)
    if len(size) != len(x_shape):
        raise ValueError(f"slice_by_size size {size} must have one entry per axis of x {x_shape}")
    if isinstance(begin, jax.core.Tracer):
        if -1 in size:
            raise DataDependentShapeError(
                "slice_by_size with a size of -1 and a begin computed from the inputs has a data-dependent "
                "output shape; Model.predict runs such a model op by op"
            )
        begin = jnp.asarray(begin).astype(jnp.int32).reshape(-1)
        begin = jnp.where(begin < 0, begin + jnp.asarray(x_shape, jnp.int32), begin)
        return lax.dynamic_slice(x, tuple(begin[i] for i in range(len(size))), size)
    index = []
    for b, s, d in zip(static_ints(begin), size, x_shape):
        b = b + d if b < 0 else b
        index.append(slice(b, None if s == -1 else b + s))
    return jnp.asarray(x)[tuple(index)]


@op("sliding_windows", static=("axis", "size", "stride"))
def sliding_windows(x, axis, size, stride=1):
    """Windows of ``size`` elements every ``stride`` along ``axis``, as a new axis after it."""
    axis = norm_axes(axis, jnp.ndim(x))[0]
    size, stride = static_int(size), static_int(stride)
    count = (jnp.shape(x)[axis] - size) // stride + 1
    index = jnp.arange(count)[:, None] * stride + jnp.arange(size)[None, :]
    return jnp.take(x, index, axis=axis)


# -- depth / space / batch -----------------------------------------------------------------


def _nchw(x, op_name):
    if jnp.ndim(x) != 4:
        raise ValueError(f"{op_name} needs a rank-4 (N, C, H, W) input, got shape {jnp.shape(x)}")
    return jnp.shape(x)


@op("depth_to_space", static=("block_size",))
def depth_to_space(x, block_size):
    """TensorFlow's DepthToSpace (DCR) in NCHW: channel (i * b + j) * C' + c goes to pixel (h*b+i, w*b+j)."""
    n, c, h, w = _nchw(x, "depth_to_space")
    b = static_int(block_size)
    y = jnp.reshape(x, (n, b, b, c // (b * b), h, w)).transpose(0, 3, 4, 1, 5, 2)
    return jnp.reshape(y, (n, c // (b * b), h * b, w * b))


@op("space_to_depth", static=("block_size",))
def space_to_depth(x, block_size):
    """TensorFlow's SpaceToDepth in NCHW, the inverse of depth_to_space."""
    n, c, h, w = _nchw(x, "space_to_depth")
    b = static_int(block_size)
    y = jnp.reshape(x, (n, c, h // b, b, w // b, b)).transpose(0, 3, 5, 1, 2, 4)
    return jnp.reshape(y, (n, c * b * b, h // b, w // b))


@op("pixel_shuffle", static=("upscale_factor",))
def pixel_shuffle(x, upscale_factor):
    """PyTorch's PixelShuffle (CRD): channel c * f^2 + i * f + j goes to pixel (h*f+i, w*f+j)."""
    n, c, h, w = _nchw(x, "pixel_shuffle")
    f = static_int(upscale_factor)
    y = jnp.reshape(x, (n, c // (f * f), f, f, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return jnp.reshape(y, (n, c // (f * f), h * f, w * f))


@op("pixel_unshuffle", static=("downscale_factor",))
def pixel_unshuffle(x, downscale_factor):
    """PyTorch's PixelUnshuffle, the inverse of pixel_shuffle."""
    n, c, h, w = _nchw(x, "pixel_unshuffle")
    f = static_int(downscale_factor)
    y = jnp.reshape(x, (n, c, h // f, f, w // f, f)).transpose(0, 1, 3, 5, 2, 4)
    return jnp.reshape(y, (n, c * f * f, h // f, w // f))


@op("space_to_batch", static=("block_shape", "paddings"))
def space_to_batch(x, block_shape, paddings):
    """TensorFlow's SpaceToBatchND in NCHW: zero-pad H, W, then block offset (i, j) goes to batch (i*bw + j)*N + n."""
    n, c, h, w = _nchw(x, "space_to_batch")
    bh, bw = static_ints(block_shape)
    (top, bottom), (left, right) = static_ints(paddings)[:2], static_ints(paddings)[2:]
    x = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    h, w = (h + top + bottom) // bh, (w + left + right) // bw
    y = jnp.reshape(x, (n, c, h, bh, w, bw)).transpose(3, 5, 0, 1, 2, 4)
    return jnp.reshape(y, (bh * bw * n, c, h, w))


@op("batch_to_space", static=("block_shape", "crops"))
def batch_to_space(x, block_shape, crops):
    """TensorFlow's BatchToSpaceND in NCHW, the inverse of space_to_batch, then crops H, W."""
    nb, c, h, w = _nchw(x, "batch_to_space")
    bh, bw = static_ints(block_shape)
    (top, bottom), (left, right) = static_ints(crops)[:2], static_ints(crops)[2:]
    n = nb // (bh * bw)
    y = jnp.reshape(x, (bh, bw, n, c, h, w)).transpose(2, 3, 4, 0, 5, 1)
    y = jnp.reshape(y, (n, c, h * bh, w * bw))
    return y[:, :, top : h * bh - bottom, left : w * bw - right]
