"""``pooling``, ``pooling3d`` and ``globalPooling3d`` (NeuralNetwork.proto ``PoolingLayerParams``,
``Pooling3DLayerParams``, ``GlobalPooling3DLayerParams``).

Pooling reads the last two (three) axes as the spatial ones; every axis before the channel is
batch, so the rank-5 world's ``[Seq, Batch, C, H, W]`` works unchanged.

* Padding is ``valid`` (explicit border amounts), ``same`` (as for convolution) or
  ``includeLastPixel`` (``ValidCompletePadding``: symmetric padding, the output size rounded up
  so the last window covers the last pixel, less one when that window would start inside the end
  padding). Windows reaching past the padded input (``includeLastPixel``) see nothing there.
* MAX ignores padding (a window's maximum is over its real elements; ``Pooling3DLayerParams``
  says padding is zeros, but coremltools' ``max_pool`` tests expect a window of negative values
  beside the padding to give its negative maximum). AVERAGE divides by the
  number of real elements when ``avgPoolExcludePadding`` (``countExcludePadding`` in 3-D) is set,
  else by the number of real and padding elements of the window. L2 is ``sqrt(sum(x^2))``.
* ``globalPooling`` pools each whole ``H x W`` plane to ``1 x 1``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.layers.conv import CUSTOM_CONV3D, border_amounts, pair, padding3d, positive, same_pads, valid_out
from mlc.frontends.neuralnetwork.registry import layer
from mlc.kernels.channels_last import spatial_reduce_window

MAX, AVERAGE, L2 = 0, 1, 2


def pool_nd(x, mode: int, kernel, strides, pads, outs, exclude_padding: bool):
    """Pool the last ``len(kernel)`` axes of ``x`` to ``outs`` windows.

    ``pads`` are the declared (start, end) paddings; any windows running past the padded input
    see an extension that counts neither as input nor as padding.
    """
    n = len(kernel)
    sizes = x.shape[-n:]
    extra = [max(0, (o - 1) * s + k - (size + lo + hi)) for o, s, k, size, (lo, hi) in zip(outs, strides, kernel, sizes, pads)]
    lead = (1,) * (x.ndim - n)
    window, stride = lead + tuple(kernel), lead + tuple(strides)
    padding = ((0, 0),) * (x.ndim - n) + tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra))
    if mode == MAX:
        y = spatial_reduce_window(x, -jnp.inf, lax.max, window, stride, padding)
    elif mode == L2:
        y = jnp.sqrt(spatial_reduce_window(x * x, 0.0, lax.add, window, stride, padding))
    else:
        sums = spatial_reduce_window(x, 0.0, lax.add, window, stride, padding)
        y = sums / _window_counts(sizes, kernel, strides, pads, extra, exclude_padding)
    return y[(Ellipsis,) + tuple(slice(0, o) for o in outs)]


def _window_counts(sizes, kernel, strides, pads, extra, exclude_padding: bool):
    """How many elements each average window divides by (a static numpy array)."""
    counts = None
    for size, k, s, (lo, hi), e in zip(sizes, kernel, strides, pads, extra):
        inside = np.ones(size, np.float32)
        if exclude_padding:
            mask = np.pad(inside, (lo, hi + e))
        else:
            mask = np.pad(np.ones(size + lo + hi, np.float32), (0, e))
        c = np.convolve(mask, np.ones(k, np.float32), mode="valid")[::s]
        counts = c if counts is None else np.multiply.outer(counts, c)
    return np.maximum(counts, 1.0)


def _check_rank(ctx, x, n: int):
    if x.ndim < n + 1:
        raise ctx.fail(f"pooling needs an input of rank >= {n + 1} [..., C, {', '.join('DHW'[-n:])}], got shape {tuple(x.shape)}")


# -- pooling (2-D) ---------------------------------------------------------------------------------
def _pooling_geometry(ctx, p, in_hw):
    """kernel, strides, (start, end) pads and output size of each spatial axis."""
    if p.globalPooling:
        return tuple(in_hw), (1, 1), [(0, 0), (0, 0)], [1, 1]
    k = pair(ctx, p.kernelSize, (3, 3), "kernelSize")
    s = pair(ctx, p.stride, (1, 1), "stride")
    kind = p.WhichOneof("PoolingPaddingType")
    if kind == "same":
        tl = p.same.asymmetryMode == p.same.TOP_LEFT_HEAVY
        pads = [same_pads(n, kk, st, tl) for n, kk, st in zip(in_hw, k, s)]
        outs = [-(-n // st) for n, st in zip(in_hw, s)]
    elif kind == "includeLastPixel":
        pads, outs = _include_last_pixel(ctx, p.includeLastPixel, in_hw, k, s)
    else:
        pads = border_amounts(ctx, p.valid) if kind == "valid" else [(0, 0), (0, 0)]
        outs = [valid_out(n, kk, st, pd) for n, kk, st, pd in zip(in_hw, k, s, pads)]
    if min(outs) < 1:
        raise ctx.fail(f"kernel {k} does not fit the padded input {tuple(in_hw)}")
    return k, s, pads, outs


def _include_last_pixel(ctx, params, in_hw, k, s):
    """``ValidCompletePadding``: ``out = ceil((in + 2p - k) / stride) + 1``, less one when padding
    is set and ``(out-1)*stride >= in + p``."""
    amounts = [int(v) for v in params.paddingAmounts] or [0, 0]
    if len(amounts) != 2:
        raise ctx.fail(f"includeLastPixel.paddingAmounts must be two values [H, W], got {amounts}")
    outs = []
    for n, kk, st, pad in zip(in_hw, k, s, amounts):
        out = -(-(n + 2 * pad - kk) // st) + 1
        if any(amounts) and (out - 1) * st >= n + pad:
            out -= 1
        outs.append(out)
    return [(a, a) for a in amounts], outs


@layer("pooling")
def pooling(ctx, p, x):
    x = f32(x)
    _check_rank(ctx, x, 2)
    mode = int(p.type)
    if mode not in (MAX, AVERAGE, L2):
        raise ctx.fail(f"unknown pooling type {mode}")
    k, s, pads, outs = _pooling_geometry(ctx, p, x.shape[-2:])
    return pool_nd(x, mode, k, s, pads, outs, bool(p.avgPoolExcludePadding))


# -- pooling3d / globalPooling3d -------------------------------------------------------------------
@layer("pooling3d")
def pooling3d(ctx, p, x):
    x = f32(x)
    _check_rank(ctx, x, 3)
    mode = int(p.type)
    if mode not in (MAX, AVERAGE):
        raise ctx.fail(f"unknown pooling3d type {mode}")
    k = positive(ctx, p, ("kernelDepth", "kernelHeight", "kernelWidth"))
    s = positive(ctx, p, ("strideDepth", "strideHeight", "strideWidth"))
    in_dhw = tuple(x.shape[-3:])
    pads = padding3d(ctx, p, in_dhw, k, s, CUSTOM_CONV3D)
    outs = [valid_out(n, kk, st, pd) for n, kk, st, pd in zip(in_dhw, k, s, pads)]
    if min(outs) < 1:
        raise ctx.fail(f"kernel {k} does not fit the padded input {in_dhw}")
    return pool_nd(x, mode, k, s, pads, outs, bool(p.countExcludePadding))


@layer("globalPooling3d")
def global_pooling3d(ctx, p, x):
    """Max or mean over the last three axes, kept as size-1 axes."""
    x = f32(x)
    _check_rank(ctx, x, 3)
    mode = int(p.type)
    if mode == MAX:
        return jnp.max(x, axis=(-3, -2, -1), keepdims=True)
    if mode == AVERAGE:
        return jnp.mean(x, axis=(-3, -2, -1), keepdims=True)
    raise ctx.fail(f"unknown globalPooling3d type {mode}")

