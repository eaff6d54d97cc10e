"""``classConfidenceThresholding`` (ClassConfidenceThresholding.proto).

One multiarray input of class confidences, shape ``[C]``; one multiarray output of shape
``[2, C]``: row 0 is the confidences unchanged, row 1 is 1 where the class is present. The
proto says the model "simply takes all the classes", so row 1 is all ones. The
``precisionRecallCurves`` (one per class, DataStructures.proto ``PrecisionRecallCurve``) are
metadata for the application and do not change the output; they are validated as Core ML's
validator does: at least one curve, each table non-empty with as many thresholds as values, and
every entry finite and non-negative. Their count must match ``C`` where the input declares it.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext

_TABLES = (
    ("precisionValues", "precisionConfidenceThresholds"),
    ("recallValues", "recallConfidenceThresholds"),
)


def _check_curves(ctx: StageContext, curves) -> None:
    if not curves:
        ctx.fail("the model has no precisionRecallCurves")
    for i, curve in enumerate(curves):
        for values, thresholds in _TABLES:
            v, t = getattr(curve, values).vector, getattr(curve, thresholds).vector
            if not v or len(v) != len(t):
                ctx.fail(f"precisionRecallCurves[{i}]: {values} ({len(v)}) and {thresholds} ({len(t)}) must be non-empty and the same length")
            for field, vector in ((values, v), (thresholds, t)):
                bad = [x for x in vector if not math.isfinite(x) or x < 0.0]
                if bad:
                    ctx.fail(f"precisionRecallCurves[{i}].{field} holds {bad[0]}; entries must be finite and non-negative")


def _single(ctx: StageContext, features, what: str):
    if len(features) != 1:
        ctx.fail(f"the model takes one {what}, it declares {len(features)}")
    name, feature = next(iter(features.items()))
    if feature.kind != "multiArray":
        ctx.fail(f"{what} {name!r} must be a multiarray, not a {feature.kind}")
    return name, feature


@model_type("classConfidenceThresholding")
def class_confidence_thresholding(ctx: StageContext) -> Stage:
    curves = list(ctx.message.precisionRecallCurves)
    _check_curves(ctx, curves)
    source, feature = _single(ctx, ctx.inputs, "input")
    target, _ = _single(ctx, ctx.outputs, "output")
    if len(feature.shape) == 1 and feature.shape[0] != len(curves):
        ctx.fail(f"{len(curves)} precisionRecallCurves for {feature.shape[0]} classes (input {source!r})")

    def fn(params: dict, values: dict) -> dict:
        confidences = jnp.asarray(values[source], FLOAT)
        if confidences.ndim != 1:
            raise MLCFeatureTypeError(f"{ctx.where} ({ctx.kind}): input {source!r} must have shape [C], got {confidences.shape}")
        return {target: jnp.stack([confidences, jnp.ones_like(confidences)])}

    return Stage(fn)
