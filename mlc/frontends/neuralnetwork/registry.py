"""The NeuralNetwork layer registry: one small function per layer type, ``@layer("convolution")``.

A layer function is called as ``fn(ctx, params, *inputs)``: ``ctx`` is the ``LayerContext``
(weights, the shape world, the layer's declared input/output ranks), ``params`` the layer's own
message (``layer.convolution``), ``inputs`` the arrays the layer reads, in order. It returns one
array, or a tuple for layers with several outputs.

``static`` lists input positions whose *values* decide shapes (``reshapeDynamic``'s shape,
``fillDynamic``'s shape): they must be known at trace time. ``eager`` marks layers whose output
shape depends on data (``whereNonZero``), so a network holding one runs layer by layer.
``weights(params) -> {path: (shape, channel_axis)}`` declares the shapes of the layer's
weights (``"weights"``, ``"weightParams.inputGateWeightMatrix"``), so they are decoded (sub-byte
quantized data needs its count), checked and reshaped once at load, and per-channel
quantization scales land on the output-channel axis. Undeclared weights arrive flat.
``fold=False`` keeps a layer from being evaluated at trace time when all its inputs are known
(random layers draw anew on every call). The table is a ``mlc.frontends.registry.Registry``
(``LAYERS``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from mlc.frontends.registry import Registry


@dataclasses.dataclass(frozen=True)
class LayerDef:
    name: str
    fn: Callable
    static: frozenset[int]
    eager: bool
    fold: bool
    weights: Callable | None = None


def _load_layers() -> None:
    import mlc.frontends.neuralnetwork.layers  # noqa: F401  (registers every family)


LAYERS: Registry[LayerDef] = Registry("NeuralNetwork layer type", _load_layers)


def layer(name: str, *, static=(), eager: bool = False, fold: bool = True, weights: Callable | None = None):
    """Register the decorated function as the lowering of NeuralNetwork layer type ``name``
    (the field name in ``NeuralNetworkLayer``'s ``layer`` oneof)."""

    def register(fn: Callable) -> Callable:
        LAYERS.register(name, LayerDef(name, fn, frozenset(static), eager, fold, weights))
        return fn

    return register


def find(name: str) -> LayerDef | None:
    return LAYERS.find(name)


def lookup(name: str, *, layer_name: str, model: str) -> LayerDef:
    """``find``, or the ``MLCUnsupportedError`` naming the layer type, the layer and the model."""
    return LAYERS.require(
        name,
        where=model,
        detail=f"layer {layer_name!r}",
        hint="`mlc info MODEL` lists every unsupported layer",
        list_supported=False,
    )


def supported_layers() -> list[str]:
    return LAYERS.names()
