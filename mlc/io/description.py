"""Check a model description's declared features before anything is built from them.

``FeatureDescription`` (``FeatureTypes.proto``) declares multiarray shapes as ``int64``,
image sizes as ``int64``, and flexible ranges with ``upperBound = -1`` for "unbounded". A
corrupt or hostile file can declare negative sizes, ranges whose lower bound exceeds the
upper, or shapes whose one tensor would take terabytes (a memory bomb: an example input, a
state, or a zero output of that shape would be allocated). Each is refused here, naming the
file and the feature, with the size limit of ``mlc.runtime.limits``.
"""

from __future__ import annotations

from mlc.runtime import limits
from mlc._errors import MLCParametersError
from mlc.features import ARRAY_DTYPES


def check_description(spec, where: str) -> None:
    """Every feature of ``spec.description`` (and of each function of a multifunction model)."""
    descriptions = [("", spec.description)] + [(f"function {f.name!r} ", f) for f in spec.description.functions]
    for prefix, desc in descriptions:
        for role, features in (("input", desc.input), ("output", desc.output), ("state", desc.state)):
            seen: set[str] = set()
            for fd in features:
                what = f"{where}: {prefix}{role} {fd.name!r}"
                if fd.name in seen:
                    raise MLCParametersError(f"{what} is declared twice")
                seen.add(fd.name)
                check_feature_type(fd.type, what)


def check_feature_type(ft, what: str) -> None:
    kind = ft.WhichOneof("Type")
    if kind == "multiArrayType":
        _check_array(ft.multiArrayType, what)
    elif kind == "stateType":
        _check_array(ft.stateType.arrayType, what)
    elif kind == "imageType":
        _check_image(ft.imageType, what)
    elif kind == "sequenceType" and ft.sequenceType.HasField("sizeRange"):
        _check_range(ft.sequenceType.sizeRange, f"{what}: sequence size range")


def _check_array(a, what: str) -> None:
    dtype = ARRAY_DTYPES.get(a.dataType)
    itemsize = 8 if dtype is None else dtype.itemsize  # an unknown code: the widest
    limits.check_tensor([int(d) for d in a.shape], itemsize, f"{what}: declared shape")
    flex = a.WhichOneof("ShapeFlexibility")
    if flex == "enumeratedShapes":
        for s in a.enumeratedShapes.shapes:
            limits.check_tensor([int(d) for d in s.shape], itemsize, f"{what}: enumerated shape")
    elif flex == "shapeRange":
        for i, r in enumerate(a.shapeRange.sizeRanges):
            _check_range(r, f"{what}: shape range of dimension {i}")
        lower = [int(r.lowerBound) for r in a.shapeRange.sizeRanges]
        limits.check_tensor(lower, itemsize, f"{what}: smallest shape of its range")


def _check_image(im, what: str) -> None:
    size = (int(im.height), int(im.width))
    if size[0] < 0 or size[1] < 0:
        raise MLCParametersError(f"{what}: image size {size[1]}x{size[0]} is negative")
    limits.check_tensor((4, *size), 4, f"{what}: image of {size[1]}x{size[0]} pixels")
    flex = im.WhichOneof("SizeFlexibility")
    if flex == "enumeratedSizes":
        for s in im.enumeratedSizes.sizes:
            limits.check_tensor((4, int(s.height), int(s.width)), 4, f"{what}: enumerated image size")
    elif flex == "imageSizeRange":
        _check_range(im.imageSizeRange.heightRange, f"{what}: image height range")
        _check_range(im.imageSizeRange.widthRange, f"{what}: image width range")


def _check_range(r, what: str) -> None:
    """``SizeRange``: ``lowerBound >= 0``, ``upperBound == -1`` (unbounded) or ``>= lowerBound``."""
    lower, upper = int(r.lowerBound), int(r.upperBound)
    if lower < 0 or upper < -1 or (upper >= 0 and upper < lower):
        raise MLCParametersError(f"{what} [{lower}, {upper}] is invalid (needs 0 <= lower <= upper, or upper = -1 for unbounded)")
