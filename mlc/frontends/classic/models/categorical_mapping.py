"""``categoricalMapping`` (CategoricalMapping.proto): strings to int64s (``stringToInt64Map``)
or int64s to strings (``int64ToStringMap``).

A value missing from the map becomes ``ValueOnUnknown`` (``int64Value`` for string -> int64,
``strValue`` for int64 -> string); without it an unknown value is an error. As Apple's
validator allows, the input may also be a sequence of the input type, mapped element by
element into a sequence of the output type. Runs on the host (strings).
"""

from __future__ import annotations

import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext

# mapping field -> (input kind, output kind, the ValueOnUnknown field of the output kind)
DIRECTIONS = {
    "stringToInt64Map": ("string", "int64", "int64Value"),
    "int64ToStringMap": ("int64", "string", "strValue"),
}
_MISSING = object()


def _kind(feature) -> tuple[str, bool]:
    """A feature's element kind and whether it is a sequence."""
    if feature.kind == "sequence":
        return feature.key_kind, True
    return feature.kind, False


def _default(ctx: StageContext, field: str):
    which = ctx.message.WhichOneof("ValueOnUnknown")
    if which is None:
        return _MISSING
    if which != field:
        ctx.fail(f"ValueOnUnknown is {which}, but this mapping produces {'int64' if field == 'int64Value' else 'string'}s")
    return getattr(ctx.message, which)


def _check_features(ctx: StageContext, source: str, target: str) -> tuple[str, str, bool]:
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"takes one input and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), (out, out_feature) = next(iter(ctx.inputs.items())), next(iter(ctx.outputs.items()))
    (kind, sequence), (out_kind, out_sequence) = _kind(feature), _kind(out_feature)
    if kind != source:
        ctx.fail(f"input {name!r} holds {kind}s; this mapping takes {source}s")
    if sequence != out_sequence or out_kind != target:
        want = f"a sequence of {target}s" if sequence else f"a {target}"
        ctx.fail(f"output {out!r} must be {want}")
    return name, out, sequence


def _as_int(ctx: StageContext, name: str, value) -> int:
    if isinstance(value, (str, dict, list, bool)):
        raise MLCFeatureTypeError(f"{ctx.where} (categoricalMapping): input {name!r} is a {type(value).__name__}, not an int64")
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise MLCFeatureTypeError(f"{ctx.where} (categoricalMapping): input {name!r} must be one int64, got {arr.dtype} of shape {arr.shape}")
    return int(arr.reshape(-1)[0])


@model_type("categoricalMapping")
def categorical_mapping(ctx: StageContext) -> Stage:
    which = ctx.message.WhichOneof("MappingType")
    if which is None:
        ctx.fail("no mapping: set stringToInt64Map or int64ToStringMap")
    source, target, default_field = DIRECTIONS[which]
    default = _default(ctx, default_field)
    mapping = dict(getattr(ctx.message, which).map)
    name, out, sequence = _check_features(ctx, source, target)

    def lookup(value):
        if source == "string":
            if not isinstance(value, str):
                raise MLCFeatureTypeError(f"{ctx.where} (categoricalMapping): input {name!r} is a {type(value).__name__}, not a string")
            key = value
        else:
            key = _as_int(ctx, name, value)
        result = mapping.get(key, default)
        if result is _MISSING:
            raise MLCFeatureTypeError(
                f"{ctx.where} (categoricalMapping): input {name!r} value {key!r} is not in the mapping and no ValueOnUnknown is set"
            )
        return result

    def fn(params: dict, values: dict) -> dict:
        value = values[name]
        if sequence:
            if not isinstance(value, (list, tuple)):
                raise MLCFeatureTypeError(f"{ctx.where} (categoricalMapping): input {name!r} is a {type(value).__name__}, not a sequence")
            return {out: [lookup(v) for v in value]}
        result = lookup(value)
        return {out: np.asarray(result, np.int64) if target == "int64" else result}

    return Stage(fn, {}, host=True)
