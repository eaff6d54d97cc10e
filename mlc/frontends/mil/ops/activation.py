"""Activations (iOS15/iOS17 activation.py).

iOS17 lets ``alpha``/``beta`` have another float dtype than ``x``: they are cast to ``x``'s
dtype so the output keeps it.
"""

import math

import jax
import jax.numpy as jnp

from mlc.frontends.mil.ops._helpers import like, per_channel, static_int, static_str
from mlc.frontends.mil.registry import op


@op("relu")
def relu(x):
    return jax.nn.relu(x)


@op("relu6")
def relu6(x):
    return jnp.clip(x, like(0, x), like(6, x))


@op("sigmoid")
def sigmoid(x):
    return jax.nn.sigmoid(x)


@op("silu")
def silu(x):
    return jax.nn.silu(x)


@op("softplus")
def softplus(x):
    return jax.nn.softplus(x)


@op("softsign")
def softsign(x):
    return x / (1 + jnp.abs(x))


@op("clamped_relu", static=("alpha", "beta"))
def clamped_relu(x, alpha, beta):
    """min(beta, x if x >= 0 else alpha * x)."""
    return jnp.minimum(jnp.where(x >= 0, x, like(alpha, x) * x), like(beta, x))


@op("elu", static=("alpha",))
def elu(x, alpha):
    return jnp.where(x > 0, x, like(alpha, x) * jnp.expm1(jnp.minimum(x, 0)))


@op("gelu", static=("mode",))
def gelu(x, mode="EXACT"):
    """EXACT (erf), TANH_APPROXIMATION, or SIGMOID_APPROXIMATION (x * sigmoid(1.702 x)).

    EXACT is the op's formula, ``0.5 * x * (1 + erf(x / sqrt(2)))``: XLA:CPU computes ``erf``
    in half the time of the ``erfc`` that ``jax.nn.gelu`` uses (ViT-Ti/16's 12 GELUs,
    ``bench/experiments.md``, "GELU by erf"), both within 1e-6 of the exact value."""
    mode = static_str(mode)
    if mode == "EXACT":
        return like(0.5, x) * x * (like(1.0, x) + jax.lax.erf(x * like(1 / math.sqrt(2.0), x)))
    if mode == "TANH_APPROXIMATION":
        return jax.nn.gelu(x, approximate=True)
    if mode == "SIGMOID_APPROXIMATION":
        return x * jax.nn.sigmoid(like(1.702, x) * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


@op("leaky_relu", static=("alpha",))
def leaky_relu(x, alpha):
    return jnp.where(x >= 0, x, like(alpha, x) * x)


@op("linear_activation", static=("alpha", "beta"))
def linear_activation(x, alpha, beta):
    return like(alpha, x) * x + like(beta, x)


@op("prelu")
def prelu(x, alpha):
    """x if x >= 0 else alpha[c] * x, with alpha per channel (axis 1)."""
    return jnp.where(x >= 0, x, per_channel(alpha, x) * x)


@op("scaled_tanh", static=("alpha", "beta"))
def scaled_tanh(x, alpha, beta):
    return like(alpha, x) * jnp.tanh(like(beta, x) * x)


@op("sigmoid_hard", static=("alpha", "beta"))
def sigmoid_hard(x, alpha, beta):
    return jnp.clip(like(alpha, x) * x + like(beta, x), like(0, x), like(1, x))


@op("softplus_parametric")
def softplus_parametric(x, alpha, beta):
    """alpha[c] * log(1 + exp(beta[c] * x)), per channel (axis 1), computed without overflow."""
    return per_channel(alpha, x) * jax.nn.softplus(per_channel(beta, x) * x)


@op("thresholded_relu", static=("alpha",))
def thresholded_relu(x, alpha):
    return jnp.where(x >= like(alpha, x), x, like(0, x))


@op("softmax", static=("axis",))
def softmax(x, axis=-1):
    return jax.nn.softmax(x, axis=static_int(axis))
