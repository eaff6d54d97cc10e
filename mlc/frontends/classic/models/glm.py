"""``glmRegressor`` and ``glmClassifier`` (GLMRegressor.proto, GLMClassifier.proto).

Scores are ``s = W x + offset`` over the vectorised inputs (one row of ``weights`` per
output). The post-evaluation transform maps scores through the logistic function (Logit) or
the standard normal CDF (Probit). Classifiers:

- one weight row (binary): ``p(labels[1]) = f(s)``, ``p(labels[0]) = 1 - f(s)``;
- OneVsRest with one row per class: ``f(s_k)`` normalised to sum to one (as scikit-learn's
  one-vs-rest ``predict_proba``);
- ReferenceClass with K-1 rows: the first class is the reference with score 0 and the
  probabilities are the softmax of ``[0, s_1, ..., s_{K-1}]`` (Logit only; Probit is binary only,
  as the proto says).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.frontends.classic.values import FLOAT, class_labels, classifier_outputs, regressor_outputs, vectorize


def _weights(ctx: StageContext, message) -> tuple[np.ndarray, np.ndarray]:
    rows = [list(r.value) for r in message.weights]
    if not rows:
        ctx.fail("no weights")
    if len({len(r) for r in rows}) != 1:
        ctx.fail("weight rows have different lengths")
    if len(message.offset) != len(rows):
        ctx.fail(f"{len(message.offset)} offsets for {len(rows)} weight rows (they must be the same size)")
    return np.asarray(rows, FLOAT), np.asarray(message.offset, FLOAT)


def _scores(ctx: StageContext, params: dict, values: dict):
    x = vectorize(ctx, values)
    w = params["weights"]
    if x.shape[0] != w.shape[1]:
        raise MLCFeatureTypeError(f"{ctx.where} ({ctx.kind}): the inputs hold {x.shape[0]} numbers, the weights expect {w.shape[1]}")
    return w @ x + params["offset"]


def _probit(s):
    return jax.scipy.stats.norm.cdf(s)


@model_type("glmRegressor")
def glm_regressor(ctx: StageContext) -> Stage:
    message = ctx.message
    weights, offset = _weights(ctx, message)
    transform = {0: None, 1: jax.nn.sigmoid, 2: _probit}.get(message.postEvaluationTransform, "bad")
    if transform == "bad":
        ctx.fail(f"unknown postEvaluationTransform {message.postEvaluationTransform}")

    def fn(params: dict, values: dict) -> dict:
        y = _scores(ctx, params, values)
        if transform is not None:
            y = transform(y)
        return regressor_outputs(ctx, y[0] if y.shape[0] == 1 else y)

    return Stage(fn, {"weights": weights, "offset": offset})


@model_type("glmClassifier")
def glm_classifier(ctx: StageContext) -> Stage:
    message = ctx.message
    weights, offset = _weights(ctx, message)
    labels = class_labels(ctx, message)
    rows, k = weights.shape[0], len(labels)
    probit = message.postEvaluationTransform == 1
    if message.postEvaluationTransform not in (0, 1):
        ctx.fail(f"unknown postEvaluationTransform {message.postEvaluationTransform}")
    one_vs_rest = message.classEncoding == 1
    if rows == 1:
        if k != 2:
            ctx.fail(f"one weight row (a binary classifier) but {k} class labels")
    elif one_vs_rest and rows != k:
        ctx.fail(f"OneVsRest needs one weight row per class: {rows} rows, {k} labels")
    elif not one_vs_rest and rows != k - 1:
        ctx.fail(f"ReferenceClass needs K-1 weight rows: {rows} rows, {k} labels")
    if probit and rows > 1:
        ctx.fail("the Probit transform supports binary classification only")
    link = _probit if probit else jax.nn.sigmoid

    def fn(params: dict, values: dict) -> dict:
        s = _scores(ctx, params, values)
        if rows == 1:
            p = link(s[0])
            probs = jnp.stack([1.0 - p, p])
        elif one_vs_rest:
            p = link(s)
            probs = p / jnp.sum(p)
        else:
            probs = jax.nn.softmax(jnp.concatenate([jnp.zeros((1,), s.dtype), s]))
        return classifier_outputs(ctx, probs, labels)

    return Stage(fn, {"weights": weights, "offset": offset})
