"""Normalization layers (NeuralNetwork.proto): ``batchnorm``, ``mvn``, ``l2normalize``, ``lrn``,
``layerNormalization``, ``softmax`` and ``softmaxND``.

The legacy layers (all but ``layerNormalization`` and ``softmaxND``) take blobs of rank >= 3 and
name their axes from the end: channel is -3, the spatial axes -2 and -1, and every axis before
the channel is batch, so they read the same in the rank-5 world ``[S, B, C, H, W]`` and the
exact world. Variances are population variances (divided by the element count).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32, per_channel
from mlc.frontends.neuralnetwork.registry import layer

SPATIAL = (-2, -1)
CHW = (-3, -2, -1)


def _rank_at_least_3(ctx, x):
    if jnp.ndim(x) < 3:
        raise ctx.fail(f"input has shape {tuple(jnp.shape(x))}; this layer takes blobs of rank >= 3")


def _moments(x, axes):
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return mean, var


# -- batchnorm -------------------------------------------------------------------------------------
def _batchnorm_weights(p):
    c = int(p.channels)
    return {name: ((c,), 0) for name in ("gamma", "beta", "mean", "variance")} if c else {}


@layer("batchnorm", weights=_batchnorm_weights)
def batchnorm(ctx, p, x):
    """``BatchnormLayerParams``: ``gamma * (x - mean) / sqrt(var + epsilon) + beta`` per channel
    (axis -3). With ``computeMeanVar`` the statistics come from the input, not the weights: over
    each instance's spatial axes (``instanceNormalization``), or over every axis but the channel
    (batch and spatial). ``epsilon`` 0 means 1e-5."""
    x = f32(x)
    _rank_at_least_3(ctx, x)
    c = int(p.channels)
    if x.shape[-3] != c:
        raise ctx.fail(f"input has {x.shape[-3]} channels (axis -3), the layer has channels={c}")
    eps = p.epsilon or 1e-5
    if p.computeMeanVar:
        axes = SPATIAL if p.instanceNormalization else tuple(a for a in range(x.ndim) if a != x.ndim - 3)
        mean, var = _moments(x, axes)
    else:
        mean = per_channel(ctx.weight("mean"), x)
        var = per_channel(ctx.weight("variance"), x)
    gamma = per_channel(ctx.weight("gamma"), x)
    beta = per_channel(ctx.weight("beta"), x)
    return gamma * (x - mean) * jax.lax.rsqrt(var + eps) + beta


# -- mvn ---------------------------------------------------------------------------------------------
@layer("mvn")
def mvn(ctx, p, x):
    """``MeanVarianceNormalizeLayerParams``: subtract the mean over ``(C, H, W)``
    (``acrossChannels``) or over ``(H, W)`` per channel; with ``normalizeVariance`` divide by
    ``sqrt(var + epsilon)`` (``epsilon`` 0 means 1e-6; the MIL ``layer_norm`` op lowers to this
    layer with its own epsilon, which fixes where epsilon goes)."""
    x = f32(x)
    _rank_at_least_3(ctx, x)
    axes = CHW if p.acrossChannels else SPATIAL
    mean, var = _moments(x, axes)
    y = x - mean
    if p.normalizeVariance:
        y = y * jax.lax.rsqrt(var + (p.epsilon or 1e-6))
    return y


# -- l2normalize -------------------------------------------------------------------------------------
@layer("l2normalize")
def l2normalize(ctx, p, x):
    """``L2NormalizeLayerParams``: ``x / sqrt(sum(x^2) + epsilon)``, the sum over the last three
    axes ``(C, H, W)`` of each batch item; ``epsilon`` 0 means 1e-6."""
    x = f32(x)
    _rank_at_least_3(ctx, x)
    ss = jnp.sum(jnp.square(x), axis=CHW, keepdims=True)
    return x * jax.lax.rsqrt(ss + (p.epsilon or 1e-6))


# -- lrn -----------------------------------------------------------------------------------------------
@layer("lrn")
def lrn(ctx, p, x):
    """``LRNLayerParams``: ``x / (k + alpha / localSize * sum_j x_j^2) ^ beta``, the sum over a
    window of ``localSize`` channels (axis -3) around each channel, ``(localSize - 1) // 2``
    before it and the rest after (Caffe's window), clipped at the edges. ``k`` 0 means 1."""
    x = f32(x)
    _rank_at_least_3(ctx, x)
    n = int(p.localSize)
    if n < 1:
        raise ctx.fail(f"localSize must be at least 1, got {n}")
    k = p.k or 1.0
    if k < 0:
        raise ctx.fail(f"k must be positive, got {k}")
    before = (n - 1) // 2
    window = [1] * x.ndim
    window[-3] = n
    pads = [(0, 0)] * x.ndim
    pads[-3] = (before, n - 1 - before)
    ss = jax.lax.reduce_window(jnp.square(x), 0.0, jax.lax.add, tuple(window), (1,) * x.ndim, pads)
    return x / jnp.power(k + (p.alpha / n) * ss, p.beta)


# -- layerNormalization ---------------------------------------------------------------------------------
def _layer_norm_weights(p):
    shape = tuple(int(d) for d in p.normalizedShape)
    return {"gamma": (shape, 0), "beta": (shape, 0)} if shape and all(d > 0 for d in shape) else {}


@layer("layerNormalization", weights=_layer_norm_weights)
def layer_normalization(ctx, p, x):
    """``LayerNormalizationLayerParams``: ``gamma * (x - mean) / sqrt(var + eps) + beta``, the
    statistics over the trailing axes ``normalizedShape`` names; gamma and beta have that shape."""
    x = f32(x)
    shape = tuple(int(d) for d in p.normalizedShape)
    if not shape or len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ctx.fail(f"normalizedShape {list(shape)} is not the trailing shape of the input {tuple(x.shape)}")
    axes = tuple(range(-len(shape), 0))
    mean, var = _moments(x, axes)
    y = (x - mean) * jax.lax.rsqrt(var + p.eps)
    gamma = jnp.reshape(ctx.weight("gamma"), shape) if ctx.has_weight("gamma") else 1.0
    beta = jnp.reshape(ctx.weight("beta"), shape) if ctx.has_weight("beta") else 0.0
    return gamma * y + beta


# -- softmax ---------------------------------------------------------------------------------------------
@layer("softmax")
def softmax(ctx, p, x):
    """``SoftmaxLayerParams``: softmax over the channel axis (-3) of a rank >= 3 blob."""
    x = f32(x)
    _rank_at_least_3(ctx, x)
    return jax.nn.softmax(x, axis=-3)


@layer("softmaxND")
def softmax_nd(ctx, p, x):
    """``SoftmaxNDLayerParams``: softmax over ``axis`` (negative counts from the end)."""
    x = f32(x)
    rank = x.ndim
    axis = int(p.axis)
    if not -rank <= axis < rank:
        raise ctx.fail(f"axis {axis} is out of range for an input of rank {rank}")
    return jax.nn.softmax(x, axis=axis)
