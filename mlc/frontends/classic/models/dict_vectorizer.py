"""``dictVectorizer`` (DictVectorizer.proto): a dictionary becomes a vector by an index mapping.

The key at position ``i`` of ``stringToIndex`` (or ``int64ToIndex``) puts its value at index
``i``; keys absent from the input dictionary are zero. The output follows its declared type:
a multiarray is the dense vector of ``len(mapping)`` values; an int64-keyed dictionary is the
sparse ``{index: value}`` of the keys present (what coremltools' sklearn converter declares,
followed by a ``featureVectorizer`` that densifies it). The proto says every input key must
be in the mapping; Core ML (as coremltools' ``test_unseen_or_no_features`` checks against
scikit-learn) and scikit-learn drop keys it does not know, and so does mlc. Runs on the host.
"""

from __future__ import annotations

import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext


def _mapping(ctx: StageContext) -> dict:
    which = ctx.message.WhichOneof("Map")
    if which is None:
        ctx.fail("no mapping: set stringToIndex or int64ToIndex")
    keys = list(getattr(ctx.message, which).vector)
    if which == "int64ToIndex":
        keys = [int(k) for k in keys]
    index = {key: i for i, key in enumerate(keys)}
    if len(index) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        ctx.fail(f"key {duplicate!r} appears more than once in {which}")
    return index


def _key(key):
    return int(key) if isinstance(key, np.integer) else key


def _refuse(ctx: StageContext, message: str):
    raise MLCFeatureTypeError(f"{ctx.where} (dictVectorizer): {message}")


@model_type("dictVectorizer")
def dict_vectorizer(ctx: StageContext) -> Stage:
    index = _mapping(ctx)
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        ctx.fail(f"takes one input dictionary and one output, got {len(ctx.inputs)} and {len(ctx.outputs)}")
    (name, feature), (out, out_feature) = next(iter(ctx.inputs.items())), next(iter(ctx.outputs.items()))
    if feature.kind != "dictionary":
        ctx.fail(f"input {name!r} is a {feature.kind}; a dict vectorizer takes a dictionary")
    if out_feature.kind not in ("multiArray", "dictionary"):
        ctx.fail(f"output {out!r} is a {out_feature.kind}; it must be a multiarray or an int64-keyed dictionary")
    sparse = out_feature.kind == "dictionary"

    def fn(params: dict, values: dict) -> dict:
        value = values[name]
        if not isinstance(value, dict):
            _refuse(ctx, f"input {name!r} is a {type(value).__name__}, not a dictionary")
        found = {}
        for key, v in value.items():
            if isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.integer, np.floating)):
                _refuse(ctx, f"the value of key {key!r} is a {type(v).__name__}, not a number")
            position = index.get(_key(key))
            if position is not None:
                found[position] = float(v)
        if sparse:
            return {out: found}
        dense = np.zeros(len(index), FLOAT)
        for position, v in found.items():
            dense[position] = v
        return {out: dense}

    return Stage(fn, {}, host=True)
