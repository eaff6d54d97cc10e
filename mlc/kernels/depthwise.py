"""Depthwise and pointwise (1x1) convolutions without XLA's convolution, for XLA:CPU.

Both front ends hold Core ML's layout: activations ``(N, C, *S)``, kernels
``(C_out, C_in / groups, *K)``. Two kinds of convolution are common in mobile networks
(MobileNet, EfficientNet) and slow as XLA:CPU's convolution:

- **depthwise** (``groups == C_in``, each output channel reading one input channel): XLA:CPU
  runs ``feature_group_count = C`` about 5 to 50 times slower than the same result written as
  a sum over the kernel taps of shifted, strided slices of the padded input times per-channel
  weights, which XLA computes as one fused elementwise loop. ``conv(x, weight, layout=...)``
  computes that loop in channels-first (``"nchw"``, the program's own layout: no transposes)
  or channels-last (``"nhwc"``) order.
- **pointwise** (1x1 kernel, stride 1, one group): a matrix product over the channels,
  ``(C_out, C_in) x (N, C_in, *S)``, is one ``dot_general`` on the activations as they are
  laid out; XLA's convolution moves them channels-last and back around each call.

Written with ``lax`` primitives only (tracing a model's dozens of them is part of its cold
start). The numbers behind the choice are in ``bench/experiments.md`` ("Depthwise and 1x1
convolutions"); ``mlc.kernels.convolution.algorithm`` decides which convolutions come here.
"""

from __future__ import annotations

import math

import numpy as np
from jax import lax

LAYOUTS = ("nchw", "nhwc")
MAX_TAPS = 64  # larger depthwise kernels (rare) stay one grouped convolution


def eligible(x, weight, *, padding, dilations, groups: int) -> bool:
    """Whether ``conv`` computes this grouped convolution: depthwise (``groups == C_in``, one
    input channel per group, ``C_out`` a multiple of ``C_in``), at most ``MAX_TAPS`` kernel
    positions, a non-empty output."""
    c_in, c_out = x.shape[1], weight.shape[0]
    if not (groups > 1 and groups == c_in and weight.shape[1] == 1 and c_out % c_in == 0):
        return False
    if math.prod(weight.shape[2:]) > MAX_TAPS:
        return False
    reach = [(k - 1) * d for k, d in zip(weight.shape[2:], dilations)]
    return all(size + lo + hi - r >= 1 for size, (lo, hi), r in zip(x.shape[2:], padding, reach))


def conv(x, weight, *, strides, padding, dilations, layout: str = "nchw"):
    """Depthwise cross-correlation of ``x (N, C, *S)`` with ``weight (C * M, 1, *K)``: output
    channel ``o`` reads input channel ``o // M`` (Core ML's grouped layout, ``M`` the channel
    multiplier). ``padding`` is a (low, high) pair per spatial dimension (negative crops).
    Returns ``(N, C * M, *S')``; computed in ``x.dtype``.

    The sum over the kernel taps of a strided slice of the padded input times that tap's
    weights, one value per channel: XLA fuses the pad, the slices, the products and the sum
    into one loop (and the bias and activation that follow)."""
    if layout not in LAYOUTS:
        raise ValueError(f"depthwise layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    n, c = x.shape[:2]
    spatial = x.ndim - 2
    kernel = tuple(weight.shape[2:])
    multiplier = weight.shape[0] // c
    last = layout == "nhwc"
    if last:
        x = lax.transpose(x, (0, *range(2, 2 + spatial), 1))  # (N, *S, C)
    zero = np.zeros((), x.dtype)
    pads = [(0, 0, 0)] + [(int(lo), int(hi), 0) for lo, hi in padding]
    xp = lax.pad(x, zero, pads + [(0, 0, 0)] if last else [(0, 0, 0)] + pads)
    sizes = xp.shape[1 : 1 + spatial] if last else xp.shape[2:]
    out = [(sizes[d] - (kernel[d] - 1) * dilations[d] - 1) // strides[d] + 1 for d in range(spatial)]
    if last:  # channels are the last axis; the multiplier a new one after them
        xp = lax.expand_dims(xp, (xp.ndim,))
        w_shape = (1,) * (spatial + 1) + (c, multiplier)
    else:  # (N, C, 1, *S): the multiplier axis after the channels
        xp = lax.expand_dims(xp, (2,))
        w_shape = (1, c, multiplier) + (1,) * spatial
    taps = lax.reshape(lax.convert_element_type(weight, x.dtype), (c, multiplier, math.prod(kernel)))
    acc = None
    for tap, offsets in enumerate(_taps(kernel)):
        starts = [o * dilations[d] for d, o in enumerate(offsets)]
        limits = [starts[d] + strides[d] * (out[d] - 1) + 1 for d in range(spatial)]
        if last:
            piece = lax.slice(xp, (0, *starts, 0, 0), (n, *limits, c, 1), (1, *strides, 1, 1))
        else:
            piece = lax.slice(xp, (0, 0, 0, *starts), (n, c, 1, *limits), (1, 1, 1, *strides))
        w = lax.reshape(lax.slice_in_dim(taps, tap, tap + 1, axis=2), w_shape)
        term = lax.mul(piece, w)  # size-1 axes broadcast
        acc = term if acc is None else lax.add(acc, term)
    if last:
        acc = lax.reshape(acc, (n, *out, c * multiplier))
        return lax.transpose(acc, (0, spatial + 1, *range(1, spatial + 1)))
    return lax.reshape(acc, (n, c * multiplier, *out))


def pointwise_eligible(x, weight, *, strides, padding, groups: int) -> bool:
    """Whether ``pointwise`` computes this convolution: every kernel dimension 1, stride 1,
    no padding, one group (dilation does not matter for a 1x1 kernel)."""
    return (
        groups == 1
        and x.ndim >= 3
        and all(k == 1 for k in weight.shape[2:])
        and all(s == 1 for s in strides)
        and all(lo == 0 and hi == 0 for lo, hi in padding)
        and weight.shape[1] == x.shape[1]
    )


def pointwise(x, weight, *, precision=None, layout: str = "nchw"):
    """A 1x1 convolution of ``x (N, C_in, *S)`` with ``weight (C_out, C_in, 1, ...)`` as one
    matrix product over the channels. ``"nchw"``: ``(C_out, C_in) x (N, C_in, *S) -> (C_out, N,
    *S)``, then ``(N, C_out, *S)`` (a free reshape at N = 1, the shape Core ML models have);
    ``"nhwc"``: ``(N, *S, C_in) x (C_in, C_out)`` between transposes, which XLA cancels against
    those of a channels-last neighbour."""
    w = lax.reshape(lax.convert_element_type(weight, x.dtype), weight.shape[:2])
    spatial = tuple(range(2, x.ndim))
    if layout == "nhwc":
        last = lax.transpose(x, (0, *spatial, 1))
        y = lax.dot_general(last, lax.transpose(w, (1, 0)), (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
        return lax.transpose(y, (0, x.ndim - 1, *range(1, x.ndim - 1)))
    y = lax.dot_general(w, x, (((1,), (1,)), ((), ())), precision=precision)
    return lax.transpose(y, (1, 0, *spatial))


def _taps(kernel):
    """Every kernel position, in row-major order (the order ``reshape`` flattens the kernel)."""
    positions = [()]
    for k in kernel:
        positions = [p + (i,) for p in positions for i in range(k)]
    return positions
