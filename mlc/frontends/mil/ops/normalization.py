"""Normalizations (iOS15/iOS17 normalization.py): NC* layout, channel axis 1."""

import jax
import jax.numpy as jnp

from mlc.frontends.mil.ops._helpers import norm_axes, per_channel, static_float, static_int
from mlc.frontends.mil.registry import op


def _scale_shift(y, gamma, beta, shape):
    if gamma is not None:
        y = y * jnp.reshape(gamma, shape).astype(y.dtype)
    if beta is not None:
        y = y + jnp.reshape(beta, shape).astype(y.dtype)
    return y


@op("batch_norm", static=("epsilon",))
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """gamma * (x - mean) / sqrt(variance + epsilon) + beta, per channel."""
    inv = 1 / jnp.sqrt(per_channel(variance, x) + static_float(epsilon))
    y = (x - per_channel(mean, x)) * inv
    return _scale_shift(y, gamma, beta, (1, -1) + (1,) * (jnp.ndim(x) - 2))


@op("instance_norm", static=("epsilon",))
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    """Normalize each (n, c) slice over the spatial axes 2.. (biased variance)."""
    axes = tuple(range(2, jnp.ndim(x)))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = jnp.mean(jnp.square(centered), axis=axes, keepdims=True)
    y = centered / jnp.sqrt(var + static_float(epsilon))
    return _scale_shift(y, gamma, beta, (1, -1) + (1,) * (jnp.ndim(x) - 2))


@op("l2_norm", static=("epsilon",))
def l2_norm(x, epsilon=1e-6):
    """x / sqrt(sum(x^2) + epsilon) over the last three axes; leading axes are batch."""
    axes = tuple(range(max(jnp.ndim(x) - 3, 0), jnp.ndim(x)))
    return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True) + static_float(epsilon))


@op("layer_norm", static=("axes", "epsilon"))
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """Normalize over ``axes`` (default all); gamma/beta have shape x.shape[sorted(axes)]."""
    rank = jnp.ndim(x)
    axes = tuple(sorted(set(norm_axes(axes, rank)))) if axes is not None else tuple(range(rank))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = jnp.mean(jnp.square(centered), axis=axes, keepdims=True)
    y = centered / jnp.sqrt(var + static_float(epsilon))
    shape = tuple(jnp.shape(x)[i] if i in axes else 1 for i in range(rank))
    return _scale_shift(y, gamma, beta, shape)


@op("local_response_norm", static=("size", "alpha", "beta", "k"))
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha / size * sum of x^2 over a window of ``size`` channels)^beta, like torch.

    The channels are axis -3, the C of a trailing (C, H, W), as in NeuralNetwork's LRN layer:
    a rank-3 input is one (C, H, W) image, not (n, C, D). Apple's expected values in
    coremltools' iOS14 ``TestNormalizationLocalResponseNorm`` smoke test (a (1, 3, 2) input, each
    element normalized by itself alone) pin this down; a rank-4 input has C at axis 1 as usual.
    The window around channel c spans [c - size // 2, c + (size - 1) // 2].
    """
    size = static_int(size)
    axis = jnp.ndim(x) - 3
    sq = jnp.square(x)
    pad = [(0, 0)] * jnp.ndim(x)
    pad[axis] = (size // 2, (size - 1) // 2)
    sq = jnp.pad(sq, pad)
    channels = jnp.shape(x)[axis]
    window = sum(jax.lax.slice_in_dim(sq, i, i + channels, axis=axis) for i in range(size))
    div = static_float(k) + static_float(alpha) / size * window
    return x / jnp.power(div, static_float(beta))
