"""Spatial pads and pooling of (N, C, H, W) images, in the layout the convolutions around them use.

On CPU mlc computes convolutions channels-last: the 1x1 ones as products over the channels,
the depthwise ones as loops over channels-last slices (``mlc.kernels.depthwise``), XLA's own
(YNNPACK's) in (N, H, W, C) internally. A pad or a pooling written on (N, C, H, W) between two
of them makes XLA materialise its result channels-first and transpose it back for the next
convolution, and a depthwise loop reading a channels-first input reads each channel's values
``H * W`` apart instead of as vectors. Two places this showed:

- a Core ML model converted from TensorFlow pads explicitly before a convolution that
  TensorFlow padded "SAME" asymmetrically (a NeuralNetwork ``padding`` layer or an ML Program
  ``pad``, then a convolution with no padding of its own): the EfficientNet-Lite0 extractor
  mlc ships has seven, each before a depthwise layer;
- ResNet's stem: convolution, ReLU, then a 3x3 max pool, at 112x112x64 per image.

``spatial_pad`` and ``spatial_reduce_window`` compute such an op as ``transpose -> op on
(N, H, W, C) -> transpose back``: the transposes cancel against the channels-last neighbours'
(XLA's algebraic simplifier removes a transpose of a transpose) and the op runs on the layout
the neighbours hold. The values are the channels-first op's, bit for bit (the same elements
combined in the same order). Measured, alternated in one process (``bench/experiments.md``,
"Pads and pooling channels-last"): EfficientNet-Lite0 batch 1 16.0 -> 12.1 ms, batch 32
348 -> 242 ms; ResNet-18 batch 32 766 -> 736 ms.

Only rank-4 values whose op touches H and W alone, on CPU (where the layouts were measured);
anything else is the op as written.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from mlc.runtime import target

TO_LAST, TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


def _spatial_only(x, per_axis: list, neutral) -> bool:
    """Whether ``x`` is (N, C, H, W), ``per_axis`` leaves N and C alone (``neutral``), and the
    program is traced for a CPU."""
    return jnp.ndim(x) == 4 and len(per_axis) == 4 and per_axis[0] == per_axis[1] == neutral and target.platform() == "cpu"


def _last(values: list) -> list:
    """Per-axis values of (N, C, H, W) in (N, H, W, C) order."""
    return [values[0], values[2], values[3], values[1]]


def spatial_pad(x, pairs, **pad_args):
    """``jnp.pad(x, pairs, **pad_args)``, computed channels-last where ``x`` is (N, C, H, W)
    padded on H and W only and the program is traced for a CPU."""
    pairs = [tuple(int(v) for v in p) for p in pairs]
    if not _spatial_only(x, pairs, (0, 0)):
        return jnp.pad(x, pairs, **pad_args)
    padded = jnp.pad(jnp.transpose(x, TO_LAST), _last(pairs), **pad_args)
    return jnp.transpose(padded, TO_FIRST)


def spatial_reduce_window(x, init, reducer, window, strides, padding):
    """``lax.reduce_window(x, init, reducer, window, strides, padding)``, computed channels-last
    where ``x`` is (N, C, H, W), the windows span H and W only and the program is traced for a CPU."""
    window, strides = [int(v) for v in window], [int(v) for v in strides]
    padding = [tuple(int(v) for v in p) for p in padding]
    if not (_spatial_only(x, window, 1) and _spatial_only(x, strides, 1) and _spatial_only(x, padding, (0, 0))):
        return lax.reduce_window(x, init, reducer, window, strides, padding)
    y = lax.reduce_window(jnp.transpose(x, TO_LAST), init, reducer, _last(window), _last(strides), _last(padding))
    return jnp.transpose(y, TO_FIRST)
