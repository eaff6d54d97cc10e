"""Write trained params back into a NeuralNetwork spec.

A params key is ``"<layer scope>/<field path>"`` (``mlc.frontends.neuralnetwork.context.weight_key``): the layer is
found again by its scope (``mlc.frontends.neuralnetwork.network.scoped_layers``) and the ``WeightParams`` by its
path (``"weights"``, ``"bias"``, ``"weightParams.inputGateWeightMatrix"``, ``"weights[0]"``).
Each weight keeps the storage it had (``floatValue`` or ``float16Value``) and its
``isUpdatable`` flag; quantized weights cannot be rewritten.

A pipeline (Model.proto ``Pipeline``, also inside ``PipelineClassifier`` /
``PipelineRegressor``) holds its models' params under ``"<i>:<name>/<the model's key>"``
(``mlc.frontends.classic.models.pipeline``: ``i`` the model's position in ``Pipeline.models``, ``name``
its ``Pipeline.names`` entry, by default ``"model<i>"``): each key is written back into the
model it names, every other field of the pipeline (``isUpdatable`` flags, ``trainingInput``)
kept as it was.
"""

from __future__ import annotations

import re

import numpy as np

from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.io.pipelines import PIPELINES, pipeline_message, stage_names, stage_scope, stage_where
from mlc.frontends.neuralnetwork import weights as W
from mlc.frontends.neuralnetwork.frontend import KINDS as NETWORKS
from mlc.frontends.neuralnetwork.network import scoped_layers

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


def model_spec_with_params(spec, params: dict[str, np.ndarray], where: str):
    """A copy of ``spec``, a NeuralNetwork or a pipeline of them, holding ``params``."""
    kind = spec.WhichOneof("Type")
    if kind in NETWORKS:
        return spec_with_params(spec, params, where)
    if kind in PIPELINES:
        return _pipeline_spec_with_params(spec, params, where)
    raise MLCUnsupportedError(f"{where}: writing trained params back into a {kind} model is not supported")


def _pipeline_spec_with_params(spec, params: dict[str, np.ndarray], where: str):
    out = type(spec)()
    out.CopyFrom(spec)
    pipeline = pipeline_message(out)
    models, names = pipeline.models, stage_names(pipeline)
    index_of = {stage_scope(i, name): i for i, name in enumerate(names)}
    by_model: dict[int, dict[str, np.ndarray]] = {}
    for key, value in params.items():
        scope, _, rest = key.partition("/")
        if scope not in index_of or not rest:
            raise MLCParametersError(f"{where}: params key {key!r} names no model of the pipeline (its models are {names})")
        by_model.setdefault(index_of[scope], {})[rest] = value
    for i, model_params in sorted(by_model.items()):
        models[i].CopyFrom(model_spec_with_params(models[i], model_params, stage_where(where, i, names[i])))
    return out
