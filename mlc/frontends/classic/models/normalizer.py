"""``normalizer`` (Normalizer.proto): ``y = x / ||x||`` over the input multiarray.

``normType``: ``LMax`` divides by ``max_i |x_i|``, ``L1`` by ``sum_i |x_i|``, ``L2`` by
``sqrt(sum_i x_i^2)``. The proto writes LMax as ``max(x_i)``; mlc takes the largest magnitude,
as scikit-learn's ``Normalizer(norm="max")`` does (the model coremltools converts to LMax).
A zero norm leaves the input unchanged (all zeros), as scikit-learn does. The norm runs over
every element of the array (Core ML's validator allows one multiarray in and out).
"""

from __future__ import annotations

import jax.numpy as jnp

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext

NORMS = {0: "LMax", 1: "L1", 2: "L2"}


def _norm(kind: str, x):
    magnitude = jnp.abs(x)
    largest = jnp.max(magnitude)
    if kind == "LMax":
        return largest
    if kind == "L1":
        return jnp.sum(magnitude)
    # L2, scaled by the largest magnitude so that squares of large float32 values do not overflow
    safe = jnp.where(largest == 0, 1.0, largest)
    return largest * jnp.sqrt(jnp.sum(jnp.square(x / safe)))


@model_type("normalizer")
def normalizer(ctx: StageContext) -> Stage:
    kind = NORMS.get(ctx.message.normType)
    if kind is None:
        ctx.fail(f"unknown normType {ctx.message.normType} (LMax=0, L1=1, L2=2)")
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"a normalizer takes one input and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), out = next(iter(ctx.inputs.items())), next(iter(ctx.outputs))
    if feature.kind != "multiArray":
        ctx.fail(f"input {name!r} is a {feature.kind}; a normalizer takes a multiarray")

    def fn(params: dict, values: dict) -> dict:
        value = values[name]
        if isinstance(value, (str, dict, list)):
            raise MLCFeatureTypeError(f"{ctx.where} (normalizer): input {name!r} is a {type(value).__name__}, not a multiarray")
        x = jnp.asarray(value, FLOAT)
        norm = _norm(kind, x)
        return {out: x / jnp.where(norm == 0, 1.0, norm)}

    return Stage(fn, {})
