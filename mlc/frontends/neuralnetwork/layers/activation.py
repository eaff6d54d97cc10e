"""``activation`` (NeuralNetwork.proto ``ActivationParams``): one lowering per nonlinearity.

PReLU and parametric softplus take ``alpha``/``beta`` of length C or 1, broadcast along the
channel axis (-3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32, per_channel
from mlc.frontends.neuralnetwork.registry import layer


def _linear(p, x, ctx):
    return p.alpha * x + p.beta


def _prelu(p, x, ctx):
    alpha = per_channel(ctx.weight("PReLU.alpha"), x)
    return jnp.where(x >= 0, x, alpha * x)


def _parametric_softplus(p, x, ctx):
    alpha = per_channel(ctx.weight("parametricSoftplus.alpha"), x)
    beta = per_channel(ctx.weight("parametricSoftplus.beta"), x)
    return alpha * jax.nn.softplus(beta * x)


NONLINEARITIES = {
    "linear": _linear,
    "ReLU": lambda p, x, ctx: jax.nn.relu(x),
    "leakyReLU": lambda p, x, ctx: jnp.where(x >= 0, x, p.alpha * x),
    "thresholdedReLU": lambda p, x, ctx: jnp.where(x >= p.alpha, x, 0.0),
    "PReLU": _prelu,
    "tanh": lambda p, x, ctx: jnp.tanh(x),
    "scaledTanh": lambda p, x, ctx: p.alpha * jnp.tanh(p.beta * x),
    "sigmoid": lambda p, x, ctx: jax.nn.sigmoid(x),
    "sigmoidHard": lambda p, x, ctx: jnp.clip(p.alpha * x + p.beta, 0.0, 1.0),
    "ELU": lambda p, x, ctx: jnp.where(x >= 0, x, p.alpha * jnp.expm1(x)),
    "softsign": lambda p, x, ctx: x / (1 + jnp.abs(x)),
    "softplus": lambda p, x, ctx: jax.nn.softplus(x),
    "parametricSoftplus": _parametric_softplus,
}


@layer("activation")
def activation(ctx, p, x):
    kind = p.WhichOneof("NonlinearityType")
    if kind not in NONLINEARITIES:
        raise ctx.fail(f"unknown nonlinearity {kind!r}")
    return NONLINEARITIES[kind](getattr(p, kind), f32(x), ctx)
