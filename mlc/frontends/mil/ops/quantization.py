"""Activation quantization (iOS17 quantization_ops.py): ``quantize`` and ``dequantize``.

``scale`` and ``zero_point`` are scalars, or vectors laid along ``axis``.
"""

import jax.numpy as jnp

from mlc.frontends.mil.ops._helpers import mil_dtype, static_int, static_str
from mlc.frontends.mil.registry import op

_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def along_axis(p, rank: int, axis):
    """A scalar, or a vector laid along ``axis`` (static) of a rank-``rank`` tensor."""
    p = jnp.asarray(p)
    if p.ndim == 0:
        return p
    if axis is None:
        raise ValueError("a vector scale or zero_point needs axis")
    axis = static_int(axis) % rank
    return p.reshape(tuple(-1 if i == axis else 1 for i in range(rank)))


@op("quantize", static=("axis", "output_dtype"), since="CoreML7")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):
    """clip(round_half_even(input / scale) + zero_point) to the int8/uint8 range."""
    name = static_str(output_dtype)
    if name not in _RANGES:
        raise ValueError(f"quantize outputs int8 or uint8, not {name!r}")
    rank = jnp.ndim(input)
    q = jnp.round(input / along_axis(scale, rank, axis).astype(input.dtype))
    if zero_point is not None:
        q = q + along_axis(zero_point, rank, axis).astype(q.dtype)
    low, high = _RANGES[name]
    return jnp.clip(q, low, high).astype(mil_dtype(name))


@op("dequantize", static=("axis",), since="CoreML7")
def dequantize(input, scale, zero_point=None, axis=None):
    """scale * (input - zero_point), computed in fp32 and returned in scale's dtype."""
    rank = jnp.ndim(input)
    scale = along_axis(scale, rank, axis)
    x = jnp.asarray(input).astype(jnp.float32)
    if zero_point is not None:
        x = x - along_axis(zero_point, rank, axis).astype(jnp.float32)
    return (x * scale.astype(jnp.float32)).astype(scale.dtype)
