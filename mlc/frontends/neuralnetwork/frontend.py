"""NeuralNetwork front end (``neuralNetwork``, ``neuralNetworkClassifier``,
``neuralNetworkRegressor``): spec -> planned network -> ``Program``.

The function it builds maps the model's inputs to blobs (image preprocessing, then the shape
world's input mapping, ``mlc.frontends.neuralnetwork.shapes``), runs the layers (``mlc.frontends.neuralnetwork.network``), and reads the
declared outputs back. A classifier's ``classLabel`` and probabilities come from the blob
``labelProbabilityLayerName`` (else the blob named like the probabilities output, else the last
layer's output) with the spec's string or int64 labels.
"""

from __future__ import annotations

from collections import Counter

import jax.numpy as jnp

from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.classification import Classification
from mlc.program.program import Interface, Program, Summary
from mlc.features import FeatureDescriptions
from mlc.io.spec import LoadedSpec
from mlc.frontends.neuralnetwork import custom as C
from mlc.frontends.neuralnetwork.verify import verify_blobs, verify_default_shapes
from mlc.frontends.neuralnetwork.network import NetworkLowering, layer_kinds
from mlc.frontends.neuralnetwork.preprocessing import image_preprocessors
from mlc.frontends.neuralnetwork.registry import find
from mlc.frontends.neuralnetwork.shapes import ShapeWorld
from mlc.runtime.interpreter import NodeLimitReached

KINDS = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")


def class_labels(network) -> tuple:
    which = network.WhichOneof("ClassLabels")
    if which == "stringClassLabels":
        return tuple(network.stringClassLabels.vector)
    if which == "int64ClassLabels":
        return tuple(int(v) for v in network.int64ClassLabels.vector)
    return ()


def _unsupported(network) -> dict[str, int]:
    missing: dict[str, int] = {}
    for kind in layer_kinds(network):
        if kind != "<unset>" and find(kind) is None:  # an unset type is invalid, refused when planning
            missing[kind] = missing.get(kind, 0) + 1
    for name in C.custom_classes(network):
        if C.binding(name) is None:
            key = f"custom:{name}"
            missing[key] = missing.get(key, 0) + 1
    return missing


def _refuse(loaded: LoadedSpec, network, missing: dict[str, int]) -> None:
    unbound = [k.split(":", 1)[1] for k in missing if k.startswith("custom:")]
    layers = [k for k in missing if not k.startswith("custom:")]
    if layers:
        raise MLCUnsupportedError(
            f"{loaded.name}: NeuralNetwork layer type {layers[0]!r} is not supported by mlc yet; "
            f"unsupported: {', '.join(f'{k} (x{v})' for k, v in missing.items())}"
        )
    raise MLCUnsupportedError(_unbound_message(loaded.name, unbound))


def _unbound_message(model: str, unbound: list[str]) -> str:
    """The refusal of custom layer classes without a binding (``custom.binding``), naming every
    one, so the app learns all it must bind from one load."""
    if len(unbound) == 1:
        return (
            f"{model}: custom layer class {unbound[0]!r} has no implementation; bind a JAX function to it "
            f"with mlc.register_custom_layer({unbound[0]!r}, fn) before loading the model"
        )
    names = ", ".join(repr(n) for n in unbound)
    calls = "; ".join(f"mlc.register_custom_layer({n!r}, fn)" for n in unbound)
    return (
        f"{model}: custom layer classes {names} have no implementation; bind a JAX function to each "
        f"before loading the model: {calls}"
    )


def _interface(spec, world: ShapeWorld) -> Interface:
    desc = spec.description
    inputs = FeatureDescriptions.from_proto(desc.input)
    for f in inputs.values():
        f.rank5_mapped = world.rank5_arrays and f.kind == "multiArray"
    return Interface(
        inputs=inputs,
        outputs=FeatureDescriptions.from_proto(desc.output),
        predicted_feature_name=desc.predictedFeatureName or None,
        predicted_probabilities_name=desc.predictedProbabilitiesName or None,
        input_dtypes={n: "fp32" for n, f in inputs.items() if f.kind in ("multiArray", "image")},
    )


def _kind(spec, world: ShapeWorld) -> str:
    mapping = "rank-5 input mapping" if world.rank5_arrays else "exact input mapping"
    return f"{spec.WhichOneof('Type')} ({mapping})"


def describe(loaded: LoadedSpec) -> Summary:
    """The model's interface and layer histogram, nothing lowered (``mlc info``)."""
    spec = loaded.spec
    network = getattr(spec, spec.WhichOneof("Type"))
    world = ShapeWorld(network, loaded.name)
    histogram = dict(Counter(layer_kinds(network)).most_common())
    return Summary(_interface(spec, world), _kind(spec, world), histogram, _unsupported(network))


def build(loaded: LoadedSpec) -> Program:
    spec = loaded.spec
    kind = spec.WhichOneof("Type")
    network = getattr(spec, kind)
    world = ShapeWorld(network, loaded.name)
    interface = _interface(spec, world)
    inputs, outputs = interface.inputs, interface.outputs
    missing = _unsupported(network)
    if missing:
        _refuse(loaded, network, missing)
    verify_blobs(network, inputs, loaded.name)
    bindings = {name: C.binding(name) for name in C.custom_classes(network)}
    lowering = NetworkLowering(network, model=loaded.name, custom=bindings)
    preprocess = image_preprocessors(network.preprocessing, inputs, loaded.name)
    labels = class_labels(network) if kind == "neuralNetworkClassifier" else ()
    if kind == "neuralNetworkClassifier" and not labels:
        raise MLCParametersError(f"{loaded.name}: the classifier declares no class labels")
    probabilities_blob = _probabilities_blob(network, interface) if labels else None
    classifier_outputs = (interface.predicted_feature_name, interface.predicted_probabilities_name)

    def run_blobs(params: dict, values: dict) -> dict:
        blobs = {}
        for name, value in values.items():
            feature = inputs.get(name)
            if feature is None:
                continue  # a training-only input (a loss target) is not a network blob
            for step in preprocess.get(name, ()):
                value = step(value)
            blobs[name] = world.input_tensor(feature, value)
        return lowering(params, blobs)

    def fn(params: dict, values: dict) -> dict:
        try:
            env = run_blobs(params, values)
        except NodeLimitReached as stop:  # MLC_LIMIT: the last layer's outputs
            return stop.outputs
        out = {}
        for name, feature in outputs.items():
            if labels and name in classifier_outputs:
                continue
            if name not in env:
                raise MLCParametersError(f"{loaded.name}: output {name!r} is not produced by any layer of the network")
            out[name] = world.output_value(feature, env[name])
        if labels:
            if probabilities_blob not in env:
                raise MLCParametersError(f"{loaded.name}: the class probabilities blob {probabilities_blob!r} is not produced by any layer")
            probs = jnp.reshape(env[probabilities_blob], (-1,))
            if probs.shape[0] != len(labels):
                raise MLCParametersError(
                    f"{loaded.name}: blob {probabilities_blob!r} holds {probs.shape[0]} probabilities for {len(labels)} class labels"
                )
            result = Classification(probs, labels)
            for name in classifier_outputs:
                if name:
                    out[name] = result
        return out

    verify_default_shapes(network, fn, lowering.params, inputs, loaded.name)
    return Program(
        fn=fn,
        params=lowering.params,
        interface=interface,
        kind=_kind(spec, world),
        param_storage=lowering.storage,
        eager=lowering.eager,
        op_histogram=dict(Counter(layer_kinds(network)).most_common()),
        blobs=run_blobs,
    )


def _probabilities_blob(network, interface: Interface) -> str:
    if network.labelProbabilityLayerName:
        return network.labelProbabilityLayerName
    produced = {o for layer in network.layers for o in layer.output}
    if interface.predicted_probabilities_name in produced:
        return interface.predicted_probabilities_name
    if not network.layers or not network.layers[-1].output:
        raise MLCParametersError("the classifier has no layer producing its probabilities")
    return network.layers[-1].output[0]
