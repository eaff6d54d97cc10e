"""Check a NeuralNetwork's blob graph before anything runs.

Core ML's NeuralNetwork validator walks the layers in order with the set of blobs produced so
far (the network's inputs, then each layer's outputs) and refuses a layer that consumes a blob
not in it: layers are in execution order, so a blob produced only by a later layer is a cycle.
Nested networks (``branch``, ``loop``) see the blobs of their enclosing network, and what they
produce is available after their layer. mlc does the same at load, naming the layer and the
blob, and limits nesting to ``mlc.runtime.limits.MAX_NESTING``.

Then Core ML's rank validation (``mlc.frontends.neuralnetwork.rank_rules``): per-layer minimum and
maximum input ranks, input/output rank equality and the rank-dependent axis checks of
coremltools' ``NeuralNetworkLayerValidator.cpp``, with ranks from the description under the
network's shape mapping, the layers' tensor messages, and propagation through the layers.

Shapes (``verify_default_shapes``, after lowering). Core ML's spec validator checks only the
ranks of a ``stack`` layer's inputs (``validateStackLayer`` compares the first two
``inputTensor`` ranks, ``NeuralNetworkLayerValidator.cpp``). The shapes are checked by Core ML's
runtime, which is not open source, on the network it builds for the inputs' default shapes (a
flexible input's description shape); the evidence is coremltools' own test:
``TestStack::test_stack_dynamic_range_dim`` (torch frontend, NeuralNetwork backend) expects a
model stacking a ``(2, 3, RangeDim(default=2))`` input with two ``(2, 3, 4)`` ones to be refused
even when every prediction feeds ``(2, 3, 4)``, and the same model with ``default=4`` to run. mlc
refuses it at load too, by inferring the blob shapes at the default shapes, as the ML Program
front end does (``mlc.frontends.mil.verify.verify_default_shapes``); a prediction whose shapes
differ at a ``stack`` is refused when it runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlc.runtime import checks, limits, observe
from mlc._errors import MLCParametersError
from mlc.frontends.neuralnetwork.context import ShapeMismatchError
from mlc.frontends.neuralnetwork.network import NESTED_NETWORKS, layer_kinds
from mlc.frontends.neuralnetwork.rank_rules import verify_ranks


def verify_blobs(network, inputs, where: str) -> set[str]:
    """Raise ``MLCParametersError`` for a layer reading a blob nothing before it produces, or
    for a layer Core ML's rank validation refuses; return every blob the network produces
    (inputs included)."""
    later = _all_outputs(network, 0, where)
    produced = _walk(network, set(inputs), later, where, 0)
    verify_ranks(network, inputs, where)
    return produced


def _all_outputs(network, depth: int, where: str) -> set[str]:
    if depth > limits.MAX_NESTING:
        raise MLCParametersError(f"{where}: networks nest more than {limits.MAX_NESTING} deep (branch and loop layers)")
    names: set[str] = set()
    for layer in network.layers:
        names.update(layer.output)
        kind = layer.WhichOneof("layer")
        for field in NESTED_NETWORKS.get(kind, ()):
            names |= _all_outputs(getattr(getattr(layer, kind), field), depth + 1, where)
    return names


def _walk(network, available: set[str], later: set[str], where: str, depth: int) -> set[str]:
    available = set(available)
    for layer in network.layers:
        kind = layer.WhichOneof("layer")
        for name in layer.input:
            if name not in available:
                why = (
                    "which only a later layer produces (layers run in order: a cycle or an out-of-order network)"
                    if name in later
                    else "which no input or layer of the network produces"
                )
                raise MLCParametersError(f"{where}: layer {layer.name!r} ({kind}) reads blob {name!r}, {why}")
        produced: set[str] = set()
        for field in NESTED_NETWORKS.get(kind, ()):
            params = getattr(layer, kind)
            if params.HasField(field):
                produced |= _walk(getattr(params, field), available | produced, later, where, depth + 1)
        available |= produced
        available.update(layer.output)
    return available


# Layers whose inputs must share one shape, which Core ML checks at load at the default shapes.
_SAME_SHAPE_LAYERS = frozenset({"stack"})


def _default_value(feature):
    """The program input for ``feature`` at its default shape, as a ``jax.ShapeDtypeStruct``;
    None when there is none (a multiarray without a declared shape, a non-tensor input)."""
    if feature.kind == "multiArray":
        if not feature.shape:
            return None
        return jax.ShapeDtypeStruct(tuple(int(d) for d in feature.shape), jnp.float32)
    if feature.kind == "image" and len(feature.shape) == 2:
        channels = 3 if feature.color_space in ("RGB", "BGR") else 1
        return jax.ShapeDtypeStruct((1, channels) + tuple(int(d) for d in feature.shape), jnp.float32)
    return None


def _flexible(feature) -> bool:
    return feature.shape_ranges is not None or bool(feature.enumerated_shapes)


def verify_default_shapes(network, fn, params: dict, inputs: dict, where: str) -> None:
    """Refuse, at load, a network whose ``stack`` layer gets blobs of different shapes when the
    inputs have their default shapes (a flexible input's description shape), as Core ML does
    when it builds the network (see the module docstring). Only networks holding such a layer
    and a flexible input are traced (``jax.eval_shape``: shapes, no data); with fixed inputs the
    default shapes are the only ones, and the prediction refuses them. Any other failure of that
    trace (a data-dependent shape, say) is left to the prediction that meets it."""
    if not _SAME_SHAPE_LAYERS.intersection(layer_kinds(network)):
        return
    flexible = {name: f for name, f in inputs.items() if _flexible(f)}
    if not flexible:
        return
    structs = {}
    for name, feature in inputs.items():
        value = _default_value(feature)
        if value is None:
            return
        structs[name] = value
    try:
        with observe.observing(None), checks.not_collecting():
            jax.eval_shape(fn, params, structs)
    except ShapeMismatchError as e:
        shown = {name: structs[name].shape for name in flexible}
        raise MLCParametersError(
            f"{e.message}, at the flexible inputs' default shapes {shown}, which Core ML builds the network for "
            f"when it loads it (a stack's inputs must have one shape whatever the run-time shapes)"
        ) from e
    except Exception:  # noqa: BLE001 - not this check's business; the prediction that meets it raises it
        return
