"""``imputer`` (Imputer.proto): missing values replaced by an imputed value.

A value is missing when the (optional) input is absent, or when it equals ``ReplaceValue``:
``replaceDoubleValue`` (NaN matches NaN; when no replace value is set, NaN is the missing
double), ``replaceInt64Value`` or ``replaceStringValue``. For a multiarray every matching
element is replaced, by the single ``imputedDoubleValue`` or by the element at the same
position of ``imputedDoubleArray`` / ``imputedInt64Array``. Dictionary imputed values only
stand in for an absent input (Apple's validator allows no replace value for them).

Input and output share one type; the allowed pairs of imputed value, input type and replace
value are those of Apple's ``ImputerValidator``. Numbers are imputed in the jitted program;
strings and dictionaries on the host.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT, INT
from mlc.frontends.classic.stage import Stage, StageContext

# imputed value field -> (input kinds it serves, the replace value field it accepts)
IMPUTED = {
    "imputedDoubleValue": (("double", "multiArray"), "replaceDoubleValue"),
    "imputedInt64Value": (("int64",), "replaceInt64Value"),
    "imputedStringValue": (("string",), "replaceStringValue"),
    "imputedDoubleArray": (("multiArray",), "replaceDoubleValue"),
    "imputedInt64Array": (("multiArray",), "replaceInt64Value"),
    "imputedStringDictionary": (("dictionary",), None),
    "imputedInt64Dictionary": (("dictionary",), None),
}


def _features(ctx: StageContext):
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"an imputer takes one input and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), (out, out_feature) = next(iter(ctx.inputs.items())), next(iter(ctx.outputs.items()))
    if out_feature.kind != feature.kind:
        ctx.fail(f"the output ({out_feature.kind}) must have the input's type ({feature.kind})")
    return name, feature, out


def _replace_value(ctx: StageContext, accepted: str | None):
    which = ctx.message.WhichOneof("ReplaceValue")
    if which is not None and which != accepted:
        ctx.fail(f"{which} does not go with {ctx.message.WhichOneof('ImputedValue')}")
    return which, (getattr(ctx.message, which) if which else None)


def _check_array_length(ctx: StageContext, feature, imputed: np.ndarray, field: str) -> None:
    declared = feature.shape if feature.shape_ranges is None and not feature.enumerated_shapes else ()
    if len(declared) > 1:
        ctx.fail(f"the input array has shape {declared}; the imputer takes 1-D arrays")
    if declared and imputed.ndim == 1 and imputed.size != declared[0]:
        ctx.fail(f"{field} holds {imputed.size} values, the input array {declared[0]}")


def _refuse(ctx: StageContext, message: str):
    raise MLCFeatureTypeError(f"{ctx.where} (imputer): {message}")


def _numeric_stage(ctx: StageContext, name: str, out: str, field: str, replace) -> Stage:
    value = getattr(ctx.message, field)
    is_double = "Double" in field
    raw = list(value.vector) if field.endswith("Array") else value
    imputed = np.asarray(raw, FLOAT if is_double else INT)
    _check_array_length(ctx, ctx.inputs[name], imputed, field)
    nan_marker = (replace is None and is_double) or (isinstance(replace, float) and math.isnan(replace))
    params = {"imputed": imputed} if is_double else {}

    def fn(params: dict, values: dict) -> dict:
        fill = params["imputed"] if is_double else jnp.asarray(imputed)
        if name not in values:
            return {out: fill}
        x = values[name]
        if isinstance(x, (str, dict, list)):
            _refuse(ctx, f"input {name!r} is a {type(x).__name__}; expected numbers")
        x = jnp.asarray(x, FLOAT) if is_double else jnp.asarray(x)
        if fill.ndim == 1 and (x.ndim != 1 or x.shape[0] != fill.shape[0]):
            _refuse(ctx, f"input {name!r} has shape {tuple(x.shape)}; the imputed array holds {fill.shape[0]} values")
        if nan_marker:
            missing = jnp.isnan(x)
        elif replace is None:
            return {out: x}
        else:
            missing = x == replace
        return {out: jnp.where(missing, fill, x)}

    return Stage(fn, params)


def _host_stage(ctx: StageContext, name: str, out: str, field: str, replace) -> Stage:
    feature = ctx.inputs[name]
    if field == "imputedStringValue":
        imputed = ctx.message.imputedStringValue
        kind = str
    else:
        keys = "string" if field == "imputedStringDictionary" else "int64"
        if feature.key_kind != keys:
            ctx.fail(f"{field} has {keys} keys, input {name!r} {feature.key_kind} keys")
        imputed = dict(getattr(ctx.message, field).map)
        kind = dict

    def fn(params: dict, values: dict) -> dict:
        if name not in values:
            return {out: dict(imputed) if kind is dict else imputed}
        x = values[name]
        if not isinstance(x, kind):
            _refuse(ctx, f"input {name!r} is a {type(x).__name__}, not a {kind.__name__}")
        return {out: imputed if replace is not None and x == replace else x}

    return Stage(fn, {}, host=True)


@model_type("imputer")
def imputer(ctx: StageContext) -> Stage:
    field = ctx.message.WhichOneof("ImputedValue")
    if field is None:
        ctx.fail("no imputed value set")
    name, feature, out = _features(ctx)
    kinds, accepted = IMPUTED[field]
    if feature.kind not in kinds:
        ctx.fail(f"input {name!r} is a {feature.kind}; {field} imputes {' or '.join(kinds)} inputs")
    _, replace = _replace_value(ctx, accepted)
    if feature.kind in ("string", "dictionary"):
        return _host_stage(ctx, name, out, field, replace)
    return _numeric_stage(ctx, name, out, field, replace)
