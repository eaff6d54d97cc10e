"""Lower a ``NeuralNetwork`` message's layers to a pure function over named blobs.

The network is planned once at load: every layer resolved to its registered lowering (or an
error naming the layer type), every ``WeightParams`` decoded (``mlc.frontends.neuralnetwork.weights``) into the
params pytree under ``"<layer name>/<field path>"``, nested networks (``branch``, ``loop``)
planned recursively. Running it walks the plan in order over a dict of blobs, so the protobuf is
not touched per call.

* Static vs traced, as for ML Programs: a layer whose inputs are all numpy (shape arithmetic:
  ``getShape`` -> ``gather`` -> ``reshapeDynamic``) is evaluated at trace time and stays numpy.
  A weight that feeds an input a layer needs at trace time (``loadConstantND`` giving a shape)
  is kept as a numpy constant rather than a param.
* A layer input registered ``static`` that turns out traced raises ``DataDependentShapeError``;
  ``Model`` then runs the network layer by layer. Layers whose output shapes depend on data
  (``whereNonZero``) and the control-flow layers (``branch``, ``loop``) are ``eager``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlc._errors import MLCError, MLCParametersError, MLCUnsupportedError
from mlc.runtime import observe
from mlc.runtime.interpreter import Node, node_done, program_call, run_node, static_argument
from mlc.frontends.neuralnetwork import weights as W
from mlc.frontends.neuralnetwork.context import LayerContext, weight_key
from mlc.frontends.neuralnetwork.registry import LayerDef, find

NESTED_NETWORKS = {"branch": ("ifBranch", "elseBranch"), "loop": ("conditionNetwork", "bodyNetwork")}


@dataclasses.dataclass
class LayerPlan:
    layer: Any  # NeuralNetworkLayer message
    kind: str  # the layer oneof's field name
    definition: LayerDef
    params: Any  # the layer's own message, e.g. layer.convolution
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    children: dict[str, "NetworkPlan"]
    scope: str  # the layer's name, made unique in the whole network ("name#2" for a repeat)
    weight_keys: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class NetworkPlan:
    layers: list[LayerPlan]


def layer_kinds(network) -> list[str]:
    """Every layer type of ``network``, nested networks included, in order."""
    kinds = []
    for layer in network.layers:
        kind = layer.WhichOneof("layer")
        kinds.append(kind or "<unset>")
        for field in NESTED_NETWORKS.get(kind, ()):
            sub = getattr(getattr(layer, kind), field)
            kinds += layer_kinds(sub)
    return kinds


def weight_fields(message, prefix: str = ""):
    """``(path, WeightParams)`` for every set weight inside ``message`` (nested networks excluded)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        tname = field.message_type.name
        if tname == "NeuralNetwork" or field.message_type.GetOptions().map_entry:
            continue  # nested networks are planned on their own; maps (custom parameters) hold no weights
        path = f"{prefix}{field.name}"
        items = list(enumerate(value)) if _is_repeated(field) else [(None, value)]
        for i, item in items:
            p = path if i is None else f"{path}[{i}]"
            if tname == "WeightParams":
                if W.is_set(item):
                    yield p, item
            else:
                yield from weight_fields(item, p + ".")


class NetworkLowering:
    """The planned network: call it as ``fn(params, blobs) -> blobs``."""

    def __init__(self, network, *, model: str, custom=None):
        self.model = model
        self.custom = custom or {}
        self.params: dict[str, np.ndarray] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.storage: dict[str, str] = {}  # params key -> "fp32", "fp16" or "compressed" (mlc.frontends.neuralnetwork.weights.storage)
        self._static_blobs: set[str] = set()
        self._seen_names: dict[str, int] = {}
        self._output_shapes: dict = {}  # (layer, input signature) -> output shapes (``_check_output_sizes``)
        self.plan = self._plan(network)

    # -- planning ------------------------------------------------------------------------------
    def _plan(self, network) -> NetworkPlan:
        layers = []
        for layer in network.layers:
            kind = layer.WhichOneof("layer")
            if kind is None:
                raise MLCParametersError(f"{self.model}: layer {layer.name!r} has no layer type set")
            definition = find(kind)
            if definition is None:
                raise MLCUnsupportedError(
                    f"{self.model}: NeuralNetwork layer type {kind!r} (layer {layer.name!r}) is not supported by mlc yet"
                )
            scope = _scope(self._seen_names, layer.name)
            params = getattr(layer, kind)
            for pos in definition.static:
                if pos < len(layer.input):
                    self._static_blobs.add(layer.input[pos])
            children = {f: self._plan(getattr(params, f)) for f in NESTED_NETWORKS.get(kind, ()) if params.HasField(f)}
            layers.append(LayerPlan(layer, kind, definition, params, tuple(layer.input), tuple(layer.output), children, scope))
        for plan in layers:
            self._decode_weights(plan)
        return NetworkPlan(layers)

    def _decode_weights(self, plan: LayerPlan) -> None:
        shapes = plan.definition.weights(plan.params) if plan.definition.weights else {}
        as_const = plan.kind in ("loadConstant", "loadConstantND") and any(o in self._static_blobs for o in plan.outputs)
        for path, wp in weight_fields(plan.params):
            where = f"{self.model}: layer {plan.layer.name!r} ({plan.kind}) weight {path!r}"
            shape, axis = shapes.get(path, (None, 0))
            count = int(np.prod(shape)) if shape is not None else None
            value = W.decode(wp, where, count=count, channel_axis=axis, shape=shape)
            if shape is not None:
                value = value.reshape(shape)
            key = weight_key(plan.scope, path)
            (self.consts if as_const else self.params)[key] = value
            if not as_const:
                self.storage[key] = W.storage(wp)
            plan.weight_keys.append(key)

    @property
    def eager(self) -> bool:
        return _any_eager(self.plan)

    # -- running -------------------------------------------------------------------------------
    def __call__(self, params: dict, blobs: dict) -> dict:
        """Every blob after the network ran on ``blobs``. ``MLC_LIMIT`` stops it after the n-th
        layer (``NodeLimitReached``, which the front end's function returns as its outputs)."""
        env = dict(blobs)
        with program_call():
            self.run_network(self.plan, env, {**self.consts, **params})
        return env

    def run_network(self, plan: NetworkPlan, env: dict, params: dict) -> dict:
        for lp in plan.layers:
            self.run_layer(lp, env, params)
        return env

    def run_layer(self, lp: LayerPlan, env: dict, params: dict) -> None:
        d = lp.definition
        what = f"{self.model}: layer {lp.layer.name!r} ({lp.kind})"
        args = []
        for pos, name in enumerate(lp.inputs):
            if name not in env:
                raise MLCParametersError(f"{what} reads blob {name!r}, which no input or earlier layer produces")
            value = env[name]
            if pos in d.static:
                value = static_argument(value, what, str(pos))
            args.append(value)

        def run_child(field: str, child_env: dict) -> dict:
            child = lp.children.get(field)
            return child_env if child is None else self.run_network(child, child_env, params)

        ctx = LayerContext(
            model=self.model, layer=lp.layer, params=params, run=run_child, env=env, custom=self.custom,
            scope=lp.scope,
        )
        node = Node(
            what=what, compute=lambda: d.fn(ctx, lp.params, *args), args=args,
            static_args=[i in d.static for i in range(len(args))], fold=d.fold and not _reads_weights(lp, params),
            nested=bool(lp.children), key=id(lp), scope=lp.layer.name or lp.kind,
        )
        result, folded = run_node(node, self._output_shapes)
        if (observer := observe.current()) is not None:
            observer.nn_layer(lp, ctx, args, folded)
        results = result if isinstance(result, (tuple, list)) else (result,)
        if not lp.outputs:
            node_done(lp.kind, lp.layer.name, {})
            return
        if len(results) != len(lp.outputs):
            raise MLCError(f"{what} gave {len(results)} outputs, its spec names {len(lp.outputs)}")
        for name, value in zip(lp.outputs, results):
            env[name] = value
        node_done(lp.kind, lp.layer.name, dict(zip(lp.outputs, results)))


def _scope(seen: dict[str, int], name: str) -> str:
    """A layer's params scope. Converters repeat names across nested networks (a "const_two"
    in each loop body): a repeat, in planning order (depth first), gets "name#n"."""
    count = seen[name] = seen.get(name, 0) + 1
    return name if count == 1 else f"{name}#{count}"


def scoped_layers(network, seen: dict[str, int] | None = None):
    """``(scope, layer)`` for every layer, nested networks included, in the order the planner
    names them (so a params key ``scope/path`` finds its layer again)."""
    seen = {} if seen is None else seen
    for layer in network.layers:
        yield _scope(seen, layer.name), layer
        kind = layer.WhichOneof("layer")
        params = getattr(layer, kind) if kind else None
        for field in NESTED_NETWORKS.get(kind, ()):
            if params.HasField(field):
                yield from scoped_layers(getattr(params, field), seen)


def _any_eager(plan: NetworkPlan) -> bool:
    return any(lp.definition.eager or any(_any_eager(c) for c in lp.children.values()) for lp in plan.layers)


def _reads_weights(lp: LayerPlan, params: dict) -> bool:
    """Whether the layer reads a weight that is a param (traced under jit), not a numpy const."""
    return any(not isinstance(params[k], np.ndarray) for k in lp.weight_keys)


def _is_repeated(field) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 5
    if is_repeated is not None:
        return bool(is_repeated)
    return field.label == field.LABEL_REPEATED
