"""``featureVectorizer`` (FeatureVectorizer.proto): the inputs named in ``inputList``, in
that order, concatenated into one 1-D multiarray.

Each ``InputColumn`` gives ``inputDimensions`` values: a double or int64 gives one, a
multiarray its elements (row-major), and an int64-keyed dictionary is a sparse vector
``{index: value}`` expanded to ``inputDimensions`` values with zeros where a key is absent
(what coremltools' sklearn converters feed it from ``dictVectorizer`` and sparse
``oneHotEncoder`` stages). A key outside ``[0, inputDimensions)`` or an array of another size
is refused. Numeric inputs concatenate in the jitted program; a dictionary input makes the
stage run on the host.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext

NUMERIC = ("double", "int64", "multiArray")


def _columns(ctx: StageContext) -> list[tuple[str, int, str]]:
    """(input name, dimensions, feature kind) per ``inputList`` entry, checked against the
    model's declared inputs."""
    columns = []
    for column in ctx.message.inputList:
        name, size = column.inputColumn, int(column.inputDimensions)
        if size <= 0:
            ctx.fail(f"input column {name!r} has inputDimensions {size}; it must be positive")
        feature = ctx.inputs.get(name)
        if feature is None:
            ctx.fail(f"input column {name!r} is not an input of the model (inputs: {list(ctx.inputs)})")
        if feature.kind == "dictionary" and feature.key_kind != "int64":
            ctx.fail(f"input column {name!r} is a dictionary with {feature.key_kind} keys; only int64 keys (indices) vectorize")
        elif feature.kind not in NUMERIC + ("dictionary",):
            ctx.fail(f"input column {name!r} is a {feature.kind}; it must be a double, int64, multiarray or dictionary")
        if feature.kind in ("double", "int64") and size != 1:
            ctx.fail(f"input column {name!r} is a scalar {feature.kind} but declares {size} dimensions")
        if feature.kind == "multiArray" and feature.shape and feature.shape_ranges is None and not feature.enumerated_shapes:
            if math.prod(feature.shape) != size:
                ctx.fail(f"input column {name!r} declares {size} dimensions, its array shape {feature.shape} holds {math.prod(feature.shape)}")
        columns.append((name, size, feature.kind))
    if not columns:
        ctx.fail("inputList is empty")
    return columns


def _refuse(ctx: StageContext, message: str):
    raise MLCFeatureTypeError(f"{ctx.where} (featureVectorizer): {message}")


def _present(ctx: StageContext, values: dict, name: str):
    if name not in values:
        _refuse(ctx, f"input {name!r} is missing")
    return values[name]


def _numeric(ctx: StageContext, name: str, size: int, value, xp):
    if isinstance(value, (str, dict, list)):
        _refuse(ctx, f"input {name!r} is a {type(value).__name__}; expected numbers")
    flat = xp.reshape(xp.asarray(value, FLOAT), (-1,))
    if flat.shape[0] != size:
        _refuse(ctx, f"input {name!r} holds {flat.shape[0]} values, inputList declares {size}")
    return flat


def _sparse(ctx: StageContext, name: str, size: int, value) -> np.ndarray:
    if not isinstance(value, dict):
        _refuse(ctx, f"input {name!r} is a {type(value).__name__}; expected a dictionary of index -> value")
    dense = np.zeros(size, FLOAT)
    for key, v in value.items():
        if isinstance(key, (bool, str)) or not isinstance(key, (int, np.integer)) or not 0 <= key < size:
            _refuse(ctx, f"input {name!r} has key {key!r}; keys must be indices in [0, {size})")
        dense[int(key)] = v
    return dense


@model_type("featureVectorizer")
def feature_vectorizer(ctx: StageContext) -> Stage:
    columns = _columns(ctx)
    if len(ctx.outputs) != 1:
        ctx.fail(f"a feature vectorizer has one output, got {len(ctx.outputs)}")
    out = next(iter(ctx.outputs))
    host = any(kind == "dictionary" for _, _, kind in columns)

    def jax_fn(params: dict, values: dict) -> dict:
        parts = [_numeric(ctx, name, size, _present(ctx, values, name), jnp) for name, size, _ in columns]
        return {out: jnp.concatenate(parts)}

    def host_fn(params: dict, values: dict) -> dict:
        parts = []
        for name, size, kind in columns:
            value = _present(ctx, values, name)
            parts.append(_sparse(ctx, name, size, value) if kind == "dictionary" else _numeric(ctx, name, size, value, np))
        return {out: np.concatenate(parts)}

    return Stage(host_fn if host else jax_fn, {}, host=host)
