"""``conv``, ``conv_quantized`` and ``conv_transpose`` (iOS15/iOS17 conv.py), 1-D to 3-D, NC* layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlc.kernels import convolution
from mlc.frontends.mil.ops._helpers import static_int, static_ints, static_str
from mlc.frontends.mil.registry import op

_CONV_STATIC = ("strides", "pad_type", "pad", "dilations", "groups")


def _dimension_numbers(nd: int) -> tuple[str, str, str]:
    if not 1 <= nd <= 3:
        raise ValueError(f"convolutions have 1 to 3 spatial dimensions, got {nd}")
    sp = "DHW"[-nd:]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def _per_dim(v, nd: int, default: int) -> tuple[int, ...]:
    return static_ints(v) if v is not None else (default,) * nd


def _custom(pad, nd: int) -> list[tuple[int, int]]:
    p = _per_dim(pad, 2 * nd, 0)
    return [(p[2 * i], p[2 * i + 1]) for i in range(nd)]


def _same_padding(size: int, dk: int, stride: int, lower: bool) -> tuple[int, int]:
    """Output ceil(size / stride); the odd pixel goes after (before for same_lower)."""
    total = max((-(-size // stride) - 1) * stride + dk - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _conv_padding(sizes, kernel, strides, dilations, pad_type: str, pad) -> list[tuple[int, int]]:
    nd = len(kernel)
    if pad_type == "valid":
        return [(0, 0)] * nd
    if pad_type == "custom":
        return _custom(pad, nd)
    if pad_type in ("same", "same_lower"):
        dks = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        return [_same_padding(sizes[i], dks[i], strides[i], pad_type == "same_lower") for i in range(nd)]
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _add_bias(y, bias, nd: int):
    if bias is None:
        return y
    return y + jnp.reshape(jnp.asarray(bias, dtype=y.dtype), (1, -1) + (1,) * nd)


@op("conv", static=_CONV_STATIC)
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """Cross-correlation, weight (C_out, C_in / groups, *K); the output keeps x's dtype."""
    nd = jnp.ndim(x) - 2
    _dimension_numbers(nd)  # 1 to 3 spatial dimensions
    strides, dilations = _per_dim(strides, nd, 1), _per_dim(dilations, nd, 1)
    kernel = tuple(jnp.shape(weight)[2:])
    padding = _conv_padding(jnp.shape(x)[2:], kernel, strides, dilations, static_str(pad_type), pad)
    y = convolution.conv(
        x,
        jnp.asarray(weight, dtype=jnp.result_type(x)),
        strides=strides,
        padding=padding,
        dilations=dilations,
        groups=static_int(groups),
    )
    return _add_bias(y, bias, nd)


@op("conv_quantized", static=_CONV_STATIC + ("quantization_type", "nbits"))
def conv_quantized(
    x,
    weight,
    quant_scale,
    quant_bias,
    quantization_type,
    bias=None,
    nbits=8,
    strides=None,
    pad_type="valid",
    pad=None,
    dilations=None,
    groups=1,
):
    """``conv`` with uint8 weights dequantized as weight * quant_scale + quant_bias ("linear";
    scale and bias scalar or per output channel)."""
    kind = static_str(quantization_type)
    if kind != "linear":
        raise ValueError(f"conv_quantized: quantization_type {kind!r} is not supported (only 'linear')")
    dtype = jnp.result_type(x)
    per_channel = (-1,) + (1,) * (jnp.ndim(weight) - 1)
    scale = jnp.reshape(jnp.asarray(quant_scale, dtype=dtype), per_channel)
    shift = jnp.reshape(jnp.asarray(quant_bias, dtype=dtype), per_channel)
    w = jnp.asarray(weight).astype(dtype) * scale + shift
    return conv(x, w, bias, strides, pad_type, pad, dilations, groups)


def _transpose_crops(sizes, full, strides, pad_type: str, pad) -> list[tuple[int, int]]:
    """How much of the full transposed output to drop before / after, per spatial dimension.
    A negative amount extends the output with zeros (plus bias)."""
    nd = len(sizes)
    if pad_type == "valid":
        return [(0, 0)] * nd
    if pad_type == "custom":
        return _custom(pad, nd)
    if pad_type == "same":
        crops = []
        for i in range(nd):
            total = full[i] - sizes[i] * strides[i]  # output is sizes * strides
            lo = max(total, 0) // 2
            crops.append((lo, total - lo))
        return crops
    raise ValueError(f"unknown pad_type {pad_type!r} for conv_transpose (valid, same or custom)")


@op("conv_transpose", static=_CONV_STATIC + ("output_shape",))
def conv_transpose(
    x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None, dilations=None, groups=1
):
    """Transposed convolution, weight (C_in, C_out / groups, *K). ``output_shape`` keeps the
    padding's start and cuts (or zero-extends) the end to the requested size."""
    nd = jnp.ndim(x) - 2
    dims = _dimension_numbers(nd)
    strides, dilations = _per_dim(strides, nd, 1), _per_dim(dilations, nd, 1)
    groups = static_int(groups)
    c_in, c_out_g = jnp.shape(weight)[:2]
    kernel = tuple(jnp.shape(weight)[2:])
    sizes = jnp.shape(x)[2:]
    # (C_in, C_out/g, K) -> (C_out, C_in/g, K), spatially flipped: a conv over the stride-dilated input.
    w = jnp.reshape(jnp.asarray(weight, dtype=jnp.result_type(x)), (groups, c_in // groups, c_out_g) + kernel)
    w = jnp.swapaxes(w, 1, 2).reshape((groups * c_out_g, c_in // groups) + kernel)
    w = jnp.flip(w, axis=tuple(range(2, 2 + nd)))
    edge = [(k - 1) * d for k, d in zip(kernel, dilations)]
    full = [(sizes[i] - 1) * strides[i] + edge[i] + 1 for i in range(nd)]
    crops = _transpose_crops(sizes, full, strides, static_str(pad_type), pad)
    if output_shape is not None:
        want = static_ints(output_shape)[-nd:]
        crops = [(lo, full[i] - lo - want[i]) for i, (lo, _) in enumerate(crops)]
    y = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,) * nd,
        padding=[(edge[i] - lo, edge[i] - hi) for i, (lo, hi) in enumerate(crops)],
        lhs_dilation=strides,
        rhs_dilation=dilations,
        dimension_numbers=dims,
        feature_group_count=groups,
    )
    return _add_bias(y, bias, nd)
