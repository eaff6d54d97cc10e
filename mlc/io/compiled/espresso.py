"""A compiled NeuralNetwork folder (espresso) -> the equivalent NeuralNetwork ``Model`` proto.

``coremlc`` compiles a ``neuralNetwork`` / ``neuralNetworkClassifier`` into::

    model.espresso.net      JSON: {"format_version": 200, "storage": "model.espresso.weights",
                            "transform_params": {input: image preprocessing}, "layers": [...]}
    model.espresso.shape    JSON: {"layer_shapes": {blob: {"n", "k", "h", "w"[, "_rank"]}}}
    model.espresso.weights  the weight blobs (``espresso_weights.py``)
    coremldata.bin          the description (``coremldata.py``) and, after it, a trailer
    model/coremldata.bin, neural_network_optionals/coremldata.bin, analytics/, metadata.json

``load_espresso`` rebuilds the ``Model``: the description from ``coremldata.bin`` (completed
from ``metadata.json`` when present), the model type from its format (500 ``neuralNetwork``,
403 ``neuralNetworkClassifier``), the layers from ``model.espresso.net``
(``espresso_layers.py``: each espresso layer type's mapping and where it was learnt), their
weights from ``model.espresso.weights``, image preprocessing from ``transform_params``, and
the shape world from ``model.espresso.shape`` (blobs with a ``_rank`` belong to a rank-N
network: ``EXACT_ARRAY_MAPPING`` / ``RANK4_IMAGE_MAPPING``; without, the rank-5 world).
mlc's NeuralNetwork front end then runs it unchanged.

Trailers after the description (uint64 little-endian; a string is its uint64 length then its
bytes), learnt from Apple's files:

* ``neuralNetwork`` (500): format, then a count and that many blob names (the network's
  outputs).
* ``neuralNetworkClassifier`` (403): format; the label type (101: int64 labels, each an int64;
  100: string labels, each a string — 100 is what a kNN stage's string labels use); the label
  count and the labels; the probability blob (``labelProbabilityLayerName``); then the output
  names as for 500.

What ``coremlc`` keeps only in forms mlc does not read: ``model/coremldata.bin`` repeats the
image preprocessing per input (six float records; ``transform_params`` is read instead) and
``neural_network_optionals/coremldata.bin`` is zero-filled in every file seen. A compiled
updatable network's training parameters are not recovered: the network loads for prediction.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from mlc._errors import MLCIOError, MLCUnsupportedError
from mlc.io.compiled import espresso_layers as EL
from mlc.io.compiled import espresso_shape_layers, espresso_spatial_layers  # noqa: F401  (they register their types in EL)
from mlc.io.compiled.coremldata import fill_description, parse_description, read_coremldata, read_metadata_json
from mlc.io.compiled.espresso_weights import EspressoWeights
from mlc.io.proto import proto
from mlc.io.loaded import inside

NET_FILE = "model.espresso.net"
SHAPE_FILE = "model.espresso.shape"
WEIGHTS_FILE = "model.espresso.weights"
MAX_JSON_BYTES = 256 << 20
FORMAT_VERSIONS = (200,)
NEURAL_NETWORK, NEURAL_NETWORK_CLASSIFIER = 500, 403
KINDS = {NEURAL_NETWORK: "neuralNetwork", NEURAL_NETWORK_CLASSIFIER: "neuralNetworkClassifier"}
INT64_LABELS, STRING_LABELS = 101, 100
MAX_LABELS = 1 << 24

__all__ = ["load_espresso", "is_espresso_folder"]


def is_espresso_folder(folder: str) -> bool:
    """Whether ``folder`` holds a compiled NeuralNetwork (a ``model.espresso.net``)."""
    return os.path.isfile(os.path.join(folder, NET_FILE))


def _json(path: str, where: str) -> Any:
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the read forever
        raise MLCIOError(f"{where}: not a regular file (a folder, FIFO or device), so not read")
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise MLCIOError(f"{where}: {size} bytes is larger than mlc reads ({MAX_JSON_BYTES} bytes)")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MLCIOError(f"{where}: cannot be read ({e.strerror or e})") from e
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise MLCIOError(f"{where}: not JSON ({e})") from e


class _Trailer:
    """Reads the bytes after a description: uint64s and length-prefixed strings, bounds-checked."""

    def __init__(self, data: bytes, where: str):
        self.data, self.at, self.where = data, 0, where

    def u64(self, what: str) -> int:
        if self.at + 8 > len(self.data):
            raise MLCIOError(f"{self.where}: the trailer after the description ends inside {what} (byte {self.at} of {len(self.data)})")
        (value,) = struct.unpack_from("<Q", self.data, self.at)
        self.at += 8
        return value

    def i64(self, what: str) -> int:
        value = self.u64(what)
        return value - (1 << 64) if value >= 1 << 63 else value

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        if n > len(self.data) - self.at:
            raise MLCIOError(f"{self.where}: {what} is {n} bytes from byte {self.at}, past the end of the trailer ({len(self.data)} bytes)")
        raw = self.data[self.at : self.at + n]
        self.at += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MLCIOError(f"{self.where}: {what} is not UTF-8 ({e})") from e

    def count(self, what: str, item_bytes: int) -> int:
        n = self.u64(what)
        if n > MAX_LABELS or n * item_bytes > len(self.data) - self.at:
            raise MLCIOError(f"{self.where}: {what} is {n}, more than the trailer's {len(self.data) - self.at} remaining bytes hold")
        return n

    def names(self) -> list[str]:
        return [self.string("an output name") for _ in range(self.count("the output count", 8))]

    def end(self) -> None:
        if self.at != len(self.data):
            raise MLCIOError(f"{self.where}: {len(self.data) - self.at} unexpected bytes after the trailer's last field")


def _trailer(header: dict, network, where: str) -> list[str]:
    """Read the trailer of a 500 / 403 ``coremldata.bin``; fill a classifier's labels; return
    the output names it lists."""
    t = _Trailer(header["trailer"], f"{where}/coremldata.bin")
    fmt = t.u64("the format")
    if fmt != header["format"]:
        raise MLCIOError(f"{t.where}: the trailer's format {fmt} differs from the header's {header['format']}")
    if header["format"] == NEURAL_NETWORK_CLASSIFIER:
        label_type = t.u64("the label type")
        if label_type == INT64_LABELS:
            n = t.count("the label count", 8)
            network.int64ClassLabels.vector.extend(t.i64("a label") for _ in range(n))
        elif label_type == STRING_LABELS:
            n = t.count("the label count", 8)
            network.stringClassLabels.vector.extend(t.string("a label") for _ in range(n))
        else:
            raise MLCUnsupportedError(f"{t.where}: class label type {label_type} is unknown to mlc (101: int64, 100: string)")
        network.labelProbabilityLayerName = t.string("the probability layer name")
    names = t.names()
    t.end()
    return names


def _shapes(folder: str, where: str) -> tuple[dict[str, tuple[int, ...]], bool]:
    """``model.espresso.shape``: blob -> shape (rank-N blobs: their ``_rank`` last axes of
    (seq, n, k, h, w)), and whether the network is rank-N (any blob has a ``_rank``)."""
    path = os.path.join(folder, SHAPE_FILE)
    if not os.path.isfile(path):
        return {}, False
    shape_where = f"{where}/{SHAPE_FILE}"
    value = _json(inside(folder, SHAPE_FILE, where), shape_where)
    table = value.get("layer_shapes") if isinstance(value, dict) else None
    if not isinstance(table, dict):
        raise MLCIOError(f"{shape_where}: no 'layer_shapes' object")
    shapes, nd = {}, False
    for name, dims in table.items():
        if not isinstance(dims, dict):
            raise MLCIOError(f"{shape_where}: the shape of {name!r} is not an object")
        values = []
        for axis in ("seq", "n", "k", "h", "w", "_rank"):
            v = dims.get(axis, 1 if axis != "_rank" else None)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise MLCIOError(f"{shape_where}: {name!r} has {axis} {v!r}, not a size")
            values.append(v)
        rank = values.pop()
        if rank is not None:
            nd = True
            if not 1 <= rank <= 5:
                raise MLCIOError(f"{shape_where}: {name!r} has rank {rank}, espresso blobs have 1 to 5 axes")
            shapes[name] = tuple(values[5 - rank :])
        else:
            shapes[name] = tuple(values[1:])
    return shapes, nd


def _preprocessing(network, description, transforms: Any, where: str) -> None:
    """``transform_params`` -> ``NeuralNetworkPreprocessing`` scalers, for image inputs.

    ``scale`` -> ``channelScale``; ``bias_r/g/b`` -> ``red/green/blueBias`` (twin: FindFour and
    MNISTClassifier's ``channelScale`` 1/255); a grayscale input's bias is ``bias_r`` when
    ``bias_r``, ``bias_g`` and ``bias_b`` agree (inferred: no twin has a non-zero gray bias).
    ``center_mean`` (a mean image), ``is_image_bgr`` and ``bias_a`` must be 0, and
    ``is_network_bgr`` must agree with the input's declared colour space. An identity transform
    (scale 1, no bias) adds nothing, as the twins without preprocessing show."""
    if transforms in (None, {}):
        return
    if not isinstance(transforms, dict):
        raise MLCIOError(f"{where}: transform_params is not an object")
    images = {f.name: f.type.imageType for f in description.input if f.type.WhichOneof("Type") == "imageType"}
    space = proto("FeatureTypes").ImageFeatureType
    for name, params in transforms.items():
        what = f"{where}: transform_params of {name!r}"
        if not isinstance(params, dict):
            raise MLCIOError(f"{what}: not an object")
        fields = EL.Fields(params, what)
        unknown = sorted(set(params) - {"scale", "bias_r", "bias_g", "bias_b", "bias_a", "center_mean", "is_network_bgr", "is_image_bgr"})
        if unknown:
            raise MLCUnsupportedError(f"{what}: key(s) {', '.join(unknown)} are unknown to mlc")
        scale = fields.number("scale", 1.0)
        r, g, b = (fields.number(f"bias_{c}", 0.0) for c in "rgb")
        fields.only("bias_a", (0,), 0)
        fields.only("center_mean", (0,), 0)
        fields.only("is_image_bgr", (0,), 0)
        network_bgr = fields.flag("is_network_bgr")
        if name not in images:
            if scale != 1.0 or r or g or b:
                raise MLCIOError(f"{what}: a transform for {name!r}, which is not an image input")
            continue
        color = images[name].colorSpace
        if network_bgr != (color == space.BGR):
            raise MLCUnsupportedError(
                f"{what}: is_network_bgr {int(network_bgr)} disagrees with the input's declared colour space "
                f"{space.ColorSpace.Name(color)}"
            )
        if scale == 1.0 and not (r or g or b):
            continue
        scaler = network.preprocessing.add()
        scaler.featureName = name
        scaler.scaler.channelScale = scale
        if color in (space.GRAYSCALE, space.GRAYSCALE_FLOAT16):
            if not r == g == b:
                raise MLCUnsupportedError(f"{what}: a grayscale input with red, green and blue biases {r}, {g}, {b}: which is its gray bias is unknown")
            scaler.scaler.grayBias = r
        else:
            scaler.scaler.redBias, scaler.scaler.greenBias, scaler.scaler.blueBias = r, g, b


def load_espresso(folder: str, where: str):
    """The NeuralNetwork ``Model`` proto equivalent to the compiled espresso folder ``folder``
    (``where`` names it in messages). Malformed files raise ``MLCIOError`` naming the file and
    field; a layer type, parameter or model type mlc cannot map raises ``MLCUnsupportedError``
    naming it and the layer."""
    folder = os.fspath(folder)
    net_where = f"{where}/{NET_FILE}"
    net = _json(inside(folder, NET_FILE, where), net_where)
    if not isinstance(net, dict):
        raise MLCIOError(f"{net_where}: not a JSON object")
    version = net.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise MLCUnsupportedError(f"{net_where}: format_version {version!r} is not one mlc reads ({', '.join(map(str, FORMAT_VERSIONS))})")

    header, payload = read_coremldata(inside(folder, "coremldata.bin", where), f"{where}/coremldata.bin")
    if header["full_model"]:
        raise MLCIOError(f"{where}/coremldata.bin: holds a whole Model ({header['kind']!r}), not a compiled NeuralNetwork's description")
    kind = KINDS.get(header["format"])
    if kind is None:
        raise MLCUnsupportedError(
            f"{where}/coremldata.bin: compiled NeuralNetwork format {header['format']} is not one mlc reads "
            f"({', '.join(f'{k}: {v}' for k, v in KINDS.items())})"
        )
    model = proto("Model").Model()
    if not 0 < header["specification_version"] < 1 << 31:
        raise MLCIOError(f"{where}/coremldata.bin: specification version {header['specification_version']} is not a Core ML version")
    model.specificationVersion = header["specification_version"]
    model.description.CopyFrom(parse_description(payload, f"{where}/coremldata.bin"))
    if os.path.isfile(os.path.join(folder, "metadata.json")):
        meta_where = f"{where}/metadata.json"
        fill_description(model.description, read_metadata_json(inside(folder, "metadata.json", where), meta_where), meta_where)
    network = getattr(model, kind)
    output_names = _trailer(header, network, where)

    shapes, nd = _shapes(folder, where)
    if nd:
        if model.specificationVersion < 4:
            raise MLCIOError(f"{where}/{SHAPE_FILE}: rank-N blob shapes in a specification version {model.specificationVersion} model (rank-N needs 4)")
        network.arrayInputShapeMapping = proto("NeuralNetwork").EXACT_ARRAY_MAPPING
        network.imageInputShapeMapping = proto("NeuralNetwork").RANK4_IMAGE_MAPPING
    _preprocessing(network, model.description, net.get("transform_params"), net_where)

    storage = net.get("storage", WEIGHTS_FILE)
    if not isinstance(storage, str) or not storage:
        raise MLCIOError(f"{net_where}: storage {storage!r} is not a file name")
    weights_path = inside(folder, storage, net_where)
    weights = EspressoWeights(weights_path, f"{where}/{storage}") if os.path.isfile(weights_path) else None

    inputs = [f.name for f in model.description.input]
    layers = net.get("layers")
    blob_names = set(inputs)
    for obj in layers if isinstance(layers, list) else []:
        if isinstance(obj, dict):
            for key in ("bottom", "top"):
                if isinstance(obj.get(key), str):
                    blob_names.update(obj[key].split(","))
    built = EL.Network(weights, shapes, nd, blob_names)
    EL.convert_all(layers, built, net_where, inputs)
    network.layers.extend(built.layers)
    _check_outputs(model, kind, built.layers, inputs, output_names, where)
    return model


def _check_outputs(model, kind: str, layers, inputs: list[str], trailer_names: list[str], where: str) -> None:
    """Every declared output (a classifier's label aside) and every output the trailer lists
    is made by a layer or is an input."""
    made = set(inputs)
    for layer in layers:
        made.update(layer.output)
    description = model.description
    wanted = [f.name for f in description.output]
    if kind == "neuralNetworkClassifier":
        wanted = [n for n in wanted if n != description.predictedFeatureName]
        probs = model.neuralNetworkClassifier.labelProbabilityLayerName
        if probs:
            wanted.append(probs)
    missing = [n for n in dict.fromkeys([*wanted, *trailer_names]) if n not in made]
    if missing:
        raise MLCIOError(f"{where}: output blob(s) {', '.join(map(repr, missing))} are made by no layer of {NET_FILE}")
