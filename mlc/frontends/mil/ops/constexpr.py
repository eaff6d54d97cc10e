"""Compressed weights: the ``constexpr_*`` ops (iOS16 constexpr_ops.py, iOS18 compression.py).

Their data (indices, LUTs, masks, scales) are params of their own small dtypes, so each op
decompresses inside the jitted function and the dense weight is never stored. iOS16 packs LUT
indices and sparse masks into uint8 bytes, least significant bit first; from iOS18 on they are
sub-byte tensors the blob reader already unpacked to one value per element. The iOS18 sparse ops
``constexpr_lut_to_sparse`` / ``constexpr_sparse_blockwise_shift_scale`` return ``(mask,
nonzero_data)``, to be densified by ``constexpr_sparse_to_dense``.

Each op's work is one jitted function taking its static arguments as Python values: a model run
op by op compiles it once per op rather than once per jax.numpy call, and inside a jitted
program it is simply inlined. The ops never fold at trace time (``fold=False``), even when their
data are inline values rather than params: folding would compile each helper on its own, once
per shape (seconds for the sparse ones), where tracing adds it to the one program being compiled.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import DataDependentShapeError
from mlc.runtime import dtypes
from mlc.frontends.mil.ops._helpers import mil_dtype, static_int, static_ints
from mlc.frontends.mil.ops.quantization import along_axis
from mlc.frontends.mil.registry import op

_jit = functools.partial(jax.jit, static_argnums=(-1,))  # the last argument is static


def _static_shape(shape) -> tuple[int, ...]:
    """An iOS16 ``shape`` attribute as ints; under jit it is a traced param, so ask predict to run op by op."""
    if isinstance(shape, jax.core.Tracer):
        raise DataDependentShapeError(
            "the 'shape' attribute of an iOS16 constexpr op reached the op as a traced param; it must be static"
        )
    return static_ints(shape)


def _out_dtype(v) -> np.dtype:
    """The dtype ``v`` is computed in (fp16 -> fp32 under that policy)."""
    return dtypes.compute_array_dtype(jnp.result_type(v))


def _optional_axis(axis) -> int | None:
    return None if axis is None else static_int(axis)


def _unpack_bits(packed, nbits: int, count: int):
    """``count`` ``nbits``-wide unsigned ints packed LSB first in uint8 bytes, as int32."""
    bits = (jnp.asarray(packed, jnp.uint8)[:, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1
    bits = bits.reshape(-1)[: count * nbits].reshape(count, nbits).astype(jnp.int32)
    return jnp.sum(bits << jnp.arange(nbits, dtype=jnp.int32), axis=1)


def _blocks(p, shape):
    """``p`` repeated along each axis so that each entry covers its block of ``shape``."""
    if jnp.ndim(p) != len(shape):
        raise ValueError(f"a parameter of shape {jnp.shape(p)} does not have the rank of data of shape {tuple(shape)}")
    for axis, (n, size) in enumerate(zip(jnp.shape(p), shape)):
        if n != size:
            if n == 0 or size % n:
                raise ValueError(f"a parameter of shape {jnp.shape(p)} does not tile data of shape {tuple(shape)}")
            p = jnp.repeat(p, size // n, axis=axis)
    return p


def _sparse_to_dense(nonzero_data, mask):
    """Scatter ``nonzero_data`` (row-major) to where ``mask`` is set; zeros elsewhere."""
    set_ = mask != 0
    if jnp.size(nonzero_data) == 0:
        return jnp.zeros(jnp.shape(mask), jnp.result_type(nonzero_data))
    where = jnp.clip(jnp.cumsum(set_.reshape(-1)) - 1, 0, jnp.size(nonzero_data) - 1)
    values = jnp.take(jnp.reshape(nonzero_data, -1), where).reshape(jnp.shape(mask))
    return jnp.where(set_, values, jnp.zeros((), values.dtype))


def _gather_set(dense, mask, count: int, where=None):
    """The ``count`` entries of ``dense`` where ``mask`` is set, in row-major order.

    ``where`` gives those positions when the mask was known before tracing (``set_positions``):
    a constant gather then, rather than a nonzero search compiled into the program.
    """
    if where is None:
        (where,) = jnp.nonzero(jnp.reshape(mask, -1), size=count)
    return jnp.take(jnp.reshape(dense, -1), where)


def set_positions(mask, repeat: int = 1, axis: int | None = None):
    """Row-major positions of the set entries of a static ``mask`` (repeated ``repeat`` times along
    ``axis``); None for a traced mask."""
    if not isinstance(mask, np.ndarray):
        return None
    if repeat > 1:
        mask = np.repeat(mask, repeat, axis=axis % mask.ndim)
    return np.flatnonzero(mask).astype(np.int32)


def _lut_to_dense(indices, lut, vector_axis: int | None):
    """Each index picks a LUT entry (a vector of VECTOR_SIZE along ``vector_axis``) from its group's LUT."""
    shape, rank = jnp.shape(indices), jnp.ndim(indices)
    groups, (palettes, vector) = jnp.shape(lut)[:-2], jnp.shape(lut)[-2:]
    if len(groups) != rank or any(g == 0 or s % g for s, g in zip(shape, groups)):
        raise ValueError(f"a LUT of shape {jnp.shape(lut)} does not fit indices of shape {shape}")
    group = jnp.zeros(shape, jnp.int32)
    for axis, (s, g) in enumerate(zip(shape, groups)):
        group = group * g + jax.lax.broadcasted_iota(jnp.int32, shape, axis) // (s // g)
    flat = group * palettes + indices.astype(jnp.int32)
    values = jnp.take(jnp.reshape(lut, (-1, vector)), flat, axis=0)  # shape + (vector,)
    if vector == 1:
        return values.reshape(shape)
    if vector_axis is None:
        raise ValueError("a vector LUT (VECTOR_SIZE > 1) needs vector_axis")
    axis = vector_axis % rank
    values = jnp.moveaxis(values, -1, axis + 1)
    return values.reshape(shape[:axis] + (shape[axis] * vector,) + shape[axis + 1 :])


def _shift_scale(data, scale, offset):
    """scale * (data - offset), with scale/offset repeated over their blocks; in scale's dtype."""
    dtype = _out_dtype(scale)
    shape = jnp.shape(data)
    data = data.astype(dtype)
    if offset is not None:
        data = data - _blocks(offset.astype(dtype), shape)
    return _blocks(scale.astype(dtype), shape) * data


_sparse_to_dense_jit = jax.jit(_sparse_to_dense)
_lut_to_dense_jit = _jit(_lut_to_dense)
_shift_scale_jit = jax.jit(_shift_scale)

# -- iOS16 ---------------------------------------------------------------------------------


@_jit
def _affine_dequantize(quantized_data, zero_point, scale, axis: int):
    rank = jnp.ndim(quantized_data)
    data = quantized_data.astype(jnp.float32) - along_axis(zero_point, rank, axis).astype(jnp.float32)
    return (data * along_axis(scale, rank, axis).astype(jnp.float32)).astype(_out_dtype(scale))


@op("constexpr_affine_dequantize", static=("axis",), since="CoreML6", fold=False)
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """scale * (quantized_data - zero_point), computed in fp32; scale/zero_point scalars or vectors along ``axis``."""
    return _affine_dequantize(quantized_data, zero_point, scale, static_int(axis))


@op("constexpr_cast", static=("output_dtype",), since="CoreML6", fold=False)
def constexpr_cast(source_val, output_dtype):
    return jnp.asarray(source_val).astype(mil_dtype(output_dtype))


@_jit
def _lut_to_dense_ios16(indices, lut, shape: tuple[int, ...]):
    size = jnp.size(lut)
    if size not in (2, 4, 16, 64, 256):
        raise ValueError(f"an iOS16 LUT has 2, 4, 16, 64 or 256 entries, not {size}")
    nbits, count = size.bit_length() - 1, int(np.prod(shape, dtype=np.int64))
    if jnp.size(indices) * 8 < count * nbits:
        raise ValueError(f"{jnp.size(indices)} index bytes cannot hold {count} {nbits}-bit indices")
    return jnp.take(jnp.reshape(lut, -1), _unpack_bits(indices, nbits, count)).reshape(shape)


@op("constexpr_lut_to_dense", static=("shape",), since="CoreML6", fold=False)
def constexpr_lut_to_dense(indices, lut, shape):
    """``indices`` are log2(lut.size)-bit values packed LSB first in uint8 bytes."""
    return _lut_to_dense_ios16(indices, lut, _static_shape(shape))


@_jit
def _sparse_to_dense_ios16(nonzero_data, mask, shape: tuple[int, ...]):
    count = int(np.prod(shape, dtype=np.int64))
    if jnp.size(mask) * 8 < count:
        raise ValueError(f"{jnp.size(mask)} mask bytes cannot hold {count} bits")
    return _sparse_to_dense(nonzero_data, _unpack_bits(mask, 1, count).reshape(shape))


@op("constexpr_sparse_to_dense", static=("shape",), since="CoreML6", fold=False)
def constexpr_sparse_to_dense(nonzero_data, mask, shape):
    """``mask`` holds one bit per output element, packed LSB first in uint8 bytes."""
    return _sparse_to_dense_ios16(nonzero_data, mask, _static_shape(shape))


# -- iOS18 ---------------------------------------------------------------------------------


@op("constexpr_blockwise_shift_scale", since="CoreML8", fold=False)
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """scale * (data - offset); scale/offset have data's rank and each entry covers a block."""
    return _shift_scale_jit(data, scale, offset)


@op("constexpr_lut_to_dense", static=("vector_axis",), since="CoreML8", fold=False)
def constexpr_lut_to_dense_ios18(indices, lut, vector_axis=None):
    """lut is (groups..., NUM_PALETTES, VECTOR_SIZE): per-grouped-channel and vector palettization."""
    return _lut_to_dense_jit(indices, lut, _optional_axis(vector_axis))


@op("constexpr_sparse_to_dense", since="CoreML8", fold=False)
def constexpr_sparse_to_dense_ios18(nonzero_data, mask):
    """``mask`` (uint1) has the output's shape."""
    return _sparse_to_dense_jit(nonzero_data, mask)


@_jit
def _lut_to_sparse(indices_mask, indices_nonzero_data, lut, where, vector_axis: int | None):
    dense = _lut_to_dense(_sparse_to_dense(indices_nonzero_data, indices_mask), lut, vector_axis)
    vector = jnp.shape(lut)[-1]
    mask = indices_mask if vector == 1 else jnp.repeat(indices_mask, vector, axis=vector_axis % jnp.ndim(indices_mask))
    return mask, _gather_set(dense, mask, jnp.size(indices_nonzero_data) * vector, where)


@op("constexpr_lut_to_sparse", static=("vector_axis",), since="CoreML8", fold=False)
def constexpr_lut_to_sparse(indices_mask, indices_nonzero_data, lut, vector_axis=None):
    """(mask repeated VECTOR_SIZE times along vector_axis, the looked-up nonzero values in row-major order)."""
    axis = _optional_axis(vector_axis)
    where = set_positions(indices_mask, jnp.shape(lut)[-1], axis)
    return _lut_to_sparse(indices_mask, indices_nonzero_data, lut, where, axis)


@jax.jit
def _sparse_shift_scale(data_mask, nonzero_data, scale, offset, where):
    dense = _shift_scale(_sparse_to_dense(nonzero_data, data_mask), scale, offset)
    return data_mask, _gather_set(dense, data_mask, jnp.size(nonzero_data), where)


@op("constexpr_sparse_blockwise_shift_scale", since="CoreML8", fold=False)
def constexpr_sparse_blockwise_shift_scale(data_mask, nonzero_data, scale, offset=None):
    """(data_mask, scale * (nonzero_data - offset)), each value scaled as at its dense position."""
    return _sparse_shift_scale(data_mask, nonzero_data, scale, offset, set_positions(data_mask))
