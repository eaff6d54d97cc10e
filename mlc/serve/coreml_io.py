"""Core ML features as protocol tensors: a request's tensors as ``predict`` inputs, ``predict``'s
outputs as tensors, and each feature's datatype and shape for the model's metadata.

The mapping, by the feature's kind in the model's description:

========================  =====================================  =================================
Core ML feature           request tensor                         response tensor
========================  =====================================  =================================
MultiArray                its dtype (FP32, FP16, FP64, INT32),   the same
                          a shape the description allows
Image                     BYTES [1]: an encoded image (PNG,      BYTES [1]: PNG
                          JPEG, ... anything PIL reads)
String                    BYTES [1], UTF-8                       BYTES [1]
Int64 / Double            INT64 [1] / FP64 [1]                   INT64 [1] / FP64 [1]
Dictionary                BYTES [1]: a JSON object               BYTES [1]: a JSON object
                                                                 (a classifier's probabilities)
Sequence                  INT64 [n] / BYTES [n]                  INT64 [n] / BYTES [n]
========================  =====================================  =================================

A classifier's label output is its String or Int64 feature. Flexible dimensions (a range, or
enumerated shapes that differ there) are ``-1`` in the metadata.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

from mlc import features as F
from mlc.serve import datatypes
from mlc.serve.errors import BadRequest
from mlc.serve.tensors import Tensor, as_bytes

_SCALAR_TYPES = {"int64": "INT64", "double": "FP64"}


# -- metadata --------------------------------------------------------------------------------


def metadata_datatype(feature: F.Feature) -> str:
    if feature.kind == "multiArray":
        return datatypes.datatype_of(feature.dtype or np.float32)
    if feature.kind in _SCALAR_TYPES:
        return _SCALAR_TYPES[feature.kind]
    if feature.kind == "sequence" and feature.key_kind == "int64":
        return "INT64"
    return datatypes.BYTES


def metadata_shape(feature: F.Feature) -> list[int]:
    if feature.kind == "multiArray":
        return _array_shape(feature)
    if feature.kind == "sequence":
        return [-1]
    return [1]


def _array_shape(feature: F.Feature) -> list[int]:
    if feature.shape_ranges:
        return [lo if lo == hi else -1 for lo, hi in feature.shape_ranges]
    if feature.enumerated_shapes:
        shapes = feature.enumerated_shapes
        if len({len(s) for s in shapes}) > 1:
            return [-1]
        return [dims[0] if len(set(dims)) == 1 else -1 for dims in zip(*shapes)]
    if feature.shape:
        return list(feature.shape)
    return [-1]


def tensor_metadata(feature: F.Feature) -> dict:
    return {"name": feature.name, "datatype": metadata_datatype(feature), "shape": metadata_shape(feature)}


# -- requests --------------------------------------------------------------------------------


def predict_inputs(tensors: list[Tensor], description: F.FeatureDescriptions, model: str) -> dict[str, Any]:
    """The request's tensors as ``predict``'s inputs, by the model's input description: names,
    datatypes and element counts checked here, shapes by mlc's own input checks."""
    out: dict[str, Any] = {}
    for tensor in tensors:
        where = f"model {model!r}: input {tensor.name!r}"
        feature = description.get(tensor.name)
        if feature is None:
            raise BadRequest(f"{where}: the model has no such input; its inputs are {list(description)}")
        if tensor.name in out:
            raise BadRequest(f"{where}: given twice")
        out[tensor.name] = _feature_value(tensor, feature, where)
    missing = [n for n, f in description.items() if n not in out and not f.optional]
    if missing:
        raise BadRequest(f"model {model!r}: missing input {missing[0]!r} ({description[missing[0]].type_string()})")
    return out


def _expect(tensor: Tensor, datatype: str, where: str, count: int | None = 1) -> None:
    if tensor.datatype != datatype:
        raise BadRequest(f"{where}: expects datatype {datatype}, got {tensor.datatype}")
    if count is not None and math.prod(tensor.shape) != count:
        raise BadRequest(f"{where}: expects {count} element(s), got shape {list(tensor.shape)}")


def _feature_value(tensor: Tensor, feature: F.Feature, where: str) -> Any:
    kind = feature.kind
    if kind == "multiArray":
        _expect(tensor, metadata_datatype(feature), where, count=None)
        return tensor.data
    if kind in _SCALAR_TYPES:
        _expect(tensor, _SCALAR_TYPES[kind], where)
        return tensor.data.reshape(-1)[0].item()
    if kind == "image":
        _expect(tensor, datatypes.BYTES, where)
        return decode_image(tensor.data.reshape(-1)[0], where)
    if kind == "string":
        _expect(tensor, datatypes.BYTES, where)
        return _text(tensor.data.reshape(-1)[0], where)
    if kind == "dictionary":
        _expect(tensor, datatypes.BYTES, where)
        value = _json(tensor.data.reshape(-1)[0], where)
        if not isinstance(value, dict):
            raise BadRequest(f"{where}: a Dictionary input is a JSON object, got {type(value).__name__}")
        return value
    if kind == "sequence":
        if feature.key_kind == "int64":
            _expect(tensor, "INT64", where, count=None)
            return [int(v) for v in tensor.data.reshape(-1)]
        _expect(tensor, datatypes.BYTES, where, count=None)
        return [_text(v, where) for v in tensor.data.reshape(-1)]
    raise BadRequest(f"{where}: inputs of kind {kind!r} cannot be served")


def decode_image(data: bytes, where: str):
    """An encoded image (any format PIL reads) as a PIL image, fully decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(as_bytes(data)))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadRequest(f"{where}: the bytes are not an image PIL can read ({e})") from None
    return image


def _text(data: Any, where: str) -> str:
    try:
        return as_bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"{where}: not UTF-8 text ({e})") from None


def _json(data: Any, where: str) -> Any:
    try:
        return json.loads(_text(data, where))
    except json.JSONDecodeError as e:
        raise BadRequest(f"{where}: not JSON ({e})") from None


# -- responses -------------------------------------------------------------------------------


def output_tensor(name: str, value: Any, feature: F.Feature | None) -> Tensor:
    """One of ``predict``'s outputs as a tensor."""
    kind = feature.kind if feature is not None else None
    if kind == "image" or _is_pil(value):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return _bytes_tensor(name, [buf.getvalue()])
    if isinstance(value, dict):
        return _bytes_tensor(name, [json.dumps({str(k): float(v) for k, v in value.items()}).encode()])
    if isinstance(value, str):
        return _bytes_tensor(name, [value.encode("utf-8")])
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return _bytes_tensor(name, [v.encode("utf-8") for v in value])
        arr = np.asarray(value, dtype=np.int64 if kind == "sequence" else None)
        return Tensor(name, datatypes.datatype_of(arr.dtype), arr.shape, arr)
    if kind in _SCALAR_TYPES or np.ndim(value) == 0:
        dtype = {"int64": np.int64, "double": np.float64}.get(kind)
        arr = np.asarray([value], dtype=dtype)
        return Tensor(name, datatypes.datatype_of(arr.dtype), (1,), arr)
    arr = np.asarray(value)
    return Tensor(name, datatypes.datatype_of(arr.dtype), arr.shape, arr)


def _bytes_tensor(name: str, elements: list[bytes]) -> Tensor:
    data = np.empty(len(elements), dtype=object)
    data[:] = elements
    return Tensor(name, datatypes.BYTES, (len(elements),), data)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")
