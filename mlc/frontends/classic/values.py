"""Helpers shared by classic builders: vectorising inputs, class labels, standard outputs."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.classification import Classification
from mlc.frontends.classic.stage import StageContext

# Classic models compute in double precision, as Core ML's classic engines do (scikit-learn and
# coremltools' tests hold Core ML to 1e-7 on regressors): ``mlc.Model`` runs them with JAX's
# 64-bit mode on (``jax.enable_x64``), and stages cast with these.
FLOAT = np.float64
INT = np.int64


def vectorize(ctx: StageContext, values: dict):
    """Core ML's "vectorizable" inputs: every numeric input (double, int64, multiarray),
    flattened and concatenated in declaration order, as one 1-D vector (double)."""
    parts = []
    for name in ctx.inputs:
        value = values[name]
        if isinstance(value, (str, dict, list)):
            raise MLCFeatureTypeError(
                f"{ctx.where} ({ctx.kind}): input {name!r} is a {type(value).__name__}; this model type takes numbers "
                "(a dictionary goes through a dictVectorizer stage first)"
            )
        parts.append(jnp.reshape(jnp.asarray(value, FLOAT), (-1,)))
    if not parts:
        ctx.fail("the model has no inputs")
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def class_labels(ctx: StageContext, message: Any) -> tuple:
    """``stringClassLabels`` / ``int64ClassLabels`` of a classifier message, as a tuple."""
    which = message.WhichOneof("ClassLabels")
    if which == "stringClassLabels":
        return tuple(message.stringClassLabels.vector)
    if which == "int64ClassLabels":
        return tuple(int(v) for v in message.int64ClassLabels.vector)
    ctx.fail("the classifier declares no class labels")


def classifier_outputs(ctx: StageContext, scores, labels: tuple) -> dict:
    """A classifier's outputs: the label (``predictedFeatureName``) and the probability
    dictionary (``predictedProbabilitiesName``), both carried by one ``Classification``."""
    result = Classification(scores, labels)
    names = [n for n in (ctx.predicted_feature_name, ctx.predicted_probabilities_name) if n]
    if not names:
        names = list(ctx.outputs)[:2]
    return {n: result for n in names}


def regressor_outputs(ctx: StageContext, value) -> dict:
    """A regressor's output, under ``predictedFeatureName`` (else its single declared output)."""
    name = ctx.predicted_feature_name or next(iter(ctx.outputs), None)
    if name is None:
        ctx.fail("the regressor declares no output")
    return {name: value}


