"""What an updatable NeuralNetwork declares about its own training (NeuralNetwork.proto
``NetworkUpdateParameters``), read and checked as Core ML's validator does
(``UpdatableNeuralNetworkValidator.cpp``).

* ``spec.isUpdatable``; updatable layers (``NeuralNetworkLayer.isUpdatable``) are
  ``convolution`` or ``innerProduct`` only, every weight of theirs flagged
  ``WeightParams.isUpdatable`` and not quantized; at least one such layer.
* Exactly one loss layer: ``categoricalCrossEntropyLossLayer`` (its input the output of a
  ``softmax`` layer; its target a class index, or, for a classifier, the class label named by
  ``predictedFeatureName``) or ``meanSquaredErrorLossLayer`` (input a blob of the network).
* On the way back from the loss to an updatable layer only layers that support
  back-propagation (convolution, innerProduct, flatten, pooling, batchnorm, ReLU / sigmoid /
  tanh activations, uniDirectionalLSTM; softmax right before a cross-entropy loss).
* The optimizer, ``sgdOptimizer`` (learningRate, miniBatchSize, momentum) or
  ``adamOptimizer`` (learningRate, miniBatchSize, beta1, beta2, eps), and ``epochs`` are set;
  ``shuffle`` and ``seed`` are optional. Each is a ``DoubleParameter`` / ``Int64Parameter``
  whose ``defaultValue`` is used unless the caller overrides it within the declared
  ``range`` or ``set`` (Core ML's ``MLModelConfiguration.parameters``).
* ``description.trainingInput`` holds at least one prediction input and the loss target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlc._errors import MLCParametersError, MLCUpdateError
from mlc.frontends.neuralnetwork.network import weight_fields
from mlc.frontends.neuralnetwork import weights as W

UPDATABLE_LAYERS = ("convolution", "innerProduct")
BACKPROPAGABLE_LAYERS = ("convolution", "innerProduct", "uniDirectionalLSTM", "flatten", "pooling", "batchnorm")
BACKPROPAGABLE_ACTIVATIONS = ("ReLU", "sigmoid", "tanh")

# Hyper-parameter name (as mlc.update takes it) -> field of the optimizer message.
SGD_FIELDS = {"learning_rate": "learningRate", "mini_batch_size": "miniBatchSize", "momentum": "momentum"}
ADAM_FIELDS = {
    "learning_rate": "learningRate",
    "mini_batch_size": "miniBatchSize",
    "beta1": "beta1",
    "beta2": "beta2",
    "eps": "eps",
}
TOP_LEVEL_FIELDS = {"epochs": "epochs", "shuffle": "shuffle", "seed": "seed"}


@dataclasses.dataclass
class LossSpec:
    kind: str  # "cross_entropy" or "mse"
    name: str
    input: str  # the blob the loss reads
    target: str  # the training input holding the target (label, class index or values)
    target_is_label: bool  # a classifier's class label (inverse-mapped to its index)


@dataclasses.dataclass
class UpdateSpec:
    """An updatable network's training configuration, as declared."""

    loss: LossSpec
    optimizer: str  # "sgd" or "adam"
    hyper: dict[str, Any]  # learning_rate, mini_batch_size, momentum | beta1, beta2, eps; epochs, shuffle, seed
    parameters: dict[str, Any]  # name -> the Int64/Double/BoolParameter message (for allowed values)
    trainable: list[str]  # params keys of the updatable weights
    training_inputs: list[str]


def network_of(spec) -> Any:
    return getattr(spec, spec.WhichOneof("Type"))


def read_update_spec(spec, where: str) -> UpdateSpec:
    """Check an updatable NeuralNetwork spec and read its training configuration."""
    kind = spec.WhichOneof("Type")
    if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        raise MLCUpdateError(f"{where}: a {kind} model is not an updatable neural network; mlc.update takes updatable "
                             f"NeuralNetwork and kNN models (mlc.finetune trains any NeuralNetwork or ML Program)")
    if not spec.isUpdatable:
        raise MLCUpdateError(f"{where}: the model is not marked updatable (spec.isUpdatable is false); "
                             f"use mlc.finetune to train a model that Core ML cannot update")
    nn = network_of(spec)
    trainable = _updatable_weights(nn, where)
    if not nn.HasField("updateParams") or len(nn.updateParams.lossLayers) == 0:
        raise MLCParametersError(f"{where}: the updatable network declares no loss layer (updateParams.lossLayers)")
    if len(nn.updateParams.lossLayers) > 1:
        raise MLCParametersError(f"{where}: the network declares {len(nn.updateParams.lossLayers)} loss layers; Core ML supports one")
    loss = _loss(spec, nn, where)
    _check_backprop_path(nn, loss, where)
    optimizer, hyper, parameters = _optimizer(nn.updateParams, where)
    training_inputs = _training_inputs(spec, loss, where)
    return UpdateSpec(loss, optimizer, hyper, parameters, trainable, training_inputs)


def _updatable_weights(nn, where: str) -> list[str]:
    from mlc.frontends.neuralnetwork.context import weight_key

    keys, names = [], set()
    for layer in nn.layers:
        if layer.name in names:
            raise MLCParametersError(f"{where}: the updatable model has more than one layer named {layer.name!r}")
        names.add(layer.name)
        if not layer.isUpdatable:
            continue
        kind = layer.WhichOneof("layer")
        if kind not in UPDATABLE_LAYERS:
            raise MLCParametersError(
                f"{where}: layer {layer.name!r} is marked updatable, but only convolution and innerProduct layers can be ({kind})"
            )
        for path, wp in weight_fields(getattr(layer, kind)):
            if W.storage(wp) == "compressed":
                raise MLCParametersError(f"{where}: updatable layer {layer.name!r} has quantized {path}; quantized weights cannot be updated")
            if not wp.isUpdatable:
                raise MLCParametersError(f"{where}: updatable layer {layer.name!r} has {path} not marked isUpdatable")
            keys.append(weight_key(layer.name, path))
    if not keys:
        raise MLCUpdateError(f"{where}: the model is marked updatable, but none of its layers is")
    return keys


def _loss(spec, nn, where: str) -> LossSpec:
    layer = nn.updateParams.lossLayers[0]
    which = layer.WhichOneof("LossLayerType")
    if which is None:
        raise MLCParametersError(f"{where}: loss layer {layer.name!r} has no type; Core ML supports cross entropy and MSE")
    message = getattr(layer, which)
    desc = spec.description
    if which == "categoricalCrossEntropyLossLayer":
        producer = _producers(nn).get(message.input)
        if producer is None or producer.WhichOneof("layer") != "softmax":
            raise MLCParametersError(
                f"{where}: the input {message.input!r} of cross-entropy loss layer {layer.name!r} is not the output of a softmax layer"
            )
        training = {f.name for f in desc.trainingInput}
        is_classifier = spec.WhichOneof("Type") == "neuralNetworkClassifier"
        label = is_classifier and desc.predictedFeatureName in training
        target = desc.predictedFeatureName if label else message.target
        return LossSpec("cross_entropy", layer.name, message.input, target, label)
    if message.input not in _producers(nn):
        raise MLCParametersError(f"{where}: the input {message.input!r} of MSE loss layer {layer.name!r} is not produced by the network")
    return LossSpec("mse", layer.name, message.input, message.target, False)


def _producers(nn) -> dict[str, Any]:
    out = {}
    for layer in nn.layers:
        for name in layer.output:
            out[name] = layer
    return out


def _backpropagable(layer) -> bool:
    kind = layer.WhichOneof("layer")
    if kind == "activation":
        return layer.activation.WhichOneof("NonlinearityType") in BACKPROPAGABLE_ACTIVATIONS
    return kind in BACKPROPAGABLE_LAYERS


def _check_backprop_path(nn, loss: LossSpec, where: str) -> None:
    """Walk back from the loss: no updatable layer may sit behind a layer that does not
    back-propagate (softmax is allowed right before a cross-entropy loss)."""
    producers = _producers(nn)
    blocked: str | None = None
    frontier = [(loss.input, True)]
    seen: set[str] = set()
    while frontier:
        blob, at_loss = frontier.pop(0)
        layer = producers.get(blob)
        if layer is None or layer.name in seen:
            continue
        seen.add(layer.name)
        if layer.isUpdatable and blocked is not None:
            raise MLCParametersError(
                f"{where}: layer {blocked!r} does not support back-propagation and lies between updatable layer "
                f"{layer.name!r} and the loss"
            )
        softmax_ok = at_loss and loss.kind == "cross_entropy" and layer.WhichOneof("layer") == "softmax"
        if not _backpropagable(layer) and not softmax_ok and blocked is None:
            blocked = layer.name
        frontier.extend((name, False) for name in layer.input)


def _parameter_value(message, field: str):
    return getattr(message, field).defaultValue


def _optimizer(update, where: str) -> tuple[str, dict, dict]:
    which = update.optimizer.WhichOneof("OptimizerType")
    if which is None:
        raise MLCParametersError(f"{where}: the updatable network declares no optimizer (sgdOptimizer or adamOptimizer)")
    message = getattr(update.optimizer, which)
    fields = SGD_FIELDS if which == "sgdOptimizer" else ADAM_FIELDS
    hyper, parameters = {}, {}
    for name, field in fields.items():
        if field != "momentum" and not message.HasField(field):
            raise MLCParametersError(f"{where}: the {which} does not set {field}")
        hyper[name] = _parameter_value(message, field)
        parameters[name] = getattr(message, field)
    if not update.HasField("epochs"):
        raise MLCParametersError(f"{where}: the update parameters do not set epochs")
    for name, field in TOP_LEVEL_FIELDS.items():
        hyper[name] = _parameter_value(update, field)
        parameters[name] = getattr(update, field)
    hyper["mini_batch_size"] = int(hyper["mini_batch_size"])
    hyper["epochs"] = int(hyper["epochs"])
    hyper["seed"] = int(hyper["seed"])
    hyper["shuffle"] = bool(hyper["shuffle"])
    for name in ("mini_batch_size", "epochs"):
        if hyper[name] <= 0:
            raise MLCParametersError(f"{where}: {name} is {hyper[name]}; it must be positive")
    return ("sgd" if which == "sgdOptimizer" else "adam"), hyper, parameters


def _training_inputs(spec, loss: LossSpec, where: str) -> list[str]:
    desc = spec.description
    names = [f.name for f in desc.trainingInput]
    inputs = {f.name for f in desc.input}
    if not any(n in inputs for n in names):
        raise MLCParametersError(f"{where}: the training inputs {names} include none of the model's inputs {sorted(inputs)}")
    if loss.target not in names:
        raise MLCParametersError(f"{where}: the training inputs {names} do not include the loss target {loss.target!r}")
    return names


def check_override(name: str, value: Any, parameter, where: str) -> Any:
    """``value`` for hyper-parameter ``name`` if the model allows it (its ``range`` or ``set``)."""
    kind = parameter.DESCRIPTOR.name  # Int64Parameter, DoubleParameter or BoolParameter
    if kind == "BoolParameter" and not isinstance(value, (bool, np.bool_)):
        raise MLCUpdateError(f"{where}: {name} must be True or False, got {value!r}")
    if kind != "BoolParameter" and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))):
        raise MLCUpdateError(f"{where}: {name} must be a number, got {value!r}")
    oneofs = parameter.DESCRIPTOR.oneofs_by_name
    allowed = parameter.WhichOneof("AllowedValues") if "AllowedValues" in oneofs else None
    if allowed == "range":
        lo, hi = parameter.range.minValue, parameter.range.maxValue
        if not lo <= value <= hi:
            raise MLCUpdateError(f"{where}: {name}={value} is outside the range [{lo}, {hi}] the model allows")
    elif allowed == "set":
        values = list(parameter.set.values)
        if value not in values:
            raise MLCUpdateError(f"{where}: {name}={value} is not one of the values {values} the model allows")
    return value
