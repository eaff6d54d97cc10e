"""``conv`` and ``conv_transpose`` (iOS15/iOS17 conv.py), 1-D to 3-D, NC* layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlc.mil.ops._helpers import static_int, static_ints, static_str
from mlc.mil.registry import op

_CONV_STATIC = ("strides", "pad_type", "pad", "dilations", "groups", "output_shape")


def _spec(nd: int) -> tuple[str, str, str]:
    sp = "DHW"[-nd:] if nd <= 3 else None
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def _same_padding(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    """TensorFlow-style SAME: output ceil(size / stride); the odd pixel goes after (before for same_lower)."""
    dk = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + dk - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _padding(x_shape, k_shape, strides, dilations, pad_type: str, pad) -> list[tuple[int, int]]:
    nd = len(k_shape)
    if pad_type == "valid":
        return [(0, 0)] * nd
    if pad_type == "custom":
        p = static_ints(pad) if pad is not None else (0,) * (2 * nd)
        return [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    if pad_type in ("same", "same_lower"):
        return [
            _same_padding(x_shape[i], k_shape[i], strides[i], dilations[i], pad_type == "same_lower") for i in range(nd)
        ]
    raise ValueError(f"unknown pad_type {pad_type!r}")


@op("conv", static=_CONV_STATIC[:-1])
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """Cross-correlation, weight (C_out, C_in / groups, *K)."""
    nd = jnp.ndim(x) - 2
    strides = static_ints(strides) if strides is not None else (1,) * nd
    dilations = static_ints(dilations) if dilations is not None else (1,) * nd
    kernel = tuple(jnp.shape(weight)[2:])
    padding = _padding(jnp.shape(x)[2:], kernel, strides, dilations, static_str(pad_type), pad)
    y = jax.lax.conv_general_dilated(
        x,
        weight.astype(jnp.result_type(x)) if hasattr(weight, "astype") else weight,
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilations,
        dimension_numbers=_spec(nd),
        feature_group_count=static_int(groups),
    )
    if bias is not None:
        y = y + jnp.reshape(bias, (1, -1) + (1,) * nd).astype(y.dtype)
    return y


@op("conv_transpose", static=_CONV_STATIC)
def conv_transpose(
    x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None, dilations=None, groups=1
):
    """Transposed convolution, weight (C_in, C_out / groups, *K); output_shape pads the end."""
    nd = jnp.ndim(x) - 2
    strides = static_ints(strides) if strides is not None else (1,) * nd
    dilations = static_ints(dilations) if dilations is not None else (1,) * nd
    groups = static_int(groups)
    pad_type = static_str(pad_type)
    c_in, c_out_g = jnp.shape(weight)[:2]
    kernel = tuple(jnp.shape(weight)[2:])
    in_sizes = jnp.shape(x)[2:]
    # (C_in, C_out/g, K) -> (C_out, C_in/g, K), spatially flipped: a conv over the dilated input.
    w = jnp.reshape(weight, (groups, c_in // groups, c_out_g) + kernel)
    w = jnp.swapaxes(w, 1, 2).reshape((groups * c_out_g, c_in // groups) + kernel)
    w = jnp.flip(w, axis=tuple(range(2, 2 + nd)))
    full = [(in_sizes[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
    if pad_type == "custom":
        p = static_ints(pad) if pad is not None else (0,) * (2 * nd)
        crops = [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    elif pad_type == "same":
        crops = []
        for i in range(nd):
            total = max(full[i] - in_sizes[i] * strides[i], 0)
            crops.append((total // 2, total - total // 2))
    elif pad_type == "valid":
        crops = [(0, 0)] * nd
    else:
        raise ValueError(f"unknown pad_type {pad_type!r}")
    if output_shape is not None:
        want = static_ints(output_shape)[2:]
        crops = [(lo, full[i] - lo - want[i]) for i, (lo, _) in enumerate(crops)]
    padding = [
        ((kernel[i] - 1) * dilations[i] - lo, (kernel[i] - 1) * dilations[i] - hi) for i, (lo, hi) in enumerate(crops)
    ]
    y = jax.lax.conv_general_dilated(
        x,
        w.astype(jnp.result_type(x)),
        window_strides=(1,) * nd,
        padding=padding,
        lhs_dilation=strides,
        rhs_dilation=dilations,
        dimension_numbers=_spec(nd),
        feature_group_count=groups,
    )
    if bias is not None:
        y = y + jnp.reshape(bias, (1, -1) + (1,) * nd).astype(y.dtype)
    return y
