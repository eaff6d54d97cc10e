"""Random layers (NeuralNetwork.proto ``RandomNormal*``, ``RandomUniform*``, ``RandomBernoulli*``,
``CategoricalDistributionLayerParams``), with ``jax.random``.

Each distribution comes in three forms that differ only in where the output shape comes from:
``*Like`` takes the shape of its input (whose values are ignored), ``*Static`` its
``outputShape`` field, ``*Dynamic`` the values of its rank-1 input (read at trace time: a model
whose shape input is computed from its inputs runs layer by layer).

Seeds follow the MIL random ops (both draw with ``mlc.kernels.sampling``): a seed
>= 0 keys the draw with ``jax.random.key(seed)``, so every call (and every load of the model)
gives the same values; -1 (the builder's default) draws fresh values on every call, also under
jit. Every layer registers ``fold=False``: it is never evaluated at trace time, so a compiled
model draws anew on every call. Outputs are float32, as every NeuralNetwork tensor.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from mlc.kernels.sampling import sample
from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer


# -- shapes and seeds ----------------------------------------------------------------------------
def _seed(ctx, p) -> int:
    seed = int(p.seed)
    if seed < -1:
        raise ctx.fail(f"seed must be >= 0, or -1 for fresh values on every call; got {seed}")
    return seed


def _static_shape(ctx, p) -> tuple[int, ...]:
    """``outputShape`` of a ``*Static`` layer (uint64 in the proto)."""
    shape = tuple(int(d) for d in p.outputShape)
    if not shape:
        raise ctx.fail("outputShape is empty")
    return shape


def _dynamic_shape(ctx, shape) -> tuple[int, ...]:
    """The values of a ``*Dynamic`` layer's rank-1 shape input (floats holding sizes)."""
    values = np.asarray(shape, np.float64).reshape(-1)
    if values.size == 0:
        raise ctx.fail("the shape input is empty")
    if np.any(values < 0) or np.any(values != np.round(values)):
        raise ctx.fail(f"the shape input must hold non-negative integers, got {values.tolist()}")
    return tuple(int(v) for v in values)


# -- the three distributions ---------------------------------------------------------------------
def _normal(ctx, p, shape):
    if p.stdDev < 0:
        raise ctx.fail(f"stdDev must be >= 0, got {p.stdDev}")
    z = sample(jax.random.normal, _seed(ctx, p), shape, jnp.float32)
    return jnp.float32(p.mean) + jnp.float32(p.stdDev) * z


def _uniform(ctx, p, shape):
    """Uniform on [minVal, maxVal); minVal everywhere when the two are equal."""
    if p.maxVal < p.minVal:
        raise ctx.fail(f"maxVal ({p.maxVal}) is below minVal ({p.minVal})")
    return sample(
        jax.random.uniform, _seed(ctx, p), shape, jnp.float32, minval=jnp.float32(p.minVal), maxval=jnp.float32(p.maxVal)
    )


def _bernoulli(ctx, p, shape):
    """1.0 with probability ``prob``, else 0.0."""
    if not 0.0 <= p.prob <= 1.0:
        raise ctx.fail(f"prob must be in [0, 1], got {p.prob}")
    u = sample(jax.random.uniform, _seed(ctx, p), shape, jnp.float32)
    return (u < jnp.float32(p.prob)).astype(jnp.float32)


@layer("randomNormalLike", fold=False)
def random_normal_like(ctx, p, x):
    return _normal(ctx, p, jnp.shape(x))


@layer("randomNormalStatic", fold=False)
def random_normal_static(ctx, p):
    return _normal(ctx, p, _static_shape(ctx, p))


@layer("randomNormalDynamic", static=(0,), fold=False)
def random_normal_dynamic(ctx, p, shape):
    return _normal(ctx, p, _dynamic_shape(ctx, shape))


@layer("randomUniformLike", fold=False)
def random_uniform_like(ctx, p, x):
    return _uniform(ctx, p, jnp.shape(x))


@layer("randomUniformStatic", fold=False)
def random_uniform_static(ctx, p):
    return _uniform(ctx, p, _static_shape(ctx, p))


@layer("randomUniformDynamic", static=(0,), fold=False)
def random_uniform_dynamic(ctx, p, shape):
    return _uniform(ctx, p, _dynamic_shape(ctx, shape))


@layer("randomBernoulliLike", fold=False)
def random_bernoulli_like(ctx, p, x):
    return _bernoulli(ctx, p, jnp.shape(x))


@layer("randomBernoulliStatic", fold=False)
def random_bernoulli_static(ctx, p):
    return _bernoulli(ctx, p, _static_shape(ctx, p))


@layer("randomBernoulliDynamic", static=(0,), fold=False)
def random_bernoulli_dynamic(ctx, p, shape):
    return _bernoulli(ctx, p, _dynamic_shape(ctx, shape))


# -- categorical ---------------------------------------------------------------------------------
def _temperature(ctx, p) -> float:
    """``temperature``; its documented default 1.0 when unset (a proto3 float reads 0)."""
    t = float(p.temperature)
    if t < 0 or math.isnan(t):
        raise ctx.fail(f"temperature must be positive, got {t}")
    return t or 1.0


@layer("categoricalDistribution", fold=False)
def categorical_distribution(ctx, p, x):
    """``numSamples`` draws (with replacement) of a class index along the last axis of x, as
    float32: input (D1, ..., DR) gives (D1, ..., D(R-1), numSamples).

    x holds logits (``isLogits``) or probabilities (then the logits are log(x + eps), eps's
    documented default 1e-10 when unset); the logits are divided by ``temperature``. Sampling is
    Gumbel-max: argmax(logits + Gumbel noise), which draws class k with probability
    softmax(logits)[k].
    """
    n = int(p.numSamples)
    if n <= 0:
        raise ctx.fail(f"numSamples must be positive, got {n}")
    x = f32(x)
    if x.ndim == 0:
        raise ctx.fail("the input must have rank >= 1 (classes on the last axis)")
    logits = x if p.isLogits else jnp.log(x + jnp.float32(p.eps or 1e-10))
    logits = logits / jnp.float32(_temperature(ctx, p))
    gumbel = sample(jax.random.gumbel, _seed(ctx, p), x.shape[:-1] + (n, x.shape[-1]), jnp.float32)
    return jnp.argmax(logits[..., None, :] + gumbel, axis=-1).astype(jnp.float32)

