"""``scaler`` (Scaler.proto): ``y = scaleValue * (x + shiftValue)``.

``shiftValue`` defaults to 0 and ``scaleValue`` to 1 when empty; one value applies to every
element, otherwise there is one value per element of the (1-D) input array, as Apple's
validator requires (for a double or int64 input, at most one value each). An int64 input is
converted to a double; an int64 output is the result cast back to an integer, and a cast that
would lose a fraction is an error (the proto's words).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT, INT
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.runtime import checks

NUMERIC = ("double", "int64", "multiArray")
# |y - round(y)| allowed before an int64 output counts as lossy: two float32 operations
# (add, multiply) each round to half an ulp, so a few ulps relative to |y|.
INT_TOLERANCE = 1e-5


def _declared_size(feature) -> int | None:
    """How many values the input holds: 1 for a scalar, the product of a declared array
    shape, None for an array of flexible shape."""
    if feature.kind != "multiArray":
        return 1
    if not feature.shape or feature.shape_ranges is not None or feature.enumerated_shapes:
        return None
    return math.prod(feature.shape)


def _coefficients(ctx: StageContext, field: str, default: float, size: int | None) -> np.ndarray:
    values = list(getattr(ctx.message, field))
    if not values:
        return np.asarray(default, FLOAT)
    if len(values) == 1:
        return np.asarray(values[0], FLOAT)
    if size is not None and len(values) != size:
        what = "a scalar input takes at most one" if size == 1 else f"the input holds {size} values; give 0, 1 or {size}"
        ctx.fail(f"{len(values)} {field} values: {what}")
    return np.asarray(values, FLOAT)


def _check_types(ctx: StageContext):
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"a scaler takes one input and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), (out, out_feature) = next(iter(ctx.inputs.items())), next(iter(ctx.outputs.items()))
    if feature.kind not in NUMERIC or out_feature.kind not in NUMERIC:
        ctx.fail(f"input {feature.kind} and output {out_feature.kind}: a scaler maps double, int64 or multiarray")
    if feature.kind == "int64":
        if out_feature.kind not in ("int64", "double"):
            ctx.fail(f"an int64 input must output an int64 or a double, not a {out_feature.kind}")
    elif out_feature.kind != feature.kind:
        ctx.fail(f"the output ({out_feature.kind}) must have the input's type ({feature.kind})")
    return name, feature, out, out_feature


def _whole(ctx: StageContext, y):
    """``y`` cast to an integer; a fractional value is refused (at once when ``y`` is known,
    else as a run-time check)."""
    rounded = jnp.round(y)
    ok = jnp.abs(y - rounded) <= INT_TOLERANCE * jnp.maximum(1.0, jnp.abs(y))
    message = f"{ctx.where} (scaler): the int64 output would lose a fraction"
    if isinstance(ok, jax.core.Tracer):
        checks.require(ok, message)
    elif not np.all(np.asarray(ok)):
        raise MLCFeatureTypeError(f"{message}: {np.asarray(y).tolist()}")
    return rounded.astype(INT)


@model_type("scaler")
def scaler(ctx: StageContext) -> Stage:
    name, feature, out, out_feature = _check_types(ctx)
    size = _declared_size(feature)
    params = {"shift": _coefficients(ctx, "shiftValue", 0.0, size), "scale": _coefficients(ctx, "scaleValue", 1.0, size)}
    sizes = {p.size for p in params.values() if p.ndim == 1}
    if len(sizes) > 1:
        ctx.fail(f"{params['shift'].size} shiftValue values but {params['scale'].size} scaleValue values")
    per_element = sizes.pop() if sizes else None

    def fn(params: dict, values: dict) -> dict:
        value = values[name]
        if isinstance(value, (str, dict, list)):
            raise MLCFeatureTypeError(f"{ctx.where} (scaler): input {name!r} is a {type(value).__name__}; a scaler takes numbers")
        x = jnp.asarray(value, FLOAT)
        flat = jnp.reshape(x, (-1,))
        if per_element is not None and flat.shape[0] != per_element:
            raise MLCFeatureTypeError(f"{ctx.where} (scaler): input {name!r} holds {flat.shape[0]} values, the scaler has {per_element}")
        y = jnp.reshape((flat + params["shift"]) * params["scale"], x.shape)
        with checks.collecting() as flags:
            y = _whole(ctx, y) if out_feature.kind == "int64" else y
        result = {out: y}
        if flags:
            result[checks.CHECKS] = dict(flags)
        return result

    return Stage(fn, params)
