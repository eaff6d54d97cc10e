"""Padding of an image tensor's height and width, in the layout the convolutions around it use.

A Core ML model converted from TensorFlow pads explicitly before a convolution that TensorFlow
padded "SAME" asymmetrically: a NeuralNetwork ``padding`` layer, or an ML Program ``pad``,
on the (N, C, H, W) activations, then a ``convolution`` with no padding of its own (the
EfficientNet-Lite0 extractor mlc ships has seven). On CPU mlc computes the convolutions
around it channels-last: the 1x1 ones as products over the channels, the depthwise ones as
loops over channels-last slices (``mlc.kernels.depthwise``), XLA's own convolutions in
(N, H, W, C) internally. A pad written on (N, C, H, W) sits between two of those layouts:
XLA materialises it channels-first, and the depthwise loop after it reads every channel
``H * W`` elements apart instead of as vectors.

``spatial_pad`` pads such a tensor as ``transpose -> pad -> transpose back``: the transposes
cancel against the channels-last neighbours' (XLA's algebraic simplifier removes a transpose
of a transpose), and the pad runs on the layout the neighbours hold. The values are those of
``jnp.pad`` on (N, C, H, W), bit for bit. Measured on EfficientNet-Lite0, alternated in one
process (``bench/experiments.md``, "Pads channels-last"): batch 1 16.9 -> 13.6 ms, batch 32
411 -> 290 ms.

Only rank-4 tensors padded on their last two axes, on CPU (where the layouts were measured);
anything else is ``jnp.pad`` as written.
"""

from __future__ import annotations

import jax.numpy as jnp

from mlc.runtime import target


def spatial_pad(x, pairs, **pad_args):
    """``jnp.pad(x, pairs, **pad_args)``, computed channels-last where ``x`` is (N, C, H, W)
    padded on H and W only and the program is traced for a CPU."""
    pairs = [tuple(int(v) for v in p) for p in pairs]
    if jnp.ndim(x) != 4 or len(pairs) != 4 or any(pairs[0] + pairs[1]) or target.platform() != "cpu":
        return jnp.pad(x, pairs, **pad_args)
    last = jnp.transpose(x, (0, 2, 3, 1))
    padded = jnp.pad(last, [(0, 0), pairs[2], pairs[3], (0, 0)], **pad_args)
    return jnp.transpose(padded, (0, 3, 1, 2))
