"""``nonMaximumSuppression`` (NonMaximumSuppression.proto): the object detector's last stage.

Inputs (``confidenceInputFeatureName``, ``coordinatesInputFeatureName``): confidences ``(N, C)``
and boxes ``(N, 4)`` as (center x, center y, width, height). A box's confidence is its best class
confidence and its class the argmax. The PickTop method (``pickTop``, the only one):

1. boxes whose confidence is below ``confidenceThreshold`` are discarded (``>=`` survives);
2. the rest, in descending confidence (ties keep input order), are kept greedily: a box is
   suppressed when its IoU with an already kept box exceeds ``iouThreshold`` (so 1.0 suppresses
   nothing), among boxes of the same class only when ``pickTop.perClass``.

The optional double inputs ``iouThresholdInputFeatureName`` / ``confidenceThresholdInputFeatureName``
override the two parameters when given. Outputs (``confidenceOutputFeatureName``,
``coordinatesOutputFeatureName``) are the kept rows of both inputs, most confident first. A
fixed declared output shape ``(K, ...)`` pins the row count (zero rows pad, extra boxes are
dropped) and the stage is pure JAX; a declared row range ``[lo, hi]`` pads to ``lo`` and cuts at
``hi``; otherwise the row count is the number of kept boxes. Those two cases depend on data, so
the stage is eager (the suppression itself still runs jitted). The class labels only name the
columns (for Vision); they must match ``C``. A spec without a suppression method is run as
PickTop without ``perClass``, the proto's only method.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mlc._errors import MLCFeatureTypeError
from mlc.kernels.nms import pairwise_iou
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext


def greedy_keep(confidence, coordinates, iou_threshold, confidence_threshold, per_class: bool):
    """PickTop: ``(order, keep)``: box indices by descending confidence, and which of them survive."""
    n = confidence.shape[0]
    score = jnp.max(confidence, axis=-1)
    order = jnp.argsort(-score, stable=True)
    conflict = pairwise_iou(coordinates[order]) > iou_threshold
    if per_class:
        label = jnp.argmax(confidence, axis=-1)[order]
        conflict &= label[:, None] == label[None, :]
    eligible = score[order] >= confidence_threshold

    def visit(i, keep):
        return keep.at[i].set(eligible[i] & ~jnp.any(keep & conflict[i]))

    return order, lax.fori_loop(0, n, visit, jnp.zeros((n,), bool))


def suppressed_rows(confidence, coordinates, iou_threshold, confidence_threshold, per_class: bool, rows: int):
    """The kept rows of both inputs, most confident first, zero-padded or cut to ``rows``; and
    how many boxes were kept."""
    order, keep = greedy_keep(confidence, coordinates, iou_threshold, confidence_threshold, per_class)
    count = jnp.sum(keep, dtype=jnp.int32)
    kept_first = order[jnp.argsort(~keep, stable=True)]
    n = confidence.shape[0]
    index = jnp.pad(kept_first, (0, max(rows - n, 0)))[:rows]
    slot = (jnp.arange(rows) < count)[:, None]
    return jnp.where(slot, confidence[index], 0.0), jnp.where(slot, coordinates[index], 0.0), count


_suppressed_rows_jit = jax.jit(suppressed_rows, static_argnums=(4, 5))


# -- the spec --------------------------------------------------------------------------------


def _feature(ctx: StageContext, features, name: str, field: str, kind: str, where: str):
    if not name:
        ctx.fail(f"{field} is not set")
    if name not in features:
        ctx.fail(f"{field} names {name!r}, which is not one of the model's {where} {list(features)}")
    feature = features[name]
    if feature.kind != kind:
        ctx.fail(f"{where} {name!r} ({field}) must be a {kind}, not a {feature.kind}")
    return feature


def _check_features(ctx: StageContext, m) -> dict:
    """Every declared feature is one the message names (as Core ML's validator requires)."""
    named_inputs = {
        m.confidenceInputFeatureName: ("confidenceInputFeatureName", "multiArray"),
        m.coordinatesInputFeatureName: ("coordinatesInputFeatureName", "multiArray"),
    }
    for name, field in ((m.iouThresholdInputFeatureName, "iouThresholdInputFeatureName"),
                        (m.confidenceThresholdInputFeatureName, "confidenceThresholdInputFeatureName")):
        if name:
            named_inputs[name] = (field, "double")
    for name in ctx.inputs:
        if name not in named_inputs:
            ctx.fail(f"input {name!r} is not named by any of the message's input feature names")
    for name in ctx.outputs:
        if name not in (m.confidenceOutputFeatureName, m.coordinatesOutputFeatureName):
            ctx.fail(f"output {name!r} is neither confidenceOutputFeatureName nor coordinatesOutputFeatureName")
    features = {}
    for name, (field, kind) in named_inputs.items():
        features[field] = _feature(ctx, ctx.inputs, name, field, kind, "inputs")
    for field in ("confidenceOutputFeatureName", "coordinatesOutputFeatureName"):
        features[field] = _feature(ctx, ctx.outputs, getattr(m, field), field, "multiArray", "outputs")
    arrays = [f for f in features.values() if f.kind == "multiArray"]
    dtypes = {f.dtype for f in arrays}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.dtype(np.float64), np.dtype(np.float32)):
        ctx.fail("the confidence and coordinates inputs and outputs must share one element type, double or float32; "
                 f"got {[str(f.dtype) for f in arrays]}")
    return features


def _row_bounds(ctx: StageContext, outputs: list) -> tuple[int, int]:
    """``(lo, hi)`` rows of the outputs (``hi`` -1 unbounded) from their declared shapes."""
    lo, hi = 0, -1
    for f in outputs:
        if f.enumerated_shapes:
            ctx.fail(f"output {f.name!r}: only a fixed shape or a shape range may bound the number of boxes")
        if f.shape_ranges is not None:
            if len(f.shape_ranges) != 2:
                ctx.fail(f"output {f.name!r}: a shape range must have 2 dimensions, got {len(f.shape_ranges)}")
            r_lo, r_hi = f.shape_ranges[0]
        elif f.shape:
            if len(f.shape) != 2:
                ctx.fail(f"output {f.name!r}: a fixed shape must have 2 dimensions, got {f.shape}")
            r_lo = r_hi = f.shape[0]
        else:
            continue
        lo = max(lo, r_lo)
        hi = r_hi if hi < 0 else (hi if r_hi < 0 else min(hi, r_hi))
    if hi >= 0 and lo > hi:
        ctx.fail(f"the confidence and coordinates outputs disagree on the number of boxes ({lo} > {hi})")
    return lo, hi


def _class_count(ctx: StageContext, m, confidence_out) -> int | None:
    which = m.WhichOneof("ClassLabels")
    count = None
    if which == "stringClassLabels":
        count = len(m.stringClassLabels.vector)
    elif which == "int64ClassLabels":
        count = len(m.int64ClassLabels.vector)
    if count and confidence_out.shape and len(confidence_out.shape) == 2 and confidence_out.shape[1] != count:
        ctx.fail(f"{count} class labels, but the confidence output has {confidence_out.shape[1]} columns")
    return count or None


def _thresholds(ctx: StageContext, m) -> tuple[float, float]:
    iou, confidence = float(m.iouThreshold), float(m.confidenceThreshold)
    if not 0.0 <= iou <= 1.0:
        ctx.fail(f"iouThreshold must be between 0.0 and 1.0, got {iou}")
    if not confidence >= 0.0:
        ctx.fail(f"confidenceThreshold must be non-negative, got {confidence}")
    return iou, confidence


def _suppression(ctx: StageContext, m) -> bool:
    method = m.WhichOneof("SuppressionMethod")
    if method not in (None, "pickTop"):
        ctx.fail(f"unknown suppression method {method!r}")
    return bool(m.pickTop.perClass) if method == "pickTop" else False


@model_type("nonMaximumSuppression")
def non_maximum_suppression(ctx: StageContext) -> Stage:
    m = ctx.message
    features = _check_features(ctx, m)
    iou_default, confidence_default = _thresholds(ctx, m)
    per_class = _suppression(ctx, m)
    classes = _class_count(ctx, m, features["confidenceOutputFeatureName"])
    lo, hi = _row_bounds(ctx, [features["confidenceOutputFeatureName"], features["coordinatesOutputFeatureName"]])
    fixed = hi >= 0 and lo == hi
    names = {
        "confidence": m.confidenceInputFeatureName,
        "coordinates": m.coordinatesInputFeatureName,
        "iou": m.iouThresholdInputFeatureName,
        "threshold": m.confidenceThresholdInputFeatureName,
        "confidence_out": m.confidenceOutputFeatureName,
        "coordinates_out": m.coordinatesOutputFeatureName,
    }

    def inputs(values: dict):
        confidence = jnp.asarray(values[names["confidence"]], FLOAT)
        coordinates = jnp.asarray(values[names["coordinates"]], FLOAT)
        if confidence.ndim != 2 or coordinates.ndim != 2 or coordinates.shape[1] != 4 or confidence.shape[0] != coordinates.shape[0]:
            raise MLCFeatureTypeError(
                f"{ctx.where} ({ctx.kind}): confidence must be (N, C) and coordinates (N, 4) with the same N; "
                f"got {confidence.shape} and {coordinates.shape}"
            )
        if classes is not None and confidence.shape[1] != classes:
            raise MLCFeatureTypeError(f"{ctx.where} ({ctx.kind}): confidence has {confidence.shape[1]} columns for {classes} class labels")
        iou = _override(values, names["iou"], iou_default)
        threshold = _override(values, names["threshold"], confidence_default)
        return confidence, coordinates, iou, threshold

    def outputs(confidence, coordinates) -> dict:
        return {names["confidence_out"]: confidence, names["coordinates_out"]: coordinates}

    if fixed:

        def fn(params: dict, values: dict) -> dict:
            confidence, coordinates, iou, threshold = inputs(values)
            conf_out, coord_out, _ = suppressed_rows(confidence, coordinates, iou, threshold, per_class, hi)
            return outputs(conf_out, coord_out)

        return Stage(fn)

    def fn_eager(params: dict, values: dict) -> dict:
        confidence, coordinates, iou, threshold = inputs(values)
        rows = max(confidence.shape[0], lo)
        conf_out, coord_out, count = _suppressed_rows_jit(confidence, coordinates, iou, threshold, per_class, rows)
        n = max(int(count), lo)
        if hi >= 0:
            n = min(n, hi)
        return outputs(np.asarray(conf_out)[:n], np.asarray(coord_out)[:n])

    return Stage(fn_eager, eager=True)


def _override(values: dict, name: str, default: float):
    """A threshold input's value when the model declares it and the caller gave it."""
    if name and name in values:
        return jnp.reshape(jnp.asarray(values[name], FLOAT), ())
    return FLOAT(default)

