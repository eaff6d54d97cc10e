"""Pooling (iOS15 pool.py): ``avg_pool``, ``max_pool``, ``l2_pool``, 1-D to 3-D, NC* layout.

Padding never takes part in a max (it is -inf), adds zeros to sums, and counts in an average
unless ``exclude_padding_from_average``. ``ceil_mode`` windows that run past the padded input
(torch's ceil mode) see neither real elements nor padding there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc.frontends.mil.ops._helpers import static_bool, static_ints, static_str
from mlc.kernels.channels_last import spatial_reduce_window
from mlc.frontends.mil.registry import op

_STATIC = ("kernel_sizes", "strides", "pad_type", "pad", "ceil_mode", "exclude_padding_from_average")


def _out_size(size: int, kernel: int, stride: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """Output length as coremltools infers it (torch's rule for ceil_mode)."""
    if not ceil_mode:
        return (size + lo + hi - kernel) // stride + 1
    out = (size + lo + hi - kernel + stride - 1) // stride + 1
    if lo + hi > 0 and (out - 1) * stride >= size + lo:
        out -= 1
    return out


def _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    """Per spatial axis: kernel, stride, (pad before, pad after), output size."""
    nd = jnp.ndim(x) - 2
    kernel = static_ints(kernel_sizes)
    strides = static_ints(strides) if strides is not None else (1,) * nd
    pad_type = static_str(pad_type).lower()
    ceil_mode = static_bool(ceil_mode)
    sizes = jnp.shape(x)[2:]
    if len(kernel) != nd or len(strides) != nd:
        raise ValueError(f"kernel_sizes {kernel} and strides {strides} must have {nd} entries for a rank-{nd + 2} input")
    if pad_type == "valid":
        pads = [(0, 0)] * nd
    elif pad_type == "custom":
        p = static_ints(pad) if pad is not None else (0,) * (2 * nd)
        pads = [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    elif pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s in zip(sizes, kernel, strides):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((big, small) if pad_type == "same_lower" else (small, big))
    else:
        raise ValueError(f"unknown pad_type {pad_type!r}")
    outs = [_out_size(n, k, s, lo, hi, ceil_mode) for n, k, s, (lo, hi) in zip(sizes, kernel, strides, pads)]
    if any(o <= 0 for o in outs):
        raise ValueError(f"pooling a {tuple(sizes)} input with kernel {kernel} gives an empty output")
    return kernel, strides, pads, outs


def _window(x, init, reducer, kernel, strides, pads, outs):
    """reduce_window over the spatial axes; padding (and ceil-mode overhang) holds ``init``."""
    sizes = jnp.shape(x)[2:]
    padding = [(0, 0), (0, 0)]
    for n, k, s, (lo, hi), o in zip(sizes, kernel, strides, pads, outs):
        padding.append((lo, max((o - 1) * s + k - n - lo, hi)))
    init = np.array(init, dtype=jnp.result_type(x))  # concrete, so lax picks the differentiable reduce_window_{sum,max}
    return spatial_reduce_window(x, init, reducer, (1, 1) + tuple(kernel), (1, 1) + tuple(strides), padding)


def _counts(sizes, kernel, strides, pads, outs, exclude_padding: bool) -> np.ndarray:
    """How many elements each window averages: real ones only, or real and declared padding."""
    per_axis = []
    for n, k, s, (lo, hi), o in zip(sizes, kernel, strides, pads, outs):
        start = np.arange(o) * s - lo
        first, last = (0, n) if exclude_padding else (-lo, n + hi)
        per_axis.append(np.minimum(start + k, last) - np.maximum(start, first))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts.astype(np.float32)


@op("avg_pool", static=_STATIC)
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False, ceil_mode=False):
    """Window sums divided by the window's element count (see the module docstring)."""
    kernel, strides, pads, outs = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    total = _window(x, 0, jax.lax.add, kernel, strides, pads, outs)
    counts = _counts(jnp.shape(x)[2:], kernel, strides, pads, outs, static_bool(exclude_padding_from_average))
    return total / counts.astype(jnp.result_type(x))


@op("max_pool", static=_STATIC)
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    kernel, strides, pads, outs = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    return _window(x, -np.inf, jax.lax.max, kernel, strides, pads, outs)


@op("l2_pool", static=_STATIC)
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """sqrt of the sum of squares over each window (padding adds nothing)."""
    kernel, strides, pads, outs = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    return jnp.sqrt(_window(jnp.square(x), 0, jax.lax.add, kernel, strides, pads, outs))
