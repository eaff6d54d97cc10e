"""``coremldata.bin`` and ``metadata.json``: the description of a compiled ``.mlmodelc`` folder.

``coremlc`` writes a ``coremldata.bin`` at the root of every compiled folder (and of each
pipeline stage, ``model0/``, ``model1/``, ...). Its layout, learnt from Apple's files (all
integers little-endian)::

    offset  size  field
    0x00    4     format   uint32 (500 / 403: NeuralNetwork, 502: ML Program, 200: pipeline,
                            400 / 404 / 2000 / 2002: other model types; a per-writer version)
    0x04    8     field_a  uint64 (5 for ML Programs, 1 otherwise)
    0x0C    8     field_b  uint64 (0..3)
    0x14    8     field_c  uint64 (0 or 1)
    0x1C    8     n        uint64, the length of ``kind``
    0x24    n     kind     ASCII: "generic" (a ``ModelDescription`` follows), "spec" (a whole
                            ``Model`` follows), "notreesyet" (a kNN stage), or for a pipeline
                            its stages' kinds ("generic.model0v1.0.0spec.model1v1.0.0spec")
    +0      8     specification_version  uint64 (the model's ``specificationVersion``)
    +8      24    reserved (three uint64, zero in every file seen)
    +32           the payload:
                   kind "spec": a protobuf ``Model``, to the end of the file;
                   otherwise: uint64 length, then that many bytes of protobuf
                   ``ModelDescription``, then a trailer (16 bytes for ML Programs: the format
                   again as uint64 and a zero uint64; NeuralNetwork and kNN stages keep
                   layer or label data there)

Every offset and length is checked against the file before anything is read.

``metadata.json`` (beside it in ML Program and most other folders) is a one-element JSON list:
the description as Xcode shows it (``inputSchema``, ``outputSchema``, ``stateSchema`` with
``dataType``, ``shape``, ``shapeRange``, image sizes and colour spaces; ``author``,
``license``, ``version``, ``shortDescription``, ``userDefinedMetadata``, ``classLabels``).
``description_from_metadata`` builds a ``ModelDescription`` from it for folders without a
usable ``coremldata.bin``; ``fill_description`` adds what a ``coremldata.bin`` description
lacks.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from mlc._errors import MLCIOError
from mlc.io.proto import proto

MAX_COREMLDATA_BYTES = 2 << 30  # protobuf's own limit on one message
MAX_METADATA_BYTES = 64 << 20
FIXED_HEADER_SIZE = 0x24  # format, field_a..c, the length of ``kind``
FULL_MODEL_KIND = "spec"
ML_PROGRAM_FORMAT = 502

__all__ = [
    "read_coremldata",
    "parse_description",
    "parse_model",
    "read_metadata_json",
    "description_from_metadata",
    "fill_description",
]


def _read_bytes(path: str, limit: int, what: str) -> bytes:
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the read forever
        raise MLCIOError(f"{what}: not a regular file (a folder, FIFO or device), so not read")
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise MLCIOError(f"{what}: {size} bytes is larger than any such file can be ({limit} bytes)")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MLCIOError(f"{what}: cannot be read ({e.strerror or e})") from e


def _u64(data: bytes, offset: int, field: str, where: str) -> int:
    if offset + 8 > len(data):
        raise MLCIOError(f"{where}: the file ends at byte {len(data)}, inside its header's {field} (bytes {offset}..{offset + 8})")
    return struct.unpack_from("<Q", data, offset)[0]


def read_coremldata(path: str | os.PathLike, where: str | None = None) -> tuple[dict[str, Any], bytes]:
    """Read a ``coremldata.bin``; return ``(header, payload)``.

    ``header`` holds ``format``, ``fields`` (field_a, field_b, field_c), ``kind``,
    ``specification_version``, ``reserved``, ``full_model`` (True when the payload is a whole
    ``Model``), ``payload_offset``, ``payload_length`` and ``trailer`` (the bytes after a
    ``ModelDescription`` payload). ``payload`` is the protobuf's bytes, unparsed: hand it to
    ``parse_model`` when ``header["full_model"]``, else to ``parse_description``.
    """
    path = os.fspath(path)
    where = where or path
    data = _read_bytes(path, MAX_COREMLDATA_BYTES, where)
    if len(data) < FIXED_HEADER_SIZE:
        raise MLCIOError(
            f"{where}: {len(data)} bytes is shorter than a coremldata.bin header ({FIXED_HEADER_SIZE} bytes); not a compiled model's description"
        )
    (fmt,) = struct.unpack_from("<I", data, 0)
    fields = struct.unpack_from("<3Q", data, 4)
    kind_length = _u64(data, 0x1C, "kind length", where)
    kind_end = FIXED_HEADER_SIZE + kind_length
    if kind_end > len(data):
        raise MLCIOError(f"{where}: the header's kind string of {kind_length} bytes runs past the end of the file ({len(data)} bytes)")
    raw_kind = data[FIXED_HEADER_SIZE:kind_end]
    try:
        kind = raw_kind.decode("ascii")
    except UnicodeDecodeError as e:
        raise MLCIOError(f"{where}: the header's kind string {raw_kind[:40]!r} is not ASCII; not a coremldata.bin") from e
    if not kind or not kind.isprintable():
        raise MLCIOError(f"{where}: the header's kind string {raw_kind[:40]!r} is empty or unprintable; not a coremldata.bin")
    version = _u64(data, kind_end, "specification version", where)
    reserved = tuple(_u64(data, kind_end + 8 * (i + 1), "reserved words", where) for i in range(3))
    offset = kind_end + 32
    header: dict[str, Any] = {
        "format": fmt,
        "fields": fields,
        "kind": kind,
        "specification_version": version,
        "reserved": reserved,
        "full_model": kind == FULL_MODEL_KIND,
    }
    if header["full_model"]:
        if offset >= len(data):
            raise MLCIOError(f"{where}: the header ends at byte {offset} and no Model follows it")
        header.update(payload_offset=offset, payload_length=len(data) - offset, trailer=b"")
        return header, data[offset:]
    length = _u64(data, offset, "payload length", where)
    start = offset + 8
    if length > len(data) - start:
        raise MLCIOError(
            f"{where}: the header says the description is {length} bytes from byte {start}, "
            f"but the file ends at byte {len(data)}"
        )
    header.update(payload_offset=start, payload_length=length, trailer=data[start + length :])
    return header, data[start : start + length]


def _parse(message, payload: bytes, what: str, where: str):
    try:
        message.ParseFromString(payload)
    except Exception as e:  # protobuf raises DecodeError or RuntimeError depending on backend
        raise MLCIOError(f"{where}: the {what} in coremldata.bin does not parse as protobuf ({e})") from e
    return message


def parse_description(payload: bytes, where: str):
    """The ``ModelDescription`` protobuf in a ``coremldata.bin`` payload."""
    if not payload:
        raise MLCIOError(f"{where}: coremldata.bin holds an empty model description")
    return _parse(proto("Model").ModelDescription(), payload, "model description", where)


def parse_model(payload: bytes, where: str):
    """The ``Model`` protobuf in a ``coremldata.bin`` payload whose kind is ``spec``."""
    model = _parse(proto("Model").Model(), payload, "model", where)
    if model.WhichOneof("Type") is None:
        raise MLCIOError(f"{where}: the Model in coremldata.bin has no model type")
    return model


# -- metadata.json ------------------------------------------------------------------------


def read_metadata_json(path: str | os.PathLike, where: str | None = None) -> dict[str, Any]:
    """The one JSON object in a compiled folder's ``metadata.json`` (a list of one object)."""
    path = os.fspath(path)
    where = where or path
    data = _read_bytes(path, MAX_METADATA_BYTES, where)
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise MLCIOError(f"{where}: not JSON ({e})") from e
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise MLCIOError(f"{where}: expected a JSON list holding one object (the model's metadata)")
    return value


_ARRAY_DTYPES = {
    "float32": "FLOAT32",
    "float16": "FLOAT16",
    "float64": "DOUBLE",
    "double": "DOUBLE",
    "int32": "INT32",
    "int8": "INT8",
}
_COLOR_SPACES = {"rgb": "RGB", "bgr": "BGR", "grayscale": "GRAYSCALE", "grayscalefloat16": "GRAYSCALE_FLOAT16"}


def _text(entry: dict, key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise MLCIOError(f"{where}: {key!r} is {type(value).__name__}, not a string")
    return _utf8(str(value), key, where)


def _utf8(text: str, key: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MLCIOError(f"{where}: {key!r} holds a lone surrogate, not text ({e})") from e
    return text


def _int_list(text: Any, key: str, where: str, depth: int = 1) -> list:
    """``"[1, 576]"`` (or ``"[[1, 1], [1, 2048]]"`` with ``depth=2``) as a list of ints."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError as e:
        raise MLCIOError(f"{where}: {key} {text!r} is not a list of integers") from e

    def check(v, d):
        if d == 0:
            if not isinstance(v, int) or isinstance(v, bool) or not -1 <= v <= 1 << 62:
                raise MLCIOError(f"{where}: {key} {text!r} holds {v!r}, not a dimension")
            return v
        if not isinstance(v, list):
            raise MLCIOError(f"{where}: {key} {text!r} is not a list of integers")
        return [check(x, d - 1) for x in v]

    return check(value, depth)


def _feature(entry: Any, feature, where: str) -> None:
    """Fill a ``FeatureDescription`` from one metadata.json schema entry."""
    if not isinstance(entry, dict):
        raise MLCIOError(f"{where}: a schema entry is {type(entry).__name__}, not an object")
    feature.name = _text(entry, "name", where)
    where = f"{where}: feature {feature.name!r}"
    if not feature.name:
        raise MLCIOError(f"{where}: a schema entry has no name")
    feature.shortDescription = _text(entry, "shortDescription", where)
    kind = _text(entry, "type", where)
    ft = feature.type
    ft.isOptional = _text(entry, "isOptional", where) == "1"
    if kind in ("MultiArray", "State"):
        array = ft.multiArrayType if kind == "MultiArray" else ft.stateType.arrayType
        _array(entry, array, where)
    elif kind == "Image":
        image = ft.imageType
        try:
            image.width, image.height = int(_text(entry, "width", where)), int(_text(entry, "height", where))
        except ValueError as e:
            raise MLCIOError(f"{where}: image width/height are not integers") from e
        space = _text(entry, "colorspace", where).replace(" ", "").lower()
        if space not in _COLOR_SPACES:
            raise MLCIOError(f"{where}: image colour space {space!r} is not one of {sorted(_COLOR_SPACES)}")
        image.colorSpace = proto("FeatureTypes").ImageFeatureType.ColorSpace.Value(_COLOR_SPACES[space])
    elif kind == "String":
        ft.stringType.SetInParent()
    elif kind == "Int64":
        ft.int64Type.SetInParent()
    elif kind == "Double":
        ft.doubleType.SetInParent()
    elif kind == "Dictionary":
        key = _text(entry, "keyType", where)
        if key == "String":
            ft.dictionaryType.stringKeyType.SetInParent()
        elif key == "Int64":
            ft.dictionaryType.int64KeyType.SetInParent()
        else:
            raise MLCIOError(f"{where}: dictionary key type {key!r} is neither String nor Int64")
    else:
        raise MLCIOError(f"{where}: feature type {kind!r} is not one mlc reads from metadata.json")


def _array(entry: dict, array, where: str) -> None:
    dtype = _text(entry, "dataType", where)
    if dtype.lower() not in _ARRAY_DTYPES:
        raise MLCIOError(f"{where}: multiarray data type {dtype!r} is not one of Float32, Float16, Double, Int32, Int8")
    array.dataType = proto("FeatureTypes").ArrayFeatureType.ArrayDataType.Value(_ARRAY_DTYPES[dtype.lower()])
    shape = _int_list(entry.get("shape", "[]"), "shape", where)
    array.shape.extend(shape)
    if _text(entry, "hasShapeFlexibility", where) == "1" and "shapeRange" in entry:
        ranges = _int_list(entry["shapeRange"], "shapeRange", where, depth=2)
        if len(ranges) != len(shape) or any(len(r) != 2 for r in ranges):
            raise MLCIOError(f"{where}: shapeRange {entry['shapeRange']!r} does not give [lower, upper] per dimension")
        for lower, upper in ranges:
            size_range = array.shapeRange.sizeRanges.add()
            size_range.lowerBound, size_range.upperBound = lower, upper


def _schema(meta: dict, key: str, where: str) -> list:
    schema = meta.get(key, [])
    if not isinstance(schema, list):
        raise MLCIOError(f"{where}: {key} is {type(schema).__name__}, not a list")
    return schema


def _fill_metadata(description, meta: dict, where: str) -> None:
    md = description.metadata
    if not md.shortDescription:
        md.shortDescription = _text(meta, "shortDescription", where)
    if not md.author:
        md.author = _text(meta, "author", where)
    if not md.license:
        md.license = _text(meta, "license", where)
    if not md.versionString:
        md.versionString = _text(meta, "version", where)
    user = meta.get("userDefinedMetadata", {})
    if not isinstance(user, dict):
        raise MLCIOError(f"{where}: userDefinedMetadata is not an object")
    for k, v in user.items():
        key = _utf8(str(k), "userDefinedMetadata", where)
        if key not in md.userDefined:
            md.userDefined[key] = _utf8(str(v), f"userDefinedMetadata[{key!r}]", where)


def description_from_metadata(meta: dict[str, Any], where: str):
    """A ``ModelDescription`` built from ``metadata.json`` alone (inputs, outputs, states,
    flexible shape ranges, metadata)."""
    description = proto("Model").ModelDescription()
    for key, field in (("inputSchema", description.input), ("outputSchema", description.output), ("stateSchema", description.state)):
        for entry in _schema(meta, key, where):
            _feature(entry, field.add(), f"{where}: {key}")
    _fill_metadata(description, meta, where)
    return description


def fill_description(description, meta: dict[str, Any], where: str) -> None:
    """Add to ``description`` (from ``coremldata.bin``) what only ``metadata.json`` holds:
    metadata fields it leaves empty, and features it does not list."""
    _fill_metadata(description, meta, where)
    for key, field in (("inputSchema", description.input), ("outputSchema", description.output), ("stateSchema", description.state)):
        names = {f.name for f in field}
        for entry in _schema(meta, key, where):
            if isinstance(entry, dict) and not (isinstance(entry.get("name"), str) and entry["name"] in names):
                _feature(entry, field.add(), f"{where}: {key}")  # a name that is not a string is refused there
