"""Elementwise functions of one input (NeuralNetwork.proto): ``unary`` (``UnaryFunctionLayerParams``),
``clip``, the rounding layers, ``exp2``, the trigonometric and hyperbolic layers, ``erf``, ``gelu``,
``clampedReLU``. Each keeps the input's shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer

# -- unary (UnaryFunctionLayerParams) ---------------------------------------------------------


def _epsilon(p) -> float:
    """``UnaryFunctionLayerParams.epsilon``: 1e-6 when not set or 0."""
    return p.epsilon if p.epsilon != 0 else 1e-6


UNARY_FUNCTIONS = {
    "SQRT": lambda x, p: jnp.sqrt(x),
    "RSQRT": lambda x, p: jax.lax.rsqrt(x + _epsilon(p)),
    "INVERSE": lambda x, p: 1.0 / (x + _epsilon(p)),
    "POWER": lambda x, p: jnp.power(x, jnp.float32(p.alpha)),
    "EXP": lambda x, p: jnp.exp(x),
    # The proto writes f(x) = log x, but Core ML adds epsilon as it does for RSQRT/INVERSE:
    # coremltools lowers MIL ``log(x, epsilon)`` to this layer and expects log(x + epsilon)
    # (iOS14/test_elementwise_unary.py::test_builder_to_backend_stress_with_epsilon), and its
    # builder sets epsilon=1e-45 for plain logs so that the 1e-6 default does not apply.
    "LOG": lambda x, p: jnp.log(x + _epsilon(p)),
    "ABS": lambda x, p: jnp.abs(x),
    "THRESHOLD": lambda x, p: jnp.maximum(x, jnp.float32(p.alpha)),
}


@layer("unary")
def unary(ctx, p, x):
    """``f(scale * x + shift)``; ``scale`` is 1 when not set or 0, ``shift`` 0 when not set."""
    name = type(p).Operation.Name(p.type) if p.type in type(p).Operation.values() else None
    if name not in UNARY_FUNCTIONS:
        raise ctx.fail(f"unknown unary function type {p.type}")
    x = f32(x)
    scale = p.scale if p.scale != 0 else 1.0
    if scale != 1.0:
        x = x * jnp.float32(scale)
    if p.shift != 0:
        x = x + jnp.float32(p.shift)
    return UNARY_FUNCTIONS[name](x, p)


# -- clip, rounding ---------------------------------------------------------------------------


@layer("clip")
def clip(ctx, p, x):
    """``min(max(x, minVal), maxVal)`` (``ClipLayerParams``)."""
    if p.minVal > p.maxVal:
        raise ctx.fail(f"minVal ({p.minVal}) is greater than maxVal ({p.maxVal})")
    return jnp.minimum(jnp.maximum(f32(x), jnp.float32(p.minVal)), jnp.float32(p.maxVal))


def _simple(name: str, fn) -> None:
    def lowering(ctx, p, x):
        return fn(f32(x))

    lowering.__name__ = name
    layer(name)(lowering)


_SIMPLE = {
    "ceil": jnp.ceil,
    "floor": jnp.floor,
    "sign": jnp.sign,
    "round": jnp.round,  # half to even, as numpy's around (test_round_cpu, MIL round)
    "exp2": jnp.exp2,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "tan": jnp.tan,
    "asin": jnp.arcsin,
    "acos": jnp.arccos,
    "atan": jnp.arctan,
    "sinh": jnp.sinh,
    "cosh": jnp.cosh,
    "tanh": jnp.tanh,
    "asinh": jnp.arcsinh,
    "acosh": jnp.arccosh,
    "atanh": jnp.arctanh,
    "erf": jax.scipy.special.erf,
}

for _name, _fn in _SIMPLE.items():
    _simple(_name, _fn)


# -- gelu, clampedReLU ------------------------------------------------------------------------


def _gelu_exact(x):
    return 0.5 * x * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _gelu_sigmoid(x):
    return x * jax.nn.sigmoid(1.702 * x)


GELU_MODES = {"EXACT": _gelu_exact, "TANH_APPROXIMATION": _gelu_tanh, "SIGMOID_APPROXIMATION": _gelu_sigmoid}


@layer("gelu")
def gelu(ctx, p, x):
    """``GeluLayerParams``: EXACT (erf), TANH_APPROXIMATION, SIGMOID_APPROXIMATION (x * sigmoid(1.702 x))."""
    modes = type(p).GeluMode
    name = modes.Name(p.mode) if p.mode in modes.values() else None
    if name not in GELU_MODES:
        raise ctx.fail(f"unknown gelu mode {p.mode}")
    return GELU_MODES[name](f32(x))


@layer("clampedReLU")
def clamped_relu(ctx, p, x):
    """``ClampedReLULayerParams``: ``min(beta, x)`` for x >= 0, ``min(beta, alpha * x)`` for x < 0."""
    x = f32(x)
    return jnp.minimum(jnp.float32(p.beta), jnp.where(x >= 0, x, jnp.float32(p.alpha) * x))
