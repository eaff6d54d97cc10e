"""Espresso layers (``model.espresso.net``) -> NeuralNetwork.proto layers.

Each ``@espresso_layer("<type>")`` function turns one espresso layer (a JSON object with
``type``, ``name``, ``bottom`` and ``top`` — comma-separated blob names — and its parameters)
into one or more ``NeuralNetworkLayer`` messages, so mlc's NeuralNetwork front end runs a
compiled model unchanged. A type with no function here, a parameter value no function maps, or
a key a function does not know is refused (``MLCUnsupportedError`` naming the layer): a key
espresso adds may change what a layer computes, and a silently different result is worse than
a refusal.

Where each mapping comes from: "twin" means checked against the uncompiled ``.mlmodel`` that
``coremlc`` compiled (MNISTClassifier, FindFour, UpdatableDrawingClassifier: the twin's layer
and the weights, value for value); "inferred" means read from published compiled models with no
twin (their layer structure, names and ``model.espresso.shape`` sizes), and cross-checked
against ``model.espresso.shape`` when the network is built (``espresso.py``).

How ``coremlc`` rewrites a network, seen in the twins: a ReLU after a convolution or inner
product becomes ``fused_relu`` / ``has_relu``; a batch norm after a convolution is folded into
its weights and bias (``w * gamma / sqrt(var + eps)``, ``beta + (b - mean) * gamma / sqrt(var +
eps)``, the bias kept in fp32 even when the weights are fp16); a padding layer before a valid
convolution becomes the convolution's explicit ``pad_t/pad_b/pad_l/pad_r``. None of the twins'
convolution or inner-product weights is stored in another order than the protobuf's: FindFour's
26 convolutions hold the twin's ``[C_out, C_in/groups, kH, kW]`` weights times the folded
batch-norm scale, each within fp16 rounding.

The types mapped: here ``convolution``, ``pool``, ``inner_product``, ``activation``,
``elementwise``, ``softmax``, ``softmax_nd``, ``flatten``, ``batchnorm``, ``transpose``,
``reshape``; ``concat``, ``split_nd``, ``expand_dims``, ``squeeze`` in
``espresso_shape_layers.py``; ``general_padding``, ``upsample`` in
``espresso_spatial_layers.py`` (they import this module to register, and ``espresso.py``, which
reads the table, imports them). Those modules' docstrings say which types stay refused and why
(``rnn_arch``, ``reduce``, ``slice``, ``crop``, ``lrn``, ``deconvolution``, ``load_constant``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from mlc._errors import MLCIOError, MLCUnsupportedError
from mlc.io.compiled.espresso_weights import EspressoWeights
from mlc.io.proto import proto

MAX_INT = 1 << 62
FLOAT32_MAX = float(np.finfo(np.float32).max)
# ``hint_fallback_from_ane`` / ``hint_fallback_from_metal`` (seen in a published network,
# dcsijan/model-dump, on reshape, squeeze, expand_dims, split_nd, rnn_arch, inner_product layers)
# tell espresso which engine not to run a layer on; they do not change what it computes.
COMMON_KEYS = frozenset({
    "type", "name", "bottom", "top", "weights", "debug_info", "attributes", "hint_fallback_from_ane", "hint_fallback_from_metal",
})
PAD_KEYS = frozenset({"pad_t", "pad_b", "pad_l", "pad_r", "pad_mode", "pad_fill_mode", "pad_value"})

EspressoFn = Callable[["Layer", "Network"], None]
_TABLE: dict[str, tuple[EspressoFn, frozenset]] = {}


def espresso_layer(type_name: str, keys: frozenset | set = frozenset()):
    """Register ``fn(layer, network)`` for the espresso type ``type_name``; ``keys`` are the
    parameters it reads (besides ``COMMON_KEYS``)."""

    def register(fn: EspressoFn) -> EspressoFn:
        if type_name in _TABLE:
            raise ValueError(f"espresso layer type {type_name!r} is registered twice")
        _TABLE[type_name] = (fn, frozenset(keys) | COMMON_KEYS)
        return fn

    return register


def supported_types() -> list[str]:
    """The espresso layer types mlc maps, sorted."""
    return sorted(_TABLE)


def _is_text(value: str) -> bool:
    """Whether a JSON string is text a protobuf string can hold (JSON's ``\\ud800`` escapes are not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """A JSON object's values, read with checks; ``where`` names it in messages."""

    def __init__(self, obj: dict, where: str):
        self.obj, self.where = obj, where

    def has(self, key: str) -> bool:
        return key in self.obj

    def int(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        """An integer (a JSON number with no fraction) of magnitude below 2**62."""
        value = self.obj.get(key, default)
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not -MAX_INT < value < MAX_INT:
            raise MLCIOError(f"{self.where}: {key} is {_show(value)}, not an integer below 2**62")
        if minimum is not None and value < minimum:
            raise MLCIOError(f"{self.where}: {key} is {value}, less than {minimum}")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        """A finite number that a protobuf ``float`` holds."""
        value = self.obj.get(key, default)
        try:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and abs(float(value)) <= FLOAT32_MAX
        except OverflowError:
            ok = False
        if not ok:
            raise MLCIOError(f"{self.where}: {key} is {_show(value)}, not a finite float32 number")
        return float(value)

    def flag(self, key: str) -> bool:
        return bool(self.only(key, (0, 1), 0))

    def only(self, key: str, allowed: tuple, default: Any = 0) -> Any:
        """The value of ``key`` (``default`` if absent), refused unless it is one of ``allowed``."""
        value = self.obj.get(key, default)
        if isinstance(value, bool):  # JSON true / false: 1 / 0
            value = int(value)
        if value not in allowed:
            raise MLCUnsupportedError(
                f"{self.where}: {key} = {_show(value)} is not a value mlc can map to a Core ML layer "
                f"(it maps {', '.join(repr(a) for a in allowed)}); the layer's meaning is unknown"
            )
        return value


class Layer(Fields):
    """One espresso layer's JSON object."""

    def __init__(self, obj: Any, index: int, where: str):
        if not isinstance(obj, dict):
            raise MLCIOError(f"{where}: layer {index} is {type(obj).__name__}, not a JSON object")
        name, kind = obj.get("name", f"layer{index}"), obj.get("type")
        if not isinstance(name, str) or not isinstance(kind, str):
            raise MLCIOError(f"{where}: layer {index} has no string name and type")
        if not _is_text(name) or not _is_text(kind):
            raise MLCIOError(f"{where}: layer {index}'s name or type {_show(name)} / {_show(kind)} holds a lone surrogate, not text")
        super().__init__(obj, f"{where}: layer {index} {name!r} (espresso type {kind!r})")
        self.name, self.type = name, kind
        self.bottoms = self._names("bottom")
        self.tops = self._names("top")
        if not self.tops:
            raise MLCIOError(f"{self.where}: the layer has no top (output) blob")

    def _names(self, key: str) -> list[str]:
        value = self.obj.get(key, "")
        if not isinstance(value, str):
            raise MLCIOError(f"{self.where}: {key} is {type(value).__name__}, not a comma-separated string of blob names")
        names = value.split(",") if value else []
        if any(not n for n in names):
            raise MLCIOError(f"{self.where}: {key} {value!r} holds an empty blob name")
        if not _is_text(value):
            raise MLCIOError(f"{self.where}: {key} {_show(value)} holds a lone surrogate, not text")
        return names

    def inputs(self, n: int | tuple[int, int]) -> None:
        low, high = (n, n) if isinstance(n, int) else n
        if not low <= len(self.bottoms) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise MLCIOError(f"{self.where}: the layer has {len(self.bottoms)} bottom (input) blobs, it takes {want}")

    def outputs(self, n: int = 1) -> None:
        if len(self.tops) != n:
            raise MLCIOError(f"{self.where}: the layer has {len(self.tops)} top (output) blobs, it makes {n}")


class Network:
    """What the layer functions build into: the proto layers, fresh blob names, the weights,
    the blob shapes from ``model.espresso.shape`` and the shape world (``nd``: rank-N)."""

    def __init__(self, weights: EspressoWeights | None, shapes: dict[str, tuple[int, ...]], nd: bool, blob_names: set[str]):
        self.weights = weights
        self.shapes = shapes
        self.nd = nd
        self.layers: list = []
        self._names = set(blob_names)
        self._layer_names: set[str] = set()
        self._nn = proto("NeuralNetwork")

    def fresh(self, base: str) -> str:
        """A blob name no layer uses yet."""
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def add(self, name: str, kind: str, inputs: list[str], outputs: list[str]):
        """Append a layer of oneof field ``kind``; return its parameters message."""
        layer = self._nn.NeuralNetworkLayer()
        base, i = name, 1
        while name in self._layer_names:
            name, i = f"{base}_{i}", i + 1
        self._layer_names.add(name)
        layer.name = name
        layer.input.extend(inputs)
        layer.output.extend(outputs)
        params = getattr(layer, kind)
        params.SetInParent()
        self.layers.append(layer)
        return params

    def check_shape(self, layer: Layer, expected: list[int]) -> None:
        """Refuse a layer whose output, by mlc's reading of it, has another shape than
        ``model.espresso.shape`` gives its top blob (-1: any size)."""
        declared = self.shapes.get(layer.tops[0])
        if declared is None:
            return
        if len(declared) != len(expected) or any(e not in (-1, d) for e, d in zip(expected, declared)):
            raise MLCUnsupportedError(
                f"{layer.where}: mlc's reading of the layer gives shape {tuple(expected)}, but model.espresso.shape "
                f"says {declared}; the layer's parameters mean something else"
            )

    def blob(self, layer: Layer, key: str, dtype: str, count: int, *, at_least: bool = False) -> np.ndarray:
        if self.weights is None:
            raise MLCIOError(f"{layer.where}: {key} names a weight blob, but the folder has no model.espresso.weights")
        return self.weights.array(layer.int(key), dtype, count, f"{layer.where}: {key}", at_least=at_least)

    def post_ops(self, layer: Layer, kind: str, inputs: list[str], ops: list[tuple[str, dict]]):
        """Add the layer's own params (``kind``) then its fused activations ``ops`` (ReLU /
        tanh), the last writing the layer's top blob; return the first layer's params."""
        top = layer.tops[0]
        chain = [self.fresh(layer.name)] if ops else []  # the blob named like the layer, as in the twins
        for op, _ in ops[:-1]:
            chain.append(self.fresh(f"{layer.name}__{op}"))
        params = self.add(layer.name, kind, inputs, [chain[0] if ops else top])
        for i, (op, values) in enumerate(ops):
            out = top if i == len(ops) - 1 else chain[i + 1]
            act = self.add(f"{layer.name}__{op}", "activation", [chain[i]], [out])
            getattr(act, op).SetInParent()
            for k, v in values.items():
                setattr(getattr(act, op), k, v)
        return params


def set_weights(wp, values: np.ndarray) -> None:
    """Store ``values`` in a ``WeightParams``: fp16 arrays as ``float16Value``, the rest as
    packed ``floatValue`` (written as its wire bytes, not element by element)."""
    if values.dtype == np.float16:
        wp.float16Value = values.astype("<f2").tobytes()
        return
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    n, varint = len(data), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        varint.append(byte | (0x80 if n else 0))
        if not n:
            break
    wp.MergeFromString(b"\x0a" + bytes(varint) + data)  # field 1 (floatValue), packed


def convert(obj: Any, index: int, network: Network, where: str, blobs: "BlobVersions | None" = None) -> None:
    """Map one espresso layer (its JSON object) into ``network``; ``blobs`` renames blobs
    written more than once."""
    layer = Layer(obj, index, where)
    if blobs is not None:
        blobs.rename(layer, network)
    entry = _TABLE.get(layer.type)
    if entry is None:
        raise MLCUnsupportedError(
            f"{layer.where}: espresso layer type {layer.type!r} is not supported by mlc "
            f"(supported: {', '.join(supported_types())})"
        )
    fn, keys = entry
    unknown = sorted(set(layer.obj) - keys)
    if unknown:
        raise MLCUnsupportedError(
            f"{layer.where}: parameter(s) {', '.join(unknown)} are unknown to mlc's mapping of {layer.type!r} layers; "
            "they may change what the layer computes"
        )
    extra = layer.obj.get("weights", {})
    if not isinstance(extra, dict):
        raise MLCIOError(f"{layer.where}: weights is {_show(extra)}, not an object")
    if extra:
        raise MLCUnsupportedError(
            f"{layer.where}: the layer holds quantized or extra weights ({', '.join(map(str, extra))[:80]}), "
            "whose layout mlc does not know"
        )
    attributes = layer.obj.get("attributes", {})
    if not isinstance(attributes, dict) or set(attributes) - {"is_output"}:
        raise MLCUnsupportedError(f"{layer.where}: attributes {attributes!r} are unknown to mlc")
    fn(layer, network)


def _fused(layer: Layer, relu_key: str, tanh_key: str) -> list[tuple[str, dict]]:
    ops = []
    if layer.flag(relu_key):
        ops.append(("ReLU", {}))
    if layer.flag(tanh_key):
        ops.append(("tanh", {}))
    if len(ops) > 1:
        raise MLCUnsupportedError(f"{layer.where}: both {relu_key} and {tanh_key} are set; their order is unknown")
    return ops


def _weights_key(layer: Layer) -> tuple[str, str]:
    keys = [k for k in ("blob_weights", "blob_weights_f16") if layer.has(k)]
    if len(keys) != 1:
        raise MLCIOError(f"{layer.where}: the layer names {len(keys)} of blob_weights / blob_weights_f16, it needs exactly one")
    return keys[0], "fp16" if keys[0].endswith("f16") else "fp32"


def _read_weights(layer: Layer, network: Network, count: int) -> np.ndarray:
    key, dtype = _weights_key(layer)
    values = network.blob(layer, key, dtype, count)
    return values.astype(np.float16) if dtype == "fp16" else values


# -- convolution ----------------------------------------------------------------------------------
CONV_KEYS = PAD_KEYS | {
    "C", "K", "Nx", "Ny", "n_groups", "n_parallel", "stride_x", "stride_y", "dilation_x", "dilation_y",
    "has_biases", "blob_biases", "blob_weights", "blob_weights_f16", "has_batch_norm", "fused_relu", "fused_tanh",
}


def _padding(layer: Layer, params) -> None:
    """``pad_mode`` -> the proto's padding.

    * 0: explicit ``pad_t/pad_b/pad_l/pad_r`` -> ``valid`` with those border amounts (twin:
      FindFour's padding layer + valid convolution).
    * 1: ``same``, ``BOTTOM_RIGHT_HEAVY`` (twin: FindFour's ``same {}``).
    * 2: ``valid`` (twin: the drawing classifiers' valid pooling; an inferred 1x1 convolution).
    * 4: ``same``, ``TOP_LEFT_HEAVY`` (twin: MNISTClassifier's convolutions).

    ``pad_fill_mode`` and ``pad_value`` must be 0 (zeros); their other values are unknown.
    """
    mode = layer.only("pad_mode", (0, 1, 2, 4), 0)
    layer.only("pad_fill_mode", (0,))
    layer.only("pad_value", (0, 0.0))
    pads = [layer.int(k, 0, minimum=0) for k in ("pad_t", "pad_b", "pad_l", "pad_r")]
    if mode in (1, 2, 4) and any(pads):
        raise MLCUnsupportedError(f"{layer.where}: pad_mode {mode} with explicit pads {pads}: how they combine is unknown")
    if mode in (0, 2):
        amounts = params.valid.paddingAmounts
        for start, end in ((pads[0], pads[1]), (pads[2], pads[3])):
            border = amounts.borderAmounts.add()
            border.startEdgeSize, border.endEdgeSize = start, end
    else:
        params.same.SetInParent()
        if mode == 4:
            params.same.asymmetryMode = proto("NeuralNetwork").SamePadding.TOP_LEFT_HEAVY


@espresso_layer("convolution", CONV_KEYS)
def convolution(layer: Layer, network: Network) -> None:
    """``convolution`` -> ``convolution`` (twin-checked, all three twins).

    ``C`` output channels, ``K`` input channels, ``n_groups``, kernel ``Ny`` x ``Nx`` (height x
    width), ``stride_y/x``, ``dilation_y/x`` (default 1). Weights: ``blob_weights`` (fp32) or
    ``blob_weights_f16`` (fp16, kept fp16 in ``float16Value``), ``[C, K/n_groups, Ny, Nx]``,
    the protobuf's own order; bias ``blob_biases``, ``C`` fp32 values. ``fused_relu`` /
    ``fused_tanh`` add a ReLU / tanh activation after. ``has_batch_norm`` 1 (a batch norm kept
    beside the weights) and ``n_parallel`` other than 1 are refused: their layouts are unknown.
    """
    layer.inputs(1)
    layer.outputs(1)
    layer.only("has_batch_norm", (0,))
    layer.only("n_parallel", (1,), 1)
    out_c, in_c, groups = layer.int("C", minimum=1), layer.int("K", minimum=1), layer.int("n_groups", 1, minimum=1)
    kw, kh = layer.int("Nx", minimum=1), layer.int("Ny", minimum=1)
    if in_c % groups or out_c % groups:
        raise MLCIOError(f"{layer.where}: n_groups {groups} does not divide the {in_c} input and {out_c} output channels")
    weights = _read_weights(layer, network, out_c * (in_c // groups) * kh * kw)
    params = network.post_ops(layer, "convolution", layer.bottoms, _fused(layer, "fused_relu", "fused_tanh"))
    params.outputChannels, params.kernelChannels, params.nGroups = out_c, in_c // groups, groups
    params.kernelSize.extend([kh, kw])
    params.stride.extend([layer.int("stride_y", 1, minimum=1), layer.int("stride_x", 1, minimum=1)])
    params.dilationFactor.extend([layer.int("dilation_y", 1, minimum=1), layer.int("dilation_x", 1, minimum=1)])
    _padding(layer, params)
    set_weights(params.weights, weights)
    if layer.flag("has_biases"):
        params.hasBias = True
        set_weights(params.bias, network.blob(layer, "blob_biases", "fp32", out_c))


# -- pooling ----------------------------------------------------------------------------------------
POOL_KEYS = PAD_KEYS | {
    "avg_or_max", "size_x", "size_y", "stride_x", "stride_y", "top_shape_style", "average_count_exclude_padding", "is_global",
}


@espresso_layer("pool", POOL_KEYS)
def pool(layer: Layer, network: Network) -> None:
    """``pool`` -> ``pooling`` (twin-checked: max pooling, ``pad_mode`` 2).

    ``avg_or_max`` 1: MAX (twin), 0: AVERAGE (inferred: a layer named ``.../Mean``);
    ``size_y/x``, ``stride_y/x``; ``average_count_exclude_padding`` -> ``avgPoolExcludePadding``;
    ``is_global`` 1 -> ``globalPooling``. ``top_shape_style`` must be 0 (floor: the ``valid``
    output size the twins declare); other styles (a ceil, ``includeLastPixel``?) are refused.
    """
    layer.inputs(1)
    layer.outputs(1)
    layer.only("top_shape_style", (0,))
    kind = layer.only("avg_or_max", (0, 1), None)
    params = network.add(layer.name, "pooling", layer.bottoms, layer.tops)
    pooling = proto("NeuralNetwork").PoolingLayerParams
    params.type = pooling.MAX if kind == 1 else pooling.AVERAGE
    params.kernelSize.extend([layer.int("size_y", 1, minimum=1), layer.int("size_x", 1, minimum=1)])
    params.stride.extend([layer.int("stride_y", 1, minimum=1), layer.int("stride_x", 1, minimum=1)])
    params.avgPoolExcludePadding = layer.flag("average_count_exclude_padding")
    params.globalPooling = layer.flag("is_global")
    _padding(layer, params)


# -- inner product --------------------------------------------------------------------------------
@espresso_layer("inner_product", {"nB", "nC", "blob_weights", "blob_weights_f16", "has_biases", "blob_biases", "has_relu", "has_tanh", "has_prelu"})
def inner_product(layer: Layer, network: Network) -> None:
    """``inner_product`` -> ``innerProduct`` (twin-checked: MNISTClassifier, drawing classifier).

    ``nB`` inputs, ``nC`` outputs; weights ``[nC, nB]`` (the protobuf's ``[out, in]``), fp32
    or fp16; ``blob_biases`` holds ``4 * nC`` fp32 values in the twins, the first ``nC`` the
    bias and the rest zero (a longer blob whose extra values are not zero is refused: their
    meaning is unknown). ``has_relu`` / ``has_tanh`` add an activation after; ``has_prelu`` 1
    is refused (its slope blob is unknown).
    """
    layer.inputs(1)
    layer.outputs(1)
    layer.only("has_prelu", (0,))
    n_in, n_out = layer.int("nB", minimum=1), layer.int("nC", minimum=1)
    weights = _read_weights(layer, network, n_in * n_out)
    params = network.post_ops(layer, "innerProduct", layer.bottoms, _fused(layer, "has_relu", "has_tanh"))
    params.inputChannels, params.outputChannels = n_in, n_out
    set_weights(params.weights, weights)
    if layer.flag("has_biases"):
        bias = network.blob(layer, "blob_biases", "fp32", n_out, at_least=True)
        if np.any(bias[n_out:]):
            raise MLCUnsupportedError(
                f"{layer.where}: blob_biases holds {bias.size} values for {n_out} outputs and the extra ones are not zero; "
                "their meaning is unknown"
            )
        params.hasBias = True
        set_weights(params.bias, bias[:n_out])


# -- activations and elementwise ------------------------------------------------------------------
@espresso_layer("activation", {"mode", "alpha", "beta"})
def activation(layer: Layer, network: Network) -> None:
    """``activation`` -> ``activation`` by ``mode``:

    * 0: ReLU (twin: the drawing classifier's last activation);
    * 3: sigmoid (inferred: two published espresso converters agree);
    * 6: linear ``alpha * x + beta`` (twin: FindFour's ``linear {alpha: -1}``).

    Other modes (tanh, leaky ReLU, ELU, ... whose numbers no twin shows) are refused.
    """
    layer.inputs(1)
    layer.outputs(1)
    mode = layer.only("mode", (0, 3, 6), None)
    params = network.add(layer.name, "activation", layer.bottoms, layer.tops)
    if mode == 0:
        params.ReLU.SetInParent()
    elif mode == 3:
        params.sigmoid.SetInParent()
    else:
        params.linear.alpha, params.linear.beta = layer.number("alpha", 1.0), layer.number("beta", 0.0)


@espresso_layer("elementwise", {"operation", "alpha", "beta", "fused_relu", "nd_mode"})
def elementwise(layer: Layer, network: Network) -> None:
    """``elementwise`` by ``operation`` (``fused_relu`` adds a ReLU after):

    * 25, one input: ``max(x, alpha)`` -> ``unary`` THRESHOLD (twin: FindFour's clip to 6,
      written as threshold(-x, -6));
    * 0, two or more inputs: sum -> ``add`` (``addBroadcastable`` with ``nd_mode``);
    * 1, two or more inputs: product -> ``multiply`` (``multiplyBroadcastable`` with ``nd_mode``);
    * 2, one input: ``x + alpha`` -> ``add`` with ``alpha``;
    * 3, one input: ``x * alpha`` -> ``multiply`` with ``alpha``;
    * 119, one input: ``clip(x, alpha, beta)`` -> ``clip``.

    0 to 3 and 119 are inferred from a published network (NeuralHash's hard-swish ``x *
    relu6(x + 3) / 6`` is written 2 (alpha 3), 119 (0, 6), 3 (alpha 1/6), 1) and two published
    converters; two-input forms need ``alpha`` 1 and ``beta`` 0 (how other values weigh the
    operands is unknown). Other operations are refused.
    """
    layer.outputs(1)
    op = layer.only("operation", (0, 1, 2, 3, 25, 119), None)
    alpha, beta = layer.number("alpha", 1.0), layer.number("beta", 0.0)
    nd = layer.flag("nd_mode")
    ops = _fused(layer, "fused_relu", "fused_tanh")
    if op in (0, 1):
        layer.inputs((2, 64))
        if alpha != 1.0 or beta != 0.0:
            raise MLCUnsupportedError(f"{layer.where}: operation {op} with alpha {alpha}, beta {beta}: how they weigh the inputs is unknown")
        kind = ("addBroadcastable" if nd else "add") if op == 0 else ("multiplyBroadcastable" if nd else "multiply")
        network.post_ops(layer, kind, layer.bottoms, ops)
        return
    layer.inputs(1)
    if op in (2, 3):
        params = network.post_ops(layer, "add" if op == 2 else "multiply", layer.bottoms, ops)
        params.alpha = alpha
    elif op == 25:
        params = network.post_ops(layer, "unary", layer.bottoms, ops)
        params.type = proto("NeuralNetwork").UnaryFunctionLayerParams.THRESHOLD
        params.alpha = alpha
        params.scale = 1.0
    else:
        params = network.post_ops(layer, "clip", layer.bottoms, ops)
        params.minVal, params.maxVal = alpha, beta


@espresso_layer("softmax", {"C"})
def softmax(layer: Layer, network: Network) -> None:
    """``softmax`` -> ``softmax`` over channels (twin: MNISTClassifier, FindFour; both write
    ``C`` 2, which may name the channel axis: other values are refused)."""
    layer.inputs(1)
    layer.outputs(1)
    layer.only("C", (2,), 2)
    network.add(layer.name, "softmax", layer.bottoms, layer.tops)


@espresso_layer("softmax_nd", {"nd_axis"})
def softmax_nd(layer: Layer, network: Network) -> None:
    """``softmax_nd`` -> ``softmaxND`` on axis ``nd_axis`` (inferred: a TensorFlow
    ``Softmax`` in a rank-N network, ``nd_axis`` -1)."""
    layer.inputs(1)
    layer.outputs(1)
    network.add(layer.name, "softmaxND", layer.bottoms, layer.tops).axis = layer.int("nd_axis", -1)


@espresso_layer("flatten", {"mode", "nd_axis"})
def flatten(layer: Layer, network: Network) -> None:
    """``flatten`` -> ``flatten``: ``mode`` 0 CHANNEL_FIRST (twin: MNISTClassifier), 1
    CHANNEL_LAST (twin: the drawing classifier); ``nd_axis`` must be 0."""
    layer.inputs(1)
    layer.outputs(1)
    mode = layer.only("mode", (0, 1), 0)
    layer.only("nd_axis", (0,), 0)
    flat = proto("NeuralNetwork").FlattenLayerParams
    params = network.add(layer.name, "flatten", layer.bottoms, layer.tops)
    params.mode = flat.CHANNEL_FIRST if mode == 0 else flat.CHANNEL_LAST


@espresso_layer("batchnorm", {"C", "blob_batchnorm_params", "training", "training_instancenorm", "training_eps", "training_momentum"})
def batchnorm(layer: Layer, network: Network) -> None:
    """``batchnorm`` with ``training`` and ``training_instancenorm`` 1 -> ``batchnorm`` with
    ``computeMeanVar`` and ``instanceNormalization`` (instance normalisation), ``epsilon``
    ``training_eps``. ``blob_batchnorm_params`` holds ``4 * C`` fp32 values interleaved per
    channel ``[gamma, beta, mean, variance]``; mean and variance are computed from the input.
    Inferred (NeuralHash's ``InstanceNorm`` layers; two published converters read the blob so),
    not checked against a twin. A batch norm with stored statistics is refused: its epsilon's key
    is unknown (``coremlc`` folds those into the convolution before it)."""
    layer.inputs(1)
    layer.outputs(1)
    layer.only("training", (1,), 0)
    layer.only("training_instancenorm", (1,), 0)
    channels = layer.int("C", minimum=1)
    values = network.blob(layer, "blob_batchnorm_params", "fp32", 4 * channels).reshape(channels, 4)
    params = network.add(layer.name, "batchnorm", layer.bottoms, layer.tops)
    params.channels, params.computeMeanVar, params.instanceNormalization = channels, True, True
    params.epsilon = layer.number("training_eps", 1e-5)
    set_weights(params.gamma, np.ascontiguousarray(values[:, 0]))
    set_weights(params.beta, np.ascontiguousarray(values[:, 1]))


# -- rank-N shape layers ------------------------------------------------------------------------
# Espresso names the axes of a blob (w, h, k, n, seq), innermost first; a rank-r blob of the
# rank-N world is the last r of (seq, n, k, h, w), as ``model.espresso.shape`` shows (a rank-2
# blob of shape (1, 32) is h 1, w 32).
ESPRESSO_AXES = ("w", "h", "k", "n", "seq")


def _nd_rank(layer: Layer, network: Network, blob: str) -> int:
    shape = network.shapes.get(blob)
    if not network.nd or shape is None:
        raise MLCUnsupportedError(
            f"{layer.where}: {layer.type!r} layers are mapped only in rank-N networks whose model.espresso.shape gives "
            f"the rank of {blob!r}"
        )
    return len(shape)


@espresso_layer("transpose", {"axis_w", "axis_h", "axis_k", "axis_n", "axis_seq"})
def transpose(layer: Layer, network: Network) -> None:
    """``transpose`` -> ``transpose`` (rank-N). ``axis_<a>`` names the input axis (0 w, 1 h,
    2 k, 3 n, 4 seq) that becomes output axis ``a``: inferred from a published network's
    NHWC -> NCHW transposes and its ``model.espresso.shape`` sizes (checked when built)."""
    layer.inputs(1)
    layer.outputs(1)
    rank = _nd_rank(layer, network, layer.bottoms[0])
    source = [layer.int(f"axis_{a}", i) for i, a in enumerate(ESPRESSO_AXES)]
    if sorted(source) != list(range(5)):
        raise MLCIOError(f"{layer.where}: axis_w..axis_seq {source} are not a permutation of 0..4")
    # nd axis j (0 outermost) of a rank-r blob is espresso axis r-1-j
    if any(source[e] != e for e in range(rank, 5)):
        raise MLCUnsupportedError(f"{layer.where}: the transpose moves an axis beyond the blob's rank {rank}")
    axes = [rank - 1 - source[rank - 1 - j] for j in range(rank)]
    shape = network.shapes[layer.bottoms[0]]
    network.check_shape(layer, [shape[a] for a in axes])
    network.add(layer.name, "transpose", layer.bottoms, layer.tops).axes.extend(axes)


@espresso_layer("reshape", {"dst_w", "dst_h", "dst_k", "dst_n", "dst_seq", "dst_nd_rank", "dynamic_shape", "mode", "version"})
def reshape(layer: Layer, network: Network) -> None:
    """``reshape`` with ``dst_nd_rank`` r -> ``reshapeStatic`` to the last r of (``dst_seq``,
    ``dst_n``, ``dst_k``, ``dst_h``, ``dst_w``) (rank-N; inferred from a published network's
    flatten, checked against ``model.espresso.shape`` when built). ``mode`` 0, ``version`` 1 and
    a static shape only."""
    layer.inputs(1)
    layer.outputs(1)
    layer.only("mode", (0,), 0)
    layer.only("version", (1,), 1)
    layer.only("dynamic_shape", (0,), 0)
    _nd_rank(layer, network, layer.bottoms[0])
    rank = layer.int("dst_nd_rank", minimum=1)
    if rank > 5:
        raise MLCIOError(f"{layer.where}: dst_nd_rank {rank} is more than espresso's 5 axes")
    dims = [layer.int(f"dst_{a}", 1, minimum=-1) for a in ("seq", "n", "k", "h", "w")][5 - rank :]
    if dims.count(-1) > 1 or 0 in dims:
        raise MLCIOError(f"{layer.where}: target shape {dims} has more than one -1 or a 0")
    network.check_shape(layer, dims)
    network.add(layer.name, "reshapeStatic", layer.bottoms, layer.tops).targetShape.extend(dims)


class BlobVersions:
    """Espresso may write a blob name more than once (a layer working in place); Core ML names
    each blob once. Every write but the last gets a fresh name, and each bottom reads the
    latest write before it, so the last write keeps the name (a declared output's)."""

    def __init__(self, layers: list, inputs: list[str]):
        self.writes: dict[str, int] = {}
        for obj in layers:
            top = obj.get("top") if isinstance(obj, dict) else None
            for name in top.split(",") if isinstance(top, str) and top else []:
                self.writes[name] = self.writes.get(name, 0) + 1
        self.inputs = set(inputs)
        self.seen: dict[str, int] = {}
        self.current: dict[str, str] = {}

    def rename(self, layer: Layer, network: Network) -> None:
        layer.bottoms = [self.current.get(b, b) for b in layer.bottoms]
        tops = []
        for name in layer.tops:
            self.seen[name] = self.seen.get(name, 0) + 1
            if self.seen[name] < self.writes[name] or name in self.inputs:
                self.current[name] = network.fresh(f"{name}__{self.seen[name]}")
            else:
                self.current[name] = name
            tops.append(self.current[name])
        layer.tops = tops


def convert_all(layers: Any, network: Network, where: str, inputs: list[str]) -> None:
    """Map every layer of ``model.espresso.net``'s ``layers`` list, in order."""
    if not isinstance(layers, list) or not layers:
        raise MLCIOError(f"{where}: 'layers' is not a non-empty list")
    blobs = BlobVersions(layers, inputs)
    for index, obj in enumerate(layers):
        convert(obj, index, network, where, blobs)


def layer_types(layers: Any) -> dict[str, int]:
    """How many layers of each espresso type ``layers`` holds (for messages and summaries)."""
    out: dict[str, int] = {}
    for obj in layers if isinstance(layers, list) else []:
        kind = obj.get("type") if isinstance(obj, dict) else None
        out[str(kind)] = out.get(str(kind), 0) + 1
    return out

