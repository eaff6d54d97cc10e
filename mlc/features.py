"""Features at the model boundary: descriptions, input checks and conversion, outputs.

Follows ``FeatureTypes.proto``: multiarrays have a declared dtype and a default shape, plus
optionally ``enumeratedShapes`` or ``shapeRange`` (``upperBound == -1`` is unbounded); images
have a width, height, color space (RGB, BGR, GRAYSCALE, GRAYSCALE_FLOAT16) and optionally
enumerated sizes or a size range. Image inputs reach the program as float32 ``(1, C, H, W)``
in the declared channel order; any scale/bias lives in the program (ML Program) or in the
spec's preprocessing (NeuralNetwork).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlc._errors import MLCFeatureTypeError, MLCParametersError

ARRAY_DTYPES = {
    65568: np.dtype(np.float32),  # FLOAT32
    65600: np.dtype(np.float64),  # DOUBLE
    131104: np.dtype(np.int32),  # INT32
    131080: np.dtype(np.int8),  # INT8
    65552: np.dtype(np.float16),  # FLOAT16
}
COLOR_SPACES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}
PIL_MODES = {"GRAYSCALE": "L", "RGB": "RGB", "BGR": "RGB", "GRAYSCALE_FLOAT16": "F"}


@dataclasses.dataclass
class Feature:
    """One input or output as the model's description declares it."""

    name: str
    kind: str  # multiArray, image, int64, double, string, dictionary, sequence, state
    short_description: str = ""
    optional: bool = False
    dtype: np.dtype | None = None  # multiArray element type
    shape: tuple[int, ...] = ()  # multiArray default shape, image (H, W)
    shape_ranges: tuple[tuple[int, int], ...] | None = None  # per dim (lower, upper or -1)
    enumerated_shapes: tuple[tuple[int, ...], ...] | None = None
    color_space: str | None = None  # images
    key_kind: str | None = None  # dictionaries: "int64" or "string"; sequences: the element kind
    size_range: tuple[int, int] | None = None  # sequences: (lower, upper or -1)
    rank5_mapped: bool = False  # NeuralNetwork rank-5 input mapping: [Seq, Batch, C, H, W] also accepted
    reshapes: bool = False  # classic models: any shape with the declared number of elements is accepted

    def type_string(self) -> str:
        if self.kind == "multiArray":
            dtype = self.dtype.name if self.dtype is not None else "?"
            shape = "x".join(str(d) for d in self.shape) if self.shape else "flexible"
            extra = ""
            if self.shape_ranges:
                extra = " range " + "x".join(f"[{lo},{'inf' if hi < 0 else hi}]" for lo, hi in self.shape_ranges)
            elif self.enumerated_shapes:
                extra = " one of " + ", ".join("x".join(map(str, s)) for s in self.enumerated_shapes)
            return f"MultiArray ({dtype} {shape}{extra})"
        if self.kind == "image":
            h, w = self.shape
            extra = ""
            if self.shape_ranges:
                (hl, hh), (wl, wh) = self.shape_ranges
                extra = f", width in [{wl},{'inf' if wh < 0 else wh}], height in [{hl},{'inf' if hh < 0 else hh}]"
            elif self.enumerated_shapes:
                extra = ", sizes " + ", ".join(f"{w_}x{h_}" for h_, w_ in self.enumerated_shapes)
            return f"Image ({self.color_space} {w}x{h}{extra})"
        if self.kind == "dictionary":
            return f"Dictionary ({self.key_kind} -> double)"
        if self.kind == "sequence":
            return f"Sequence ({self.key_kind})"
        return self.kind.capitalize() if self.kind != "int64" else "Int64"

    def __str__(self) -> str:
        desc = f" ({self.short_description})" if self.short_description else ""
        return f"{self.name}: {self.type_string()}{desc}"


def feature_from_proto(fd) -> Feature:
    t = fd.type
    kind = t.WhichOneof("Type")
    f = Feature(fd.name, kind or "unknown", fd.shortDescription, bool(t.isOptional))
    if kind == "multiArrayType":
        a = t.multiArrayType
        f.kind = "multiArray"
        f.dtype = ARRAY_DTYPES.get(a.dataType)
        f.shape = tuple(int(d) for d in a.shape)
        flex = a.WhichOneof("ShapeFlexibility")
        if flex == "shapeRange":
            f.shape_ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in a.shapeRange.sizeRanges)
        elif flex == "enumeratedShapes":
            f.enumerated_shapes = tuple(tuple(int(d) for d in s.shape) for s in a.enumeratedShapes.shapes)
    elif kind == "imageType":
        im = t.imageType
        f.kind = "image"
        f.shape = (int(im.height), int(im.width))
        f.color_space = COLOR_SPACES.get(im.colorSpace, "RGB")
        flex = im.WhichOneof("SizeFlexibility")
        if flex == "imageSizeRange":
            r = im.imageSizeRange
            f.shape_ranges = (
                (int(r.heightRange.lowerBound), int(r.heightRange.upperBound)),
                (int(r.widthRange.lowerBound), int(r.widthRange.upperBound)),
            )
        elif flex == "enumeratedSizes":
            f.enumerated_shapes = tuple((int(s.height), int(s.width)) for s in im.enumeratedSizes.sizes)
    elif kind == "int64Type":
        f.kind = "int64"
    elif kind == "doubleType":
        f.kind = "double"
    elif kind == "stringType":
        f.kind = "string"
    elif kind == "dictionaryType":
        f.kind = "dictionary"
        f.key_kind = "int64" if t.dictionaryType.WhichOneof("KeyType") == "int64KeyType" else "string"
    elif kind == "sequenceType":
        f.kind = "sequence"
        seq = t.sequenceType
        f.key_kind = "string" if seq.WhichOneof("Type") == "stringType" else "int64"
        if seq.HasField("sizeRange"):
            f.size_range = (int(seq.sizeRange.lowerBound), int(seq.sizeRange.upperBound))
    elif kind == "stateType":
        f.kind = "state"
        f.dtype = ARRAY_DTYPES.get(t.stateType.arrayType.dataType)
        f.shape = tuple(int(d) for d in t.stateType.arrayType.shape)
    return f


def feature_to_json(f: Feature) -> dict:
    """``f`` as plain JSON values (for compiled ``.mlc`` models, which carry no protobuf)."""
    out = {}
    for field in dataclasses.fields(Feature):
        value = getattr(f, field.name)
        if field.name == "dtype":
            value = None if value is None else np.dtype(value).name
        elif isinstance(value, tuple):
            value = json_lists(value)
        out[field.name] = value
    return out


def json_lists(value):
    return [json_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def feature_from_json(d: dict, where: str) -> Feature:
    """The inverse of ``feature_to_json``; a malformed entry raises ``MLCFeatureTypeError``."""
    names = {field.name for field in dataclasses.fields(Feature)}
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("kind"), str) or set(d) - names:
        raise MLCFeatureTypeError(f"{where}: not a feature description: {d!r}"[:300])
    try:
        kwargs = dict(d)
        if kwargs.get("dtype") is not None:
            kwargs["dtype"] = np.dtype(kwargs["dtype"])
        for key in ("shape", "shape_ranges", "enumerated_shapes", "size_range"):
            if kwargs.get(key) is not None:
                kwargs[key] = _tuples(kwargs[key])
        return Feature(**kwargs)
    except (TypeError, ValueError) as e:
        raise MLCFeatureTypeError(f"{where}: feature {d.get('name')!r} is malformed: {e}") from e


def _tuples(value):
    if not isinstance(value, list):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected integers or lists of them, got {value!r}")
    return tuple(_tuples(v) for v in value)


class FeatureDescriptions(dict):
    """Name -> ``Feature``, in declaration order, printed one per line (like coremltools)."""

    @classmethod
    def from_proto(cls, descriptions) -> "FeatureDescriptions":
        """From repeated ``FeatureDescription`` messages (a description's input, output or state)."""
        return cls((f.name, feature_from_proto(f)) for f in descriptions)

    def to_json(self) -> list[dict]:
        return [feature_to_json(f) for f in self.values()]

    @classmethod
    def from_json(cls, entries: Any, where: str) -> "FeatureDescriptions":
        if not isinstance(entries, list):
            raise MLCFeatureTypeError(f"{where}: expected a list of feature descriptions, got {type(entries).__name__}")
        features = [feature_from_json(e, f"{where}[{i}]") for i, e in enumerate(entries)]
        return cls((f.name, f) for f in features)

    def __repr__(self) -> str:
        return "\n".join(str(f) for f in self.values()) or "(none)"

    __str__ = __repr__


# -- inputs ---------------------------------------------------------------------------------


def _shape_allowed(feature: Feature, shape: tuple[int, ...]) -> tuple[bool, str]:
    """Whether ``shape`` is one the feature accepts, and what it accepts."""
    if feature.rank5_mapped and len(shape) == 5 and feature.shape:
        chw = (feature.shape[0], 1, 1) if len(feature.shape) == 1 else tuple(feature.shape)
        if tuple(shape[2:]) == chw:
            return True, str(feature.shape)
    if feature.shape_ranges is not None:
        ok = len(shape) == len(feature.shape_ranges) and all(
            lo <= d and (hi < 0 or d <= hi) for d, (lo, hi) in zip(shape, feature.shape_ranges)
        )
        expected = "x".join(f"[{lo},{'inf' if hi < 0 else hi}]" for lo, hi in feature.shape_ranges)
        return ok, expected
    if feature.enumerated_shapes:
        return tuple(shape) in feature.enumerated_shapes, " or ".join(str(s) for s in feature.enumerated_shapes)
    if not feature.shape:
        return True, "any shape"
    return tuple(shape) == feature.shape, str(feature.shape)


def _as_array(feature: Feature, value: Any, where: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        return np.asarray(value)
    if isinstance(value, (list, tuple, int, float, bool, np.generic)):
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise MLCFeatureTypeError(f"{where}: expected numbers, got a {type(value).__name__} holding {arr.dtype.kind!r} values")
        return arr
    raise MLCFeatureTypeError(f"{where}: expected a multiarray (numpy array), got {type(value).__name__}")


def _whole_numbers(arr: np.ndarray, target: np.dtype) -> bool:
    """Floats that hold whole numbers in range, given for an int input: Core ML converts them."""
    if arr.dtype.kind != "f" or target.kind not in "iu" or not np.all(np.isfinite(arr)):
        return False
    info = np.iinfo(target)
    return bool(np.array_equal(arr, np.trunc(arr)) and np.all((arr >= info.min) & (arr <= info.max)))


def multiarray_input(feature: Feature, value: Any, where: str, *, batched: bool = False) -> np.ndarray:
    arr = _as_array(feature, value, where)
    if arr.dtype.kind in "USOV":
        raise MLCFeatureTypeError(f"{where}: expected {feature.type_string()}, got an array of {arr.dtype} (strings or objects)")
    target = feature.dtype or np.dtype(np.float32)
    if arr.dtype != target and not np.can_cast(arr.dtype, target, casting="same_kind") and not _whole_numbers(arr, target):
        raise MLCFeatureTypeError(
            f"{where}: dtype {arr.dtype} cannot be converted to the declared {target} without losing its meaning"
        )
    example = arr.shape[1:] if batched else arr.shape
    if batched and arr.ndim == 0:
        raise MLCFeatureTypeError(f"{where}: predict_batch needs a leading batch axis, got a scalar")
    if feature.reshapes and feature.shape and tuple(example) != feature.shape and np.prod(example) == np.prod(feature.shape):
        # Core ML's classic models read a multiarray as its elements in order: (1, 13) for (13,) works.
        arr = arr.reshape(arr.shape[:1] + feature.shape if batched else feature.shape)
        example = feature.shape
    ok, expected = _shape_allowed(feature, tuple(example))
    if not ok:
        what = "rank" if feature.shape and len(example) != len(feature.shape) and not feature.enumerated_shapes else "shape"
        raise MLCFeatureTypeError(f"{where}: {what} mismatch: got shape {tuple(example)}, the model expects {expected}")
    return arr.astype(target, copy=False)


def _pil():
    from PIL import Image

    return Image


def image_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A PIL image -> float32 array (1, C, H, W) in the declared channel order."""
    Image = _pil()
    if not isinstance(value, Image.Image):
        raise MLCFeatureTypeError(f"{where}: expected a PIL image ({feature.type_string()}), got {type(value).__name__}")
    mode = PIL_MODES[feature.color_space]
    if value.mode != mode:
        raise MLCFeatureTypeError(
            f"{where}: image mode {value.mode!r} does not match the declared {feature.color_space} "
            f"(expected PIL mode {mode!r}; use image.convert({mode!r}))"
        )
    w, h = value.size
    ok, expected = _shape_allowed(feature, (h, w))
    if feature.shape_ranges is None and not feature.enumerated_shapes:
        ok, expected = (h, w) == feature.shape, f"{feature.shape[1]}x{feature.shape[0]}"
    if not ok:
        raise MLCFeatureTypeError(
            f"{where}: image is {w}x{h} (width x height), the model expects {expected}; resize it first"
        )
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
        if feature.color_space == "BGR":
            arr = arr[::-1]
    return np.ascontiguousarray(arr[None])


def fit_image(image, feature: Feature):
    """``image`` converted to the declared colour space and resized to the declared size (the
    default size of a flexible input), as Core ML's image loaders do before a prediction."""
    mode = PIL_MODES[feature.color_space]
    if image.mode != mode:
        image = image.convert(mode)
    w, h = image.size
    if not _shape_allowed(feature, (h, w))[0]:
        image = image.resize((feature.shape[1], feature.shape[0]))
    return image


def scalar_input(feature: Feature, value: Any, where: str) -> Any:
    if isinstance(value, np.ndarray) and value.size == 1 and feature.kind in ("int64", "double"):
        value = value.reshape(-1)[0]  # a one-element array holds the scalar (Core ML's Python bridge takes it)
    if feature.kind == "int64":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise MLCFeatureTypeError(f"{where}: expected an int64, got {type(value).__name__}")
        return np.int64(value)
    if feature.kind == "double":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise MLCFeatureTypeError(f"{where}: expected a double, got {type(value).__name__}")
        return np.float64(value)
    if feature.kind == "string":
        if not isinstance(value, str):
            raise MLCFeatureTypeError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    raise MLCFeatureTypeError(f"{where}: {feature.kind} inputs are not supported by this model type")


def dictionary_input(feature: Feature, value: Any, where: str) -> dict:
    """A dict of string (or int64) keys -> numbers, as ``Dictionary`` features declare."""
    if not isinstance(value, dict):
        raise MLCFeatureTypeError(f"{where}: expected a dictionary ({feature.type_string()}), got {type(value).__name__}")
    out = {}
    for key, v in value.items():
        if feature.key_kind == "string" and not isinstance(key, (str, int, np.integer)) or isinstance(key, bool):
            raise MLCFeatureTypeError(f"{where}: dictionary key {key!r} is not a string")
        if isinstance(key, np.integer):
            key = int(key)  # integer keys pass as they are: coremltools declares int-keyed sklearn dictionaries as string-keyed
        if feature.key_kind == "int64":
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise MLCFeatureTypeError(f"{where}: dictionary key {key!r} is not an int64")
            key = int(key)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise MLCFeatureTypeError(f"{where}: dictionary value for key {key!r} is a {type(v).__name__}, not a number")
        out[key] = float(v)
    return out


def sequence_input(feature: Feature, value: Any, where: str) -> list:
    """A list of strings or int64s, as ``Sequence`` features declare (with an optional size range)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise MLCFeatureTypeError(f"{where}: expected a sequence ({feature.type_string()}), got {type(value).__name__}")
    string = feature.key_kind == "string"
    for item in value:
        ok = isinstance(item, str) if string else isinstance(item, (int, np.integer)) and not isinstance(item, bool)
        if not ok:
            raise MLCFeatureTypeError(f"{where}: sequence element {item!r} is not a {feature.key_kind}")
    if feature.size_range is not None:
        lo, hi = feature.size_range
        if len(value) < lo or (hi >= 0 and len(value) > hi):
            raise MLCFeatureTypeError(f"{where}: sequence of {len(value)} elements, the model allows [{lo}, {'inf' if hi < 0 else hi}]")
    return [item if string else int(item) for item in value]


def scalar_batch_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A batch of double or int64 values: a 1-D sequence, one value per example."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.dtype.kind not in ("iu" if feature.kind == "int64" else "iuf"):
        raise MLCFeatureTypeError(
            f"{where}: predict_batch takes a 1-D array of {feature.kind} values, one per example; got {arr.dtype} of shape {arr.shape}"
        )
    return arr.astype(np.int64 if feature.kind == "int64" else np.float64)


def batch_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A batch of one input, examples along the first axis: a list of PIL images, a stacked
    multiarray, or a 1-D array of doubles / int64s (what ``predict_batch`` and training take)."""
    if feature.kind == "image":
        if not isinstance(value, (list, tuple)):
            raise MLCFeatureTypeError(f"{where}: a batch of images is a list of PIL images")
        return np.stack([image_input(feature, im, where) for im in value])
    if feature.kind == "multiArray":
        return multiarray_input(feature, value, where, batched=True)
    if feature.kind in ("double", "int64"):
        return scalar_batch_input(feature, value, where)
    raise MLCFeatureTypeError(f"{where}: batches hold multiarray, image, double and int64 inputs, not {feature.kind}; use predict")


def convert_input(feature: Feature, value: Any, where: str) -> Any:
    if feature.kind == "dictionary":
        return dictionary_input(feature, value, where)
    if feature.kind == "sequence":
        return sequence_input(feature, value, where)
    if feature.kind == "multiArray":
        return multiarray_input(feature, value, where)
    if feature.kind == "image":
        return image_input(feature, value, where)
    return scalar_input(feature, value, where)


def check_input_names(inputs: Any, features: FeatureDescriptions, model: str) -> None:
    if not isinstance(inputs, dict):
        raise MLCFeatureTypeError(f"{model}: inputs must be a dict of name -> value, got {type(inputs).__name__}")
    unknown = [k for k in inputs if k not in features]
    if unknown:
        raise MLCFeatureTypeError(f"{model}: unknown input {unknown[0]!r}; the model's inputs are {list(features)}")
    missing = [n for n, f in features.items() if n not in inputs and not f.optional and f.kind != "state"]
    if missing:
        raise MLCFeatureTypeError(f"{model}: missing input {missing[0]!r} ({features[missing[0]].type_string()})")


def example_value(feature: Feature) -> Any:
    """A value of the feature's declared type at its default shape: zeros, a black image, 0,
    "", an empty dictionary or sequence (for tracing a model without user inputs); None for a
    multiarray that declares no shape at all."""
    if feature.kind == "multiArray":
        shape = feature.shape
        if not shape and feature.shape_ranges:
            shape = tuple(max(lo, 1) for lo, _ in feature.shape_ranges)
        elif not shape and feature.enumerated_shapes:
            shape = feature.enumerated_shapes[0]
        return np.zeros(shape, feature.dtype or np.float32) if shape else None
    if feature.kind == "image":
        height, width = feature.shape
        return _pil().new(PIL_MODES[feature.color_space or "RGB"], (width, height))
    if feature.kind == "sequence":
        count = feature.size_range[0] if feature.size_range else 0
        return ["" if feature.key_kind == "string" else 0] * count
    return {"int64": 0, "double": 0.0, "string": "", "dictionary": {}}.get(feature.kind)


# -- outputs --------------------------------------------------------------------------------


def image_output(arr: np.ndarray, feature: Feature):
    """(1, C, H, W) or (C, H, W) float -> PIL image in the declared color space."""
    Image = _pil()
    a = np.asarray(arr)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    gray = feature.color_space in ("GRAYSCALE", "GRAYSCALE_FLOAT16")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[0] != (1 if gray else 3)) or (a.ndim == 2 and not gray):
        raise MLCParametersError(
            f"output {feature.name!r} is declared a {feature.color_space} image, but the model computes an array of shape "
            f"{tuple(np.shape(arr))}, not (1, {1 if gray else 3}, H, W)"
        )
    if feature.color_space == "GRAYSCALE_FLOAT16":
        return Image.fromarray(a.reshape(a.shape[-2:]).astype(np.float32), mode="F")
    a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if feature.color_space == "GRAYSCALE":
        return Image.fromarray(a.reshape(a.shape[-2:]), mode="L")
    if feature.color_space == "BGR":
        a = a[::-1]
    return Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)), mode="RGB")


SCALAR_KINDS = ("int64", "double", "string")


def host_output(value: Any, feature: Feature, where: str) -> Any:
    """An int64, double, string, dictionary or sequence output as the Python value Core ML
    returns (``int``, ``float``, ``str``, ``dict``, ``list``)."""
    if feature.kind in ("int64", "double"):
        arr = np.asarray(value)
        if arr.size != 1:
            raise MLCFeatureTypeError(f"{where}: declared {feature.type_string()}, but the model produced {arr.size} values")
        item = arr.reshape(-1)[0]
        return int(item) if feature.kind == "int64" else float(item)
    if feature.kind == "string":
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0] if value.size == 1 else value
        return str(value)
    if feature.kind == "dictionary":
        if not isinstance(value, dict):
            raise MLCFeatureTypeError(f"{where}: declared a dictionary, but the model produced a {type(value).__name__}")
        return {(int(k) if feature.key_kind == "int64" else k): float(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return list(value)


def multiarray_output(value: Any, feature: Feature) -> np.ndarray:
    arr = np.asarray(value)
    if feature.dtype is not None:
        arr = arr.astype(feature.dtype, copy=False)
    return arr
