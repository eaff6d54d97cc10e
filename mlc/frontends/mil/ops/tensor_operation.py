"""Tensor operations (iOS15/iOS16/iOS17 tensor_operation.py) and ``select`` (control_flow.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mlc.runtime import limits
from mlc.kernels import nms
from mlc.kernels.channels_last import spatial_pad
from mlc.runtime import dtypes
from mlc.frontends.mil.ops._helpers import mil_dtype, norm_axes, static_bool, static_int, static_ints, static_str
from mlc.frontends.mil.registry import InvalidProgram, op


def _value_dtype(value) -> np.dtype:
    """The dtype a static fill value (``fill``, ``one_hot``...) is computed in."""
    return dtypes.compute_array_dtype(np.asarray(value).dtype)


def _axis(axis, rank: int) -> int:
    return norm_axes(axis, rank)[0]


@op("band_part", static=("lower", "upper"))
def band_part(x, lower=-1, upper=-1):
    """Keep (m - n) <= lower and (n - m) <= upper in the last two axes; a negative bound keeps all."""
    lower, upper = static_int(lower), static_int(upper)
    m, n = jnp.shape(x)[-2:]
    diff = np.arange(m)[:, None] - np.arange(n)[None, :]
    keep = ((lower < 0) | (diff <= lower)) & ((upper < 0) | (-diff <= upper))
    return jnp.where(keep, x, jnp.zeros((), jnp.result_type(x)))


@op("cumsum", static=("axis", "exclusive", "reverse"))
def cumsum(x, axis=0, exclusive=False, reverse=False):
    """Exclusive shifts the inclusive sum by one (zeros first, or last when reversed)."""
    x = jnp.asarray(x)
    axis = _axis(axis, x.ndim)
    reverse = static_bool(reverse)
    y = lax.cumsum(x, axis=axis, reverse=reverse)
    if not static_bool(exclusive):
        return y
    n = x.shape[axis]
    zeros = jnp.zeros_like(lax.slice_in_dim(y, 0, 1, axis=axis))
    if reverse:
        return jnp.concatenate([lax.slice_in_dim(y, 1, n, axis=axis), zeros], axis=axis)
    return jnp.concatenate([zeros, lax.slice_in_dim(y, 0, n - 1, axis=axis)], axis=axis)


@op("fill", static=("shape", "value"))
def fill(shape, value=0.0):
    return jnp.full(static_ints(shape), value, dtype=_value_dtype(value))


@op("fill_like", static=("value",))
def fill_like(ref_tensor, value=0.0):
    """Shape of ``ref_tensor``, dtype of ``value``."""
    return jnp.full(jnp.shape(ref_tensor), value, dtype=_value_dtype(value))


@op("non_maximum_suppression", static=("iou_threshold", "score_threshold", "max_boxes", "per_class_suppression"))
def non_maximum_suppression(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class_suppression=False):
    """boxes (n, B, 4), scores (n, B, K); outputs padded to max_boxes (zeros, index -1) plus counts."""
    return nms.non_maximum_suppression(boxes, scores, iou_threshold, score_threshold, static_int(max_boxes),
                                       static_bool(per_class_suppression))


@op("non_maximum_suppression", static=("iou_threshold", "max_boxes", "per_class_suppression"), since="CoreML7")
def non_maximum_suppression_ios17(boxes, scores, iou_threshold, max_boxes, per_class_suppression=False):
    """boxes (n, 4, B), scores (n, K, B), no score threshold nor count; padded with zeros and index -1."""
    b, s, index, _ = nms.non_maximum_suppression(jnp.swapaxes(boxes, 1, 2), jnp.swapaxes(scores, 1, 2), iou_threshold,
                                                 None, static_int(max_boxes), static_bool(per_class_suppression))
    return jnp.swapaxes(b, 1, 2), jnp.swapaxes(s, 1, 2), index


@op("non_zero", eager=True)
def non_zero(x):
    """(N, rank) int32 indices of the non-zero elements; N depends on the data."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError("non_zero's output shape depends on its input's values; it cannot run under jit")
    return np.argwhere(np.asarray(x)).astype(np.int32)


@op("one_hot", static=("one_hot_vector_size", "axis", "on_value", "off_value"))
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    """A new axis of size one_hot_vector_size; out-of-range indices give all off_value."""
    indices = jnp.asarray(indices)
    axis = _axis(axis, indices.ndim + 1)
    depth = static_int(one_hot_vector_size)
    hot = jnp.expand_dims(indices, axis) == lax.broadcasted_iota(indices.dtype, (1,) * axis + (depth,) + (1,) * (indices.ndim - axis), axis)
    dtype = _value_dtype(on_value)
    return jnp.where(hot, jnp.asarray(on_value, dtype), jnp.asarray(off_value, dtype))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


@op("pad", static=("pad", "mode", "constant_val"))
def pad(x, pad, mode="constant", constant_val=0.0):
    """``pad`` holds (before, after) pairs for the last len(pad) / 2 axes."""
    mode = static_str(mode)
    if mode not in _PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}")
    amounts = static_ints(pad)
    pairs = [(0, 0)] * (jnp.ndim(x) - len(amounts) // 2) + list(zip(amounts[0::2], amounts[1::2]))
    if mode == "constant":
        return spatial_pad(x, pairs, constant_values=jnp.asarray(constant_val, jnp.result_type(x)))
    if mode == "reflect" and any(max(p) >= d for p, d in zip(pairs, jnp.shape(x)) if any(p)):
        # coremltools: reflect pads are smaller than the axis (jnp.pad would reflect again and
        # again, a Python loop per repetition: a pad of 2**31 on an axis of 1 never ended)
        raise ValueError(f"reflect pad {amounts} is not smaller than the padded axes of x {jnp.shape(x)}")
    return spatial_pad(x, pairs, mode=_PAD_MODES[mode])


@op("range_1d", static=("end", "start", "step"))
def range_1d(end, start, step):
    """numpy arange; start/end/step computed from input values make the model run op by op."""
    start, end, step = (np.asarray(v) for v in (start, end, step))
    if step != 0:
        limits.check_range(float(start), float(end), float(step), 4)
    return np.arange(start, end, step, dtype=dtypes.compute_array_dtype(start.dtype))


@op("tile", static=("reps",))
def tile(x, reps):
    return jnp.tile(x, static_ints(reps))


@op("argsort", static=("axis", "ascending"))
def argsort(x, axis=-1, ascending=False):
    """Stable: ties keep their input order (descending by default)."""
    return jnp.argsort(x, axis=static_int(axis), descending=not static_bool(ascending), stable=True).astype(jnp.int32)


@op("topk", static=("k", "axis", "ascending", "sort", "return_indices", "output_indices_dtype"))
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """k = -1 (iOS17) takes the whole axis; results are always sorted, ties by lower index."""
    x = jnp.asarray(x)
    axis = _axis(axis, x.ndim)
    k = static_int(k)
    k = x.shape[axis] if k < 0 else k
    moved = jnp.moveaxis(x, axis, -1)
    if static_bool(ascending):
        index = jnp.argsort(moved, axis=-1, stable=True)[..., :k]
        values = jnp.take_along_axis(moved, index, axis=-1)
    else:
        values, index = lax.top_k(moved, k)
    values = jnp.moveaxis(values, -1, axis)
    if not static_bool(return_indices):
        return values
    return values, jnp.moveaxis(index, -1, axis).astype(mil_dtype(output_indices_dtype))


@op("flatten2d", static=("axis",))
def flatten2d(x, axis=1):
    """(prod(shape[:axis]), prod(shape[axis:])); a negative axis counts from rank."""
    shape = jnp.shape(x)
    axis = static_int(axis)
    axis = axis + len(shape) if axis < 0 else axis
    return jnp.reshape(x, (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))


@op("shape")
def shape(x):
    """Always static (int32 numpy), even for a traced ``x``, so shape arithmetic folds."""
    return np.array(jnp.shape(x), np.int32)


@op("concat", static=("axis", "interleave"), variadic=("values",))
def concat(values, axis, interleave=False):
    """Scalars concatenate to a vector; interleave alternates the inputs' slices along axis."""
    values = [jnp.asarray(v) for v in values]
    if values[0].ndim == 0:
        return jnp.stack(values)
    axis = _axis(axis, values[0].ndim)
    if not static_bool(interleave):
        return jnp.concatenate(values, axis=axis)
    stacked = jnp.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@op("split", static=("num_splits", "split_sizes", "axis"))
def split(x, num_splits=None, split_sizes=None, axis=0):
    """Even ``num_splits`` pieces, or ``split_sizes``; one piece is returned as is."""
    x = jnp.asarray(x)
    axis = _axis(axis, x.ndim)
    if split_sizes is not None:
        sizes = static_ints(split_sizes)
    elif num_splits is not None:
        n = static_int(num_splits)
        if x.shape[axis] % n:
            raise ValueError(f"num_splits {n} does not divide axis {axis} of size {x.shape[axis]}")
        sizes = (x.shape[axis] // n,) * n
    else:
        raise ValueError("split needs num_splits or split_sizes")
    if sum(sizes) != x.shape[axis]:
        raise ValueError(f"split_sizes {sizes} do not add up to axis {axis} of size {x.shape[axis]}")
    if len(sizes) == 1:
        return x
    return tuple(jnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


@op("stack", static=("axis",), variadic=("values",))
def stack(values, axis):
    """The values must all have the same shape: Core ML refuses others (no broadcasting), even
    where the sizes differ only at the flexible inputs' default shapes (``verify_default_shapes``)."""
    shapes = [tuple(jnp.shape(v)) for v in values]
    if len(set(shapes)) > 1:
        raise InvalidProgram(f"stack's values must all have the same shape, got {', '.join(map(str, shapes))}")
    return jnp.stack(values, axis=static_int(axis))


@op("identity")
def identity(x):
    return x


@op("select")
def select(cond, a, b):
    """``where(cond, a, b)`` with broadcasting."""
    return jnp.where(cond, a, b)
