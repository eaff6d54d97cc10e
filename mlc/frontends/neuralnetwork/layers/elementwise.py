"""Elementwise layers of several inputs (NeuralNetwork.proto).

* Legacy ``add``, ``multiply``, ``average``, ``max``, ``min``: one or more inputs with the
  limited broadcasting the proto lists (``[B, 1, 1, 1]``, ``[B, C, 1, 1]``, ``[B, 1, H, W]``
  against ``[B, C, H, W]``), which is numpy's right-aligned broadcasting; with one input ``add``
  gives ``x + alpha`` and ``multiply`` ``alpha * x``.
* ``scale`` / ``bias``: weights of shape ``[1]``, ``[C]``, ``[1, H, W]`` or ``[C, H, W]`` broadcast
  onto the last three axes.
* Comparisons (one input: compared with ``alpha``) and logical layers give float 0/1; inputs are
  false when equal to 0.
* The ``*Broadcastable`` layers and ``whereBroadcastable``: numpy broadcasting.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer

# -- legacy multi-input layers ----------------------------------------------------------------


def _fold(ctx, inputs, fn):
    if not inputs:
        raise ctx.fail("needs at least one input")
    return functools.reduce(fn, [f32(x) for x in inputs])


@layer("add")
def add(ctx, p, *inputs):
    """``AddLayerParams``: the sum of the inputs; ``x + alpha`` for a single input."""
    if len(inputs) == 1:
        return f32(inputs[0]) + jnp.float32(p.alpha)
    return _fold(ctx, inputs, jnp.add)


@layer("multiply")
def multiply(ctx, p, *inputs):
    """``MultiplyLayerParams``: the product of the inputs; ``alpha * x`` for a single input."""
    if len(inputs) == 1:
        return jnp.float32(p.alpha) * f32(inputs[0])
    return _fold(ctx, inputs, jnp.multiply)


@layer("average")
def average(ctx, p, *inputs):
    return _fold(ctx, inputs, jnp.add) / jnp.float32(len(inputs))


@layer("max")
def maximum(ctx, p, *inputs):
    return _fold(ctx, inputs, jnp.maximum)


@layer("min")
def minimum(ctx, p, *inputs):
    return _fold(ctx, inputs, jnp.minimum)


# -- scale, bias ------------------------------------------------------------------------------


def _declared(shape) -> tuple[int, ...] | None:
    shape = tuple(int(d) for d in shape)
    return shape or None


def _chw(ctx, value, shape, x, what: str):
    """A ``scale``/``bias`` weight of shape ``[1]``, ``[C]``, ``[1, H, W]`` or ``[C, H, W]``,
    ready to broadcast against ``x`` (rank >= 3: the last three axes are C, H, W)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (1, 3):
        raise ctx.fail(f"{what} {list(shape)} must be [1], [C], [1, H, W] or [C, H, W]")
    value = jnp.asarray(value, jnp.float32).reshape(shape)
    if shape == (1,):
        return value[0]
    if jnp.ndim(x) < 3:
        raise ctx.fail(f"input has rank {jnp.ndim(x)}; with {what} {list(shape)} the layer needs rank >= 3")
    chw = tuple(jnp.shape(x)[-3:])
    if len(shape) == 1:
        shape = (shape[0], 1, 1)
    if shape[0] not in (1, chw[0]) or shape[1:] not in ((1, 1), chw[1:]):
        raise ctx.fail(f"{what} {list(shape)} does not match an input whose [C, H, W] is {list(chw)}")
    return value.reshape(shape)


def _scale_weights(p) -> dict:
    out = {}
    if _declared(p.shapeScale):
        out["scale"] = (_declared(p.shapeScale), 0)
    if p.hasBias and _declared(p.shapeBias):
        out["bias"] = (_declared(p.shapeBias), 0)
    return out


@layer("scale", weights=_scale_weights)
def scale(ctx, p, x):
    """``ScaleLayerParams``: ``x * scale (+ bias when hasBias)``, both broadcast over ``[C, H, W]``."""
    x = f32(x)
    y = x * _chw(ctx, ctx.weight("scale"), p.shapeScale, x, "shapeScale")
    if p.hasBias:
        y = y + _chw(ctx, ctx.weight("bias"), p.shapeBias, x, "shapeBias")
    return y


def _bias_weights(p) -> dict:
    return {"bias": (_declared(p.shape), 0)} if _declared(p.shape) else {}


@layer("bias", weights=_bias_weights)
def bias(ctx, p, x):
    """``BiasLayerParams``: ``x + bias`` broadcast over ``[C, H, W]``."""
    x = f32(x)
    return x + _chw(ctx, ctx.weight("bias"), p.shape, x, "shape")


# -- comparisons and logical layers -----------------------------------------------------------


def _as_float(b):
    return jnp.asarray(b, jnp.float32)


def _comparison(name: str, fn) -> None:
    def lowering(ctx, p, *inputs):
        if len(inputs) == 1:
            return _as_float(fn(f32(inputs[0]), jnp.float32(p.alpha)))
        if len(inputs) != 2:
            raise ctx.fail(f"takes 1 or 2 inputs, got {len(inputs)}")
        return _as_float(fn(f32(inputs[0]), f32(inputs[1])))

    lowering.__name__ = name
    lowering.__doc__ = f"``{name}``: float 1/0; with one input the second operand is ``alpha``."
    layer(name)(lowering)


COMPARISONS = {
    "equal": jnp.equal,
    "notEqual": jnp.not_equal,
    "lessThan": jnp.less,
    "lessEqual": jnp.less_equal,
    "greaterThan": jnp.greater,
    "greaterEqual": jnp.greater_equal,
}

for _name, _fn in COMPARISONS.items():
    _comparison(_name, _fn)


def _truth(x):
    return f32(x) != 0


def _logical(name: str, fn) -> None:
    def lowering(ctx, p, *inputs):
        if len(inputs) != 2:
            raise ctx.fail(f"takes 2 inputs, got {len(inputs)}")
        return _as_float(fn(_truth(inputs[0]), _truth(inputs[1])))

    lowering.__name__ = name
    layer(name)(lowering)


for _name, _fn in {"logicalAnd": jnp.logical_and, "logicalOr": jnp.logical_or, "logicalXor": jnp.logical_xor}.items():
    _logical(_name, _fn)


@layer("logicalNot")
def logical_not(ctx, p, *inputs):
    if len(inputs) != 1:
        raise ctx.fail(f"takes 1 input, got {len(inputs)}")
    return _as_float(jnp.logical_not(_truth(inputs[0])))


# -- broadcastable binary layers --------------------------------------------------------------


def _broadcastable(name: str, fn) -> None:
    def lowering(ctx, p, *inputs):
        if len(inputs) != 2:
            raise ctx.fail(f"takes 2 inputs, got {len(inputs)}")
        return fn(f32(inputs[0]), f32(inputs[1]))

    lowering.__name__ = name
    layer(name)(lowering)


BROADCASTABLES = {
    "addBroadcastable": jnp.add,
    "subtractBroadcastable": jnp.subtract,
    "multiplyBroadcastable": jnp.multiply,
    "divideBroadcastable": jnp.true_divide,
    "floorDivBroadcastable": jnp.floor_divide,
    "modBroadcastable": jnp.mod,  # the divisor's sign, as numpy's mod (test_elementwise_binary_cpu)
    "powBroadcastable": jnp.power,
    "minBroadcastable": jnp.minimum,
    "maxBroadcastable": jnp.maximum,
}

for _name, _fn in BROADCASTABLES.items():
    _broadcastable(_name, _fn)


@layer("whereBroadcastable")
def where_broadcastable(ctx, p, *inputs):
    """``WhereBroadcastableLayerParams``: inputs (condition, x, y); x where condition != 0."""
    if len(inputs) != 3:
        raise ctx.fail(f"takes 3 inputs (condition, x, y), got {len(inputs)}")
    cond, x, y = inputs
    return jnp.where(_truth(cond), f32(x), f32(y))
