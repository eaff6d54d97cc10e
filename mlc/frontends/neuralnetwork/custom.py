"""Custom layers (NeuralNetwork.proto ``CustomLayerParams``; Core ML's ``MLCustomLayer``).

A ``custom`` layer names a class the app must provide. In mlc that class is a JAX function,
bound by name before the model loads::

    def swish(x, *, parameters, weights):
        return x * jax.nn.sigmoid(parameters["beta"] * x)

    mlc.register_custom_layer("SwishLayer", swish)

The function receives the layer's inputs as arrays, ``parameters`` (the layer's ``parameters``
map: double, string, int, int64 or bool values) and ``weights`` (the layer's ``weights`` as
flat float32 arrays, in order). It returns one array, or a tuple for several outputs. A model
whose custom layer has no binding fails at load time with an error naming the class.
"""

from __future__ import annotations

from typing import Callable

from mlc._errors import MLCParametersError
from mlc.frontends.registry import Registry

# class name -> the app's function (registered by the app: no loader)
CUSTOM_LAYERS: Registry[Callable] = Registry("custom layer class")


def register_custom_layer(class_name: str, fn: Callable) -> None:
    """Bind ``fn(*inputs, parameters=..., weights=...)`` to custom layers of ``class_name``."""
    if not isinstance(class_name, str) or not class_name:
        raise MLCParametersError(f"register_custom_layer: the class name must be a non-empty string, got {class_name!r}")
    if not callable(fn):
        raise MLCParametersError(f"register_custom_layer({class_name!r}): {fn!r} is not callable")
    CUSTOM_LAYERS.register(class_name, fn, replace=True)  # binding a class again replaces its function


def unregister_custom_layer(class_name: str) -> None:
    CUSTOM_LAYERS.unregister(class_name)


def binding(class_name: str) -> Callable | None:
    return CUSTOM_LAYERS.find(class_name)


def custom_classes(network) -> list[str]:
    """The class names of every custom layer in ``network`` (nested networks included)."""
    from mlc.frontends.neuralnetwork.network import NESTED_NETWORKS

    names = []
    for layer in network.layers:
        kind = layer.WhichOneof("layer")
        if kind == "custom":
            names.append(layer.custom.className)
        for field in NESTED_NETWORKS.get(kind, ()):
            names += custom_classes(getattr(getattr(layer, kind), field))
    return names


def parameter_value(v):
    """A ``CustomLayerParamValue`` as a Python value."""
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None
