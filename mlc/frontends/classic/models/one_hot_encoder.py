"""``oneHotEncoder`` (OneHotEncoder.proto): a category becomes a vector of zeros with a single
one, at the category's position in ``stringCategories`` or ``int64Categories``.

``outputSparse`` makes the output a dictionary ``{position: 1.0}`` instead of an array (what
coremltools' sklearn converter emits, one encoder per column, densified by a following
``featureVectorizer``). ``handleUnknown``: ``ErrorOnUnknown`` refuses a value not among the
categories, ``IgnoreUnknown`` outputs all zeros (an empty dictionary when sparse).

Apple's validator takes one string or int64 input. mlc also takes a multiarray of category
ids: one id encodes like an int64, ``n`` ids give ``n`` one-hot rows ``(n, K)`` (dense only).
String categories and sparse outputs run on the host; int64 ids with a dense output run in
the jitted program, where an unknown id under ``ErrorOnUnknown`` is a run-time check
(``mlc.runtime.checks``: ``MLCPredictionError`` after the call) and, whenever the value is known
while the stage runs, an ``MLCFeatureTypeError`` naming it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError, MLCUnsupportedError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.runtime import checks

INT32 = np.iinfo(np.int32)


def _categories(ctx: StageContext) -> list:
    which = ctx.message.WhichOneof("CategoryType")
    if which is None:
        ctx.fail("no categories: set stringCategories or int64Categories")
    categories = list(getattr(ctx.message, which).vector)
    if not categories:
        ctx.fail(f"{which} is empty")
    return categories if which == "stringCategories" else [int(c) for c in categories]


def _check_features(ctx: StageContext, strings: bool, sparse: bool) -> tuple[str, str, str]:
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"takes one input and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), (out, out_feature) = next(iter(ctx.inputs.items())), next(iter(ctx.outputs.items()))
    allowed = ("string",) if strings else ("int64", "multiArray")
    if feature.kind not in allowed:
        ctx.fail(f"input {name!r} is a {feature.kind}; {'string' if strings else 'int64'} categories take a {' or '.join(allowed)} input")
    if sparse and out_feature.kind != "dictionary":
        ctx.fail(f"outputSparse is set, so output {out!r} must be a dictionary, not a {out_feature.kind}")
    if not sparse and out_feature.kind != "multiArray":
        ctx.fail(f"output {out!r} is a {out_feature.kind}; a dense one-hot output is a multiarray (or set outputSparse)")
    return name, out, feature.kind


def _unknown_message(ctx: StageContext, name: str, value, categories: list) -> str:
    shown = categories[:10] + (["..."] if len(categories) > 10 else [])
    return f"{ctx.where} (oneHotEncoder): input {name!r} value {value!r} is not one of the categories {shown} (handleUnknown is ErrorOnUnknown)"


def _host_key(ctx: StageContext, name: str, value, strings: bool):
    if strings:
        if not isinstance(value, str):
            raise MLCFeatureTypeError(f"{ctx.where} (oneHotEncoder): input {name!r} is a {type(value).__name__}, not a string")
        return value
    if isinstance(value, (str, dict, list)):
        raise MLCFeatureTypeError(f"{ctx.where} (oneHotEncoder): input {name!r} is a {type(value).__name__}, not an int64")
    arr = np.asarray(value)
    if arr.size != 1:
        raise MLCFeatureTypeError(f"{ctx.where} (oneHotEncoder): input {name!r} holds {arr.size} values; a sparse one-hot output takes one")
    return int(arr.reshape(-1)[0])


def _host_stage(ctx, name, out, categories, strings, sparse, ignore) -> Stage:
    position = {c: i for i, c in enumerate(categories)}

    def fn(params: dict, values: dict) -> dict:
        key = _host_key(ctx, name, values[name], strings)
        i = position.get(key)
        if i is None and not ignore:
            raise MLCFeatureTypeError(_unknown_message(ctx, name, key, categories))
        if sparse:
            return {out: {} if i is None else {i: 1.0}}
        dense = np.zeros(len(categories), FLOAT)
        if i is not None:
            dense[i] = 1.0
        return {out: dense}

    return Stage(fn, {}, host=True)


def _refuse_unknown(ctx, name, ids, known, categories) -> None:
    if isinstance(known, jax.core.Tracer):
        checks.require(known, _unknown_message(ctx, name, "(known at run time)", categories))
        return
    known, ids = np.asarray(known), np.asarray(ids)
    if not known.all():
        value = ids[~known][0]
        raise MLCFeatureTypeError(_unknown_message(ctx, name, value.item(), categories))


def _jax_stage(ctx, name, out, categories, ignore) -> Stage:
    if min(categories) < INT32.min or max(categories) > INT32.max:
        raise MLCUnsupportedError(f"{ctx.where} (oneHotEncoder): int64 categories beyond the int32 range (JAX computes in 32 bits)")
    cats = np.asarray(categories, np.int32)

    def fn(params: dict, values: dict) -> dict:
        value = values[name]
        if isinstance(value, (str, dict, list)):
            raise MLCFeatureTypeError(f"{ctx.where} (oneHotEncoder): input {name!r} is a {type(value).__name__}, not an int64")
        x = jnp.asarray(value)
        ids = jnp.reshape(x, (-1,))
        # float ids (a multiarray of doubles) compare as floats: exact for |id| < 2**24
        hot = ids[:, None] == (cats.astype(FLOAT) if jnp.issubdtype(ids.dtype, jnp.floating) else cats)[None, :]
        result = {out: hot.astype(FLOAT)[0] if x.size == 1 else hot.astype(FLOAT)}
        if not ignore:
            with checks.collecting() as flags:
                _refuse_unknown(ctx, name, ids, jnp.any(hot, axis=1), categories)
            if flags:
                result[checks.CHECKS] = dict(flags)
        return result

    return Stage(fn, {})


@model_type("oneHotEncoder")
def one_hot_encoder(ctx: StageContext) -> Stage:
    categories = _categories(ctx)
    strings = isinstance(categories[0], str)
    sparse = bool(ctx.message.outputSparse)
    if ctx.message.handleUnknown not in (0, 1):
        ctx.fail(f"unknown handleUnknown {ctx.message.handleUnknown} (ErrorOnUnknown=0, IgnoreUnknown=1)")
    ignore = ctx.message.handleUnknown == 1
    name, out, kind = _check_features(ctx, strings, sparse)
    if len(set(categories)) != len(categories):
        ctx.fail("a category appears more than once")
    if strings or sparse:
        return _host_stage(ctx, name, out, categories, strings, sparse, ignore)
    return _jax_stage(ctx, name, out, categories, ignore)
