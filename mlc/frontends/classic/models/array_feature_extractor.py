"""``arrayFeatureExtractor`` (ArrayFeatureExtractor.proto): the values at ``extractIndex``
(zero-based) of the input multiarray.

The output type decides the shape, as Apple's validator and coremltools' builder
(``create_array_feature_extractor``) do: a double or int64 output takes exactly one index and
is that scalar (an int64 output truncates the value toward zero, as a C cast does); a
multiarray output is the 1-D array of the selected values, one element per index, even for a
single index. Indices count over the array's elements in row-major order.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT, INT
from mlc.frontends.classic.stage import Stage, StageContext

OUTPUT_KINDS = ("double", "int64", "multiArray")


def _indices(ctx: StageContext, feature) -> np.ndarray:
    indices = np.asarray(list(ctx.message.extractIndex), np.int64)
    if indices.size == 0:
        ctx.fail("no extractIndex given")
    if feature.shape and feature.shape_ranges is None and not feature.enumerated_shapes:
        size = math.prod(feature.shape)
        if indices.max() >= size:
            ctx.fail(f"extractIndex {int(indices.max())} is out of range for the input's {size} elements")
    return indices


@model_type("arrayFeatureExtractor")
def array_feature_extractor(ctx: StageContext) -> Stage:
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"takes exactly one input array and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), (out, out_feature) = next(iter(ctx.inputs.items())), next(iter(ctx.outputs.items()))
    if feature.kind != "multiArray":
        ctx.fail(f"input {name!r} is a {feature.kind}; the extractor takes a multiarray")
    if out_feature.kind not in OUTPUT_KINDS:
        ctx.fail(f"output {out!r} is a {out_feature.kind}; it must be a double, an int64 or a multiarray")
    indices = _indices(ctx, feature)
    scalar = out_feature.kind != "multiArray"
    if scalar and indices.size != 1:
        ctx.fail(f"a {out_feature.kind} output takes exactly one extractIndex, got {indices.size}")
    top = int(indices.max())

    def fn(params: dict, values: dict) -> dict:
        value = values[name]
        if isinstance(value, (str, dict, list)):
            raise MLCFeatureTypeError(f"{ctx.where} (arrayFeatureExtractor): input {name!r} is a {type(value).__name__}, not a multiarray")
        flat = jnp.reshape(jnp.asarray(value), (-1,))
        if top >= flat.shape[0]:
            raise MLCFeatureTypeError(
                f"{ctx.where} (arrayFeatureExtractor): extractIndex {top} is out of range for input {name!r} of {flat.shape[0]} elements"
            )
        picked = flat[indices]
        if not scalar:
            return {out: picked}
        item = picked[0]
        return {out: item.astype(INT) if out_feature.kind == "int64" else item.astype(FLOAT)}

    return Stage(fn, {})
