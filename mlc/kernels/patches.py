"""A convolution as one matrix product over its patches (im2col), for XLA:CPU: few input
channels, or a strided 3x3 convolution with a small output.

The first convolution of an image network reads the image's 3 channels (ResNet's 7x7 stem,
MobileNet's and EfficientNet's 3x3 stride-2 stem, a small classifier's first layer). XLA:CPU's
convolution kernels, and YNNPACK's, are slow on so few input channels: the tiny CNN of
``scripts/bench.py`` spends 0.32 ms of CPU time on its first 3x3 convolution (3 -> 16 channels,
32x32) and 0.09 ms computed as below; MobileNetV2's stem at 224x224 1.78 ms against 1.39 ms
(``bench/experiments.md``, "Few input channels"). ResNet's strided 3x3 layers (64 to 512
channels, 28x28 to 7x7 out) lose less to the patch matrix than XLA's convolution loses on their
few output pixels ("Small outputs").

Computed with ``lax`` primitives only:

- the padded input's strided slices, one per kernel position and input channel, stacked
  channels-first: the patch matrix ``(N, KH * KW * C_in, H', W')``, each slice written as whole
  rows (stacked channels-last, every row interleaves ``C_in`` values per kernel position: the
  tiny CNN's batch of 32 -18%, MobileNetV2's batch 1 -6%); with more than
  ``MAX_INPUT_CHANNELS`` channels, channels-last ``(N, H', W', KH * KW * C_in)``: one slice per
  kernel position, each pixel's channels a contiguous run;
- one ``dot_general`` with the kernel laid out ``(KH * KW * C_in, C_out)``: a weight-only
  reshape that ``mlc.runtime.hoist`` computes once per set of weights.

The patch matrix is ``KH * KW`` times the input's size, so ``mlc.kernels.convolution`` uses this
only while it stays small (``MAX_PATCH_BYTES``), except where the kernel positions do not
overlap (stride equal to the kernel, a ViT's patch embedding): that patch matrix is the input
itself rearranged by one transpose. The sums are the same products as a direct
convolution's, added in another order (float rounding only).
"""

from __future__ import annotations

import math

import numpy as np
from jax import lax

MAX_INPUT_CHANNELS = 4  # more channels per patch, and XLA's own convolution is as fast or faster
MAX_TAPS = 9  # larger kernels (a ViT's 16x16 patch embedding: 256 slices) compile slowly and were not measured to pay
MAX_PATCH_BYTES = 4 << 20  # above, the patch matrix leaves the cache and the product loses (ResNet-18's stem)


def eligible(x, weight, *, groups: int) -> bool:
    """Whether ``mlc.kernels.convolution`` may choose ``conv`` for this convolution: 2-D, one
    group, at most ``MAX_INPUT_CHANNELS`` input channels and ``MAX_TAPS`` kernel positions (the
    patch matrix's size is ``patch_bytes``, for the caller to weigh with the batch)."""
    return _few_channels(x, weight, groups) and math.prod(weight.shape[2:]) <= MAX_TAPS


def tiles_eligible(x, weight, *, groups: int, strides, padding, dilations) -> bool:
    """Whether ``conv`` computes this convolution from non-overlapping tiles (a ViT's patch
    embedding: stride equal to the kernel, no padding, no dilation, few input channels): its
    patch matrix is the input rearranged, no larger, so neither ``MAX_TAPS`` nor the cache bound it."""
    return (
        _few_channels(x, weight, groups)
        and tuple(strides) == tuple(weight.shape[2:])
        and all(lo == 0 and hi == 0 for lo, hi in padding)
        and all(d == 1 for d in dilations)
        and all(size >= k for size, k in zip(x.shape[2:], weight.shape[2:]))
    )


def _few_channels(x, weight, groups: int) -> bool:
    return x.ndim == 4 and groups == 1 and weight.shape[1] == x.shape[1] <= MAX_INPUT_CHANNELS


def patch_bytes(batch: int, c_in: int, kernel: tuple[int, ...], out_spatial: tuple[int, ...], itemsize: int) -> int:
    """The size of the patch matrix ``conv`` builds for ``batch`` images."""
    return batch * math.prod(out_spatial) * math.prod(kernel) * c_in * itemsize


def output_size(size: int, low: int, high: int, kernel: int, stride: int, dilation: int) -> int:
    """One spatial dimension of a convolution's output."""
    return (size + low + high - (kernel - 1) * dilation - 1) // stride + 1


def conv(x, weight, *, strides, padding, dilations, precision=None):
    """Cross-correlation of ``x (N, C_in, H, W)`` with ``weight (C_out, C_in, KH, KW)`` (one group)
    as a patch matrix times the kernel. ``padding``: a (low, high) pair per spatial dimension
    (negative crops). Returns ``(N, C_out, H', W')`` in ``x.dtype``."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (dh, dw) = strides, dilations
    (top, bottom), (left, right) = padding
    oh, ow = output_size(h, top, bottom, kh, sh, dh), output_size(w, left, right, kw, sw, dw)
    # (C_out, C_in, KH, KW) -> (KH, KW, C_in, C_out) -> rows in the patch's (tap, channel) order
    kernel = lax.reshape(lax.transpose(lax.convert_element_type(weight, x.dtype), (2, 3, 1, 0)), (kh * kw * c_in, c_out))
    if (sh, sw) == (kh, kw) and (dh, dw) == (1, 1) and (top, bottom, left, right) == (0, 0, 0, 0):
        patch = _tiles(x, kh, kw, oh, ow)  # (N, H', W', K)
    elif c_in > MAX_INPUT_CHANNELS:
        patch = _overlapping_channels_last(x, kh, kw, oh, ow, strides, padding, dilations)  # (N, H', W', K)
    else:
        patch = _overlapping(x, kh, kw, oh, ow, strides, padding, dilations)  # (N, K, H', W')
        y = lax.dot_general(kernel, patch, (((0,), (1,)), ((), ())), precision=precision)  # (C_out, N, H', W')
        return lax.transpose(y, (1, 0, 2, 3))
    y = lax.dot_general(patch, kernel, (((3,), (0,)), ((), ())), precision=precision)
    return lax.transpose(y, (0, 3, 1, 2))


def _tiles(x, kh: int, kw: int, oh: int, ow: int):
    """The patch matrix of a convolution whose stride is its kernel: the input (cropped to
    whole tiles, as the convolution drops the rest) rearranged, one transpose."""
    n, c_in = x.shape[:2]
    x = lax.slice(x, (0, 0, 0, 0), (n, c_in, oh * kh, ow * kw))
    tiles = lax.reshape(x, (n, c_in, oh, kh, ow, kw))
    return lax.reshape(lax.transpose(tiles, (0, 2, 4, 3, 5, 1)), (n, oh, ow, kh * kw * c_in))


def _overlapping(x, kh: int, kw: int, oh: int, ow: int, strides, padding, dilations):
    """The patch matrix ``(N, KH * KW * C_in, H', W')`` from the padded input's strided slices,
    one per kernel position and channel: each slice is written as whole rows (``bench/experiments.md``,
    "Few input channels: the patch matrix channels-first")."""
    n, c_in = x.shape[:2]
    (sh, sw), (dh, dw) = strides, dilations
    (top, bottom), (left, right) = padding
    padded = lax.pad(x, np.zeros((), x.dtype), ((0, 0, 0), (0, 0, 0), (top, bottom, 0), (left, right, 0)))
    rows = [
        lax.slice(padded, (0, c, i * dh, j * dw), (n, c + 1, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1), (1, 1, sh, sw))
        for i in range(kh)
        for j in range(kw)
        for c in range(c_in)
    ]
    return rows[0] if len(rows) == 1 else lax.concatenate(rows, 1)


def _overlapping_channels_last(x, kh: int, kw: int, oh: int, ow: int, strides, padding, dilations):
    """The patch matrix ``(N, H', W', KH * KW * C_in)``: the padded channels-last input's
    strided slices, one per kernel position, each a run of ``C_in`` contiguous values per pixel."""
    n, c_in = x.shape[:2]
    (sh, sw), (dh, dw) = strides, dilations
    (top, bottom), (left, right) = padding
    last = lax.transpose(x, (0, 2, 3, 1))
    padded = lax.pad(last, np.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    columns = [
        lax.slice(padded, (0, i * dh, j * dw, 0), (n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, c_in), (1, sh, sw, 1))
        for i in range(kh)
        for j in range(kw)
    ]
    return columns[0] if len(columns) == 1 else lax.concatenate(columns, 3)
