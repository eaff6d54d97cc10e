"""``custom`` (NeuralNetwork.proto ``CustomLayerParams``): the JAX function bound to the layer's
``className`` with ``mlc.register_custom_layer`` (see ``mlc.frontends.neuralnetwork.custom``). The binding is taken
when the model loads; a model whose class has none is refused there."""

from __future__ import annotations

from mlc._errors import MLCUnsupportedError
from mlc.frontends.neuralnetwork.custom import parameter_value
from mlc.frontends.neuralnetwork.registry import layer
from mlc.frontends.neuralnetwork.weights import is_set


@layer("custom")
def custom(ctx, p, *inputs):
    fn = ctx.custom.get(p.className)
    if fn is None:
        raise MLCUnsupportedError(f"{ctx.where}: custom layer class {p.className!r} has no implementation; "
                                  f"bind one with mlc.register_custom_layer({p.className!r}, fn)")
    parameters = {k: parameter_value(v) for k, v in p.parameters.items()}
    weights = [ctx.weight(f"weights[{i}]") for i, w in enumerate(p.weights) if is_set(w)]
    return fn(*inputs, parameters=parameters, weights=weights)
