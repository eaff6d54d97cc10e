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
"""

from __future__ import annotations

from mlc.runtime import limits
from mlc._errors import MLCParametersError
from mlc.frontends.neuralnetwork.network import NESTED_NETWORKS
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
