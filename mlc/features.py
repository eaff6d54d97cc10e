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
import operator
from typing import Any

import numpy as np

from mlc.runtime import limits
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
    default_value: float | None = None  # optional multiArray: ArrayFeatureType.defaultOptionalValue, when set

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
        default = a.WhichOneof("defaultOptionalValue")  # intDefaultValue, floatDefaultValue or doubleDefaultValue
        if default is not None:
            f.default_value = float(getattr(a, default))
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


def _check_size(shape: Any, itemsize: int, where: str) -> None:
    """Refuse an input larger than ``mlc.runtime.limits.max_tensor_bytes()`` before it is converted."""
    limits.check_tensor(shape, itemsize, where, error=MLCFeatureTypeError)


def _declared_shape(value: Any) -> tuple[int, ...] | None:
    """The ``shape`` an array-like object (a torch, JAX or other lazy array) says it has, read
    without converting it; None when it says none that is a tuple of integers."""
    shape = getattr(value, "shape", None)
    if not isinstance(shape, (tuple, list)):
        return None
    try:
        return tuple(operator.index(d) for d in shape)
    except TypeError:
        return None


def _declared_itemsize(value: Any) -> int:
    """Bytes per element an array-like object says it holds (1 when it does not say)."""
    itemsize = getattr(value, "itemsize", None)
    if isinstance(itemsize, (int, np.integer)) and not isinstance(itemsize, bool) and itemsize > 0:
        return int(itemsize)
    try:
        return np.dtype(getattr(value, "dtype", None)).itemsize
    except (TypeError, ValueError):
        return 1


def _nested_shape(value: Any) -> tuple[int, ...]:
    """The shape nested lists/tuples would give, read along their first elements (cheap: what
    ``np.asarray`` is about to allocate, before it does)."""
    shape = []
    while isinstance(value, (list, tuple)) and len(shape) < 64:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _computed_itemsize(feature: Feature) -> int:
    """Bytes per element the model takes the input in: its declared dtype, and at least 4 (the
    program widens fp16 and int8 inputs to 32 bits where it computes in them)."""
    return max((feature.dtype or np.dtype(np.float32)).itemsize, 4)


def _as_array(feature: Feature, value: Any, where: str) -> np.ndarray:
    """``value`` as a numpy array, its size checked before anything is converted or copied."""
    itemsize = _computed_itemsize(feature)
    if isinstance(value, np.ndarray):
        return value
    if _is_torch_tensor(value):
        value = value.detach()  # as coremltools' MLModel.predict does; no copy
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        shape = _declared_shape(value)
        if shape is not None:
            _check_size(shape, max(_declared_itemsize(value), itemsize), where)
        return _converted(value, where)
    if isinstance(value, (list, tuple, int, float, bool, np.generic)):
        _check_size(_nested_shape(value), max(8, itemsize), where)  # Python numbers become 8-byte numbers
        arr = _converted(value, where)
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise MLCFeatureTypeError(f"{where}: expected numbers, got a {type(value).__name__} holding {arr.dtype.kind!r} values")
        return arr
    raise MLCFeatureTypeError(f"{where}: expected a multiarray (numpy array), got {type(value).__name__}")


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and callable(getattr(value, "detach", None))


def _converted(value: Any, where: str) -> np.ndarray:
    """``np.asarray(value)``; what numpy or the object refuses (nested lists of different
    lengths, a tensor on another device) is reported as the input's error."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise MLCFeatureTypeError(f"{where}: a {type(value).__name__} that is not an array of numbers: {e}") from e


def _whole_numbers(arr: np.ndarray, target: np.dtype) -> bool:
    """Floats that hold whole numbers in range, given for an int input: Core ML converts them."""
    if arr.dtype.kind != "f" or target.kind not in "iu" or not np.all(np.isfinite(arr)):
        return False
    info = np.iinfo(target)
    return bool(np.array_equal(arr, np.trunc(arr)) and np.all((arr >= info.min) & (arr <= info.max)))


def cast_needs_no_values(given: np.dtype, declared: np.dtype) -> bool:
    """Whether ``multiarray_input`` accepts or refuses an array of dtype ``given`` for the
    ``declared`` dtype without reading its values: no float-to-int check of whole numbers
    (``_whole_numbers``), no integer range check (``_check_integer_range``)."""
    if given == declared:
        return True
    if given.kind in "USOV" or not np.can_cast(given, declared, casting="same_kind"):
        return False
    return not (given.kind in "iu" and declared.kind in "iu" and not np.can_cast(given, declared, casting="safe"))


def _check_integer_range(arr: np.ndarray, target: np.dtype, where: str) -> None:
    """Integers given for a narrower integer input (int64 for int32) must fit it: a cast would
    wrap 2**40 around to 0 without a word."""
    if arr.dtype.kind not in "iu" or target.kind not in "iu" or np.can_cast(arr.dtype, target, casting="safe") or arr.size == 0:
        return
    info = np.iinfo(target)
    lo, hi = arr.min(), arr.max()
    if lo < info.min or hi > info.max:
        bad = lo if lo < info.min else hi
        raise MLCFeatureTypeError(
            f"{where}: value {bad} ({arr.dtype}) is out of the range of the declared {target} [{info.min}, {info.max}]"
        )


def multiarray_input(feature: Feature, value: Any, where: str, *, batched: bool = False) -> np.ndarray:
    arr = _as_array(feature, value, where)
    if arr.dtype.kind in "USOV":
        raise MLCFeatureTypeError(f"{where}: expected {feature.type_string()}, got an array of {arr.dtype} (strings or objects)")
    # What the user gave and what it becomes, before it is converted, copied or sent to a device.
    _check_size(arr.shape, max(arr.dtype.itemsize, _computed_itemsize(feature)), where)
    target = feature.dtype or np.dtype(np.float32)
    if arr.dtype != target and not np.can_cast(arr.dtype, target, casting="same_kind") and not _whole_numbers(arr, target):
        raise MLCFeatureTypeError(
            f"{where}: dtype {arr.dtype} cannot be converted to the declared {target} without losing its meaning"
        )
    _check_integer_range(arr, target, where)
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


def _image_size(feature: Feature, value: Any, where: str) -> tuple[int, int]:
    """Check a PIL image's type, mode and size against the feature, without decoding it;
    its (height, width)."""
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
    ok = _shape_allowed(feature, (h, w))[0]
    if feature.shape_ranges is None and not feature.enumerated_shapes:
        ok = (h, w) == feature.shape
    if not ok:
        expected = _image_sizes(feature)
        raise MLCFeatureTypeError(
            f"{where}: image is {w}x{h} (width x height), the model expects {expected}; resize it first"
        )
    return h, w


def _image_sizes(feature: Feature) -> str:
    """The sizes an image input takes, width x height, as an error message says them."""
    if feature.shape_ranges is not None:
        (hl, hh), (wl, wh) = feature.shape_ranges
        if hl == hh and wl == wh:
            return f"{wl}x{hl}"
        return f"width in [{wl},{'inf' if wh < 0 else wh}] and height in [{hl},{'inf' if hh < 0 else hh}]"
    if feature.enumerated_shapes:
        return " or ".join(f"{w}x{h}" for h, w in feature.enumerated_shapes)
    return f"{feature.shape[1]}x{feature.shape[0]}"


def _channels(feature: Feature) -> int:
    return 3 if feature.color_space in ("RGB", "BGR") else 1


def _decoded(value: Any, feature: Feature, where: str) -> np.ndarray:
    """A checked PIL image -> float32 (1, C, H, W) in the declared channel order. PIL images
    are lazy: this is where a file is decoded, and where a corrupt or truncated one fails."""
    Image = _pil()
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MLCFeatureTypeError(f"{where}: Pillow refused to decode the image: {e}") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise MLCFeatureTypeError(f"{where}: the image could not be decoded: {e}") from e
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
        if feature.color_space == "BGR":
            arr = arr[::-1]
    return np.ascontiguousarray(arr[None])


def image_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A PIL image -> float32 array (1, C, H, W) in the declared channel order."""
    h, w = _image_size(feature, value, where)
    _check_size((1, _channels(feature), h, w), 4, where)  # before the (lazy) image is decoded
    return _decoded(value, feature, where)


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
        return np.int64(_int64(value, where))
    if feature.kind == "double":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise MLCFeatureTypeError(f"{where}: expected a double, got {type(value).__name__}")
        return np.float64(_double(value, where))
    if feature.kind == "string":
        if not isinstance(value, str):
            raise MLCFeatureTypeError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    raise MLCFeatureTypeError(f"{where}: {feature.kind} inputs are not supported by this model type")


def _int64(value: Any, where: str) -> int:
    """An integer that fits an int64 (a Python int or a uint64 may not: refused, not wrapped)."""
    n = int(value)
    if not -(1 << 63) <= n < (1 << 63):
        raise MLCFeatureTypeError(f"{where}: {n} is out of the int64 range")
    return n


def _double(value: Any, where: str) -> float:
    """A number as a double; a Python int too large for one is refused (NaN and Inf pass)."""
    try:
        return float(value)
    except OverflowError as e:
        raise MLCFeatureTypeError(f"{where}: {value} is too large for a double") from e


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
            key = _int64(key, where)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise MLCFeatureTypeError(f"{where}: dictionary value for key {key!r} is a {type(v).__name__}, not a number")
        out[key] = _double(v, f"{where}: dictionary value for key {key!r}")
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
    return [item if string else _int64(item, where) for item in value]


def scalar_batch_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A batch of double or int64 values: a 1-D sequence, one value per example."""
    shape = _nested_shape(value) if isinstance(value, (list, tuple)) else _declared_shape(value)
    if shape is not None:
        _check_size(shape, 8, where)
    arr = _converted(value, where)
    if arr.ndim != 1 or arr.dtype.kind not in ("iu" if feature.kind == "int64" else "iuf"):
        raise MLCFeatureTypeError(
            f"{where}: predict_batch takes a 1-D array of {feature.kind} values, one per example; got {arr.dtype} of shape {arr.shape}"
        )
    target = np.dtype(np.int64 if feature.kind == "int64" else np.float64)
    _check_integer_range(arr, target, where)
    return arr.astype(target)


def image_batch_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A list of PIL images -> float32 (N, 1, C, H, W): every image checked, and the batch's
    size, before any is decoded. An empty list is an empty batch at the declared size."""
    if not isinstance(value, (list, tuple)):
        raise MLCFeatureTypeError(f"{where}: a batch of images is a list of PIL images, got {type(value).__name__}")
    sizes = [_image_size(feature, im, f"{where}, image {i}") for i, im in enumerate(value)]
    if len(set(sizes)) > 1:
        shown = ", ".join(sorted({f"{w}x{h}" for h, w in sizes}))
        raise MLCFeatureTypeError(f"{where}: the images of a batch must have one size, got {shown}; resize them first")
    h, w = sizes[0] if sizes else feature.shape
    _check_size((len(value), 1, _channels(feature), h, w), 4, where)
    if not value:
        return np.zeros((0, 1, _channels(feature), h, w), np.float32)
    return np.stack([_decoded(im, feature, f"{where}, image {i}") for i, im in enumerate(value)])


def batch_input(feature: Feature, value: Any, where: str) -> np.ndarray:
    """A batch of one input, examples along the first axis: a list of PIL images, a stacked
    multiarray, or a 1-D array of doubles / int64s (what ``predict_batch`` and training take)."""
    if feature.kind == "image":
        return image_batch_input(feature, value, where)
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
        shape = _default_shape(feature)
        return np.zeros(shape, feature.dtype or np.float32) if shape else None
    if feature.kind == "image":
        height, width = feature.shape
        return _pil().new(PIL_MODES[feature.color_space or "RGB"], (width, height))
    if feature.kind == "sequence":
        count = feature.size_range[0] if feature.size_range else 0
        return ["" if feature.key_kind == "string" else 0] * count
    return {"int64": 0, "double": 0.0, "string": "", "dictionary": {}}.get(feature.kind)


def _default_shape(feature: Feature) -> tuple[int, ...]:
    """A multiarray's default shape: the declared ``shape``, else the smallest of its range
    (at least 1 per dimension), else its first enumerated shape; () when it declares none."""
    if feature.shape:
        return tuple(feature.shape)
    if feature.shape_ranges:
        return tuple(max(lo, 1) for lo, _ in feature.shape_ranges)
    if feature.enumerated_shapes:
        return tuple(feature.enumerated_shapes[0])
    return ()


def omitted_input(feature: Feature, where: str) -> np.ndarray:
    """What Core ML feeds a NeuralNetwork or ML Program for an optional multiarray input the
    caller left out: the declared default shape filled with ``ArrayFeatureType``'s
    ``defaultOptionalValue`` (0 when unset), in the declared dtype. coremltools'
    ``TensorType(default_value=...)`` writes that value (``test_mil_default_value_runtime``
    predicts with the input left out); Turi Create's LSTM state inputs leave it unset: zeros."""
    shape = _default_shape(feature)
    if not shape:
        raise MLCFeatureTypeError(f"{where}: the optional input was left out, but it declares no default shape to fill; pass it")
    _check_size(shape, _computed_itemsize(feature), where)
    fill = 0.0 if feature.default_value is None else feature.default_value
    return np.full(shape, fill, feature.dtype or np.float32)


def omitted_inputs(inputs: dict, features: FeatureDescriptions, model: str) -> dict[str, np.ndarray]:
    """The optional multiarray inputs absent from ``inputs``, as ``omitted_input`` fills them."""
    return {
        name: omitted_input(f, f"{model}: input {name!r}")
        for name, f in features.items()
        if name not in inputs and f.optional and f.kind == "multiArray"
    }


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
    """A multiarray output as Core ML returns it: in the declared dtype, and never rank 0.

    Core ML has no rank-0 ``MLMultiArray``: a value the program computes as a scalar (an
    all-axes reduction, a torch module returning a 0-d tensor) comes back with shape ``(1,)``
    (coremltools' ``testing_utils.compare_shapes``: "Core ML does not support scalar as output").
    """
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if feature.dtype is not None:
        arr = arr.astype(feature.dtype, copy=False)
    return arr


def multiarray_batch_output(value: Any, feature: Feature) -> np.ndarray:
    """A batched multiarray output (examples along the first axis) as ``predict_batch`` returns
    it: each example as ``multiarray_output`` returns it, so a per-example scalar gives ``(n, 1)``."""
    arr = np.asarray(value)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    return multiarray_output(arr, feature)
