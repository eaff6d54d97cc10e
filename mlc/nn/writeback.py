"""Write trained params back into a NeuralNetwork spec.

A params key is ``"<layer scope>/<field path>"`` (``mlc.nn.context.weight_key``): the layer is
found again by its scope (``mlc.nn.network.scoped_layers``) and the ``WeightParams`` by its
path (``"weights"``, ``"bias"``, ``"weightParams.inputGateWeightMatrix"``, ``"weights[0]"``).
Each weight keeps the storage it had (``floatValue`` or ``float16Value``) and its
``isUpdatable`` flag; quantized weights cannot be rewritten.
"""

from __future__ import annotations

import re

import numpy as np

from mlc._errors import MLCParametersError
from mlc.nn import weights as W
from mlc.nn.network import scoped_layers

_PART = re.compile(r"^(\w+)(?:\[(\d+)\])?$")


def _weight_params(layer_params, path: str, where: str):
    message = layer_params
    for part in path.split("."):
        m = _PART.match(part)
        if m is None or not hasattr(message, m.group(1)):
            raise MLCParametersError(f"{where}: no weight {path!r}")
        message = getattr(message, m.group(1))
        if m.group(2) is not None:
            message = message[int(m.group(2))]
    return message


def spec_with_params(spec, params: dict[str, np.ndarray], where: str):
    """A copy of ``spec`` whose weights named in ``params`` hold the given values."""
    out = type(spec)()
    out.CopyFrom(spec)
    network = getattr(out, out.WhichOneof("Type"))
    layers = dict(scoped_layers(network))
    for key, value in params.items():
        scope, _, path = key.partition("/")
        layer = layers.get(scope)
        if layer is None or not path:
            raise MLCParametersError(f"{where}: params key {key!r} names no layer of the network")
        what = f"{where}: layer {layer.name!r} weight {path!r}"
        wp = _weight_params(getattr(layer, layer.WhichOneof("layer")), path, what)
        if W.is_set(wp) and W.storage(wp) != "compressed":
            stored = W.decode(wp, what).size
            if stored != np.size(value):
                raise MLCParametersError(f"{what}: {np.size(value)} new values for the {stored} stored")
        W.encode(wp, np.asarray(value), what)
    return out
