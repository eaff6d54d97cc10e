"""``kNearestNeighborsClassifier`` (NearestNeighbors.proto).

The model stores its examples (``nearestNeighborsIndex.floatSamples``, each
``numberOfDimensions`` long) and one label per example (``stringClassLabels`` /
``int64ClassLabels``). A prediction:

1. distances: ``squaredEuclideanDistance`` (the only ``DistanceFunction``) from the input to
   every example;
2. the ``k = numberOfNeighbors.defaultValue`` nearest examples (all of them when the model
   holds fewer than k). The index type (``linearIndex`` or ``singleKdTreeIndex``) is an
   acceleration structure that does not change the answer: mlc computes the exact brute-force
   distances to all examples, which is jittable and what a linear index does; a kd-tree with
   any ``leafSize`` finds the same neighbors. Examples at equal distance are taken lower
   index first;
3. votes: ``uniformWeighting`` gives each neighbor one vote; ``inverseDistanceWeighting``
   gives ``1 / distance`` with the model's distance function, i.e. the squared Euclidean one
   (the proto: "a nearest neighbor with highest sum of (1 / distance) is picked"). An example
   at distance zero takes all the weight (with others at zero, they share it), as
   scikit-learn's ``weights='distance'`` treats exact matches;
4. the label is the class with the largest vote; a tie goes to the smallest label (the first
   of the sorted labels, as scikit-learn's ``KNeighborsClassifier.predict`` breaks it). The
   probability output (``predictedProbabilitiesName``, "probabilities / score for each
   possible label" in coremltools' builder) holds each class's share of the vote, as
   scikit-learn's ``predict_proba``.

A model with no examples predicts ``defaultStringLabel`` / ``defaultInt64Label`` (probability 1).

``numberOfNeighbors`` is an ``Int64Parameter``: its default must be positive and inside its
``range`` or ``set`` when one is given (Core ML's validator). Examples (float32, as the proto's
``FloatVector`` holds them) and labels (as indices into the sorted classes) are params, so an
update can add examples; distances are computed in the input's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic import values
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.frontends.classic.values import classifier_outputs, vectorize

# The dtype classic models compute in: double (``values.FLOAT``).
FLOAT = values.FLOAT


def _examples(ctx: StageContext, index) -> np.ndarray:
    dims = index.numberOfDimensions
    if dims <= 0:
        ctx.fail(f"numberOfDimensions is {dims}; it must be positive")
    for i, sample in enumerate(index.floatSamples):
        if len(sample.vector) != dims:
            ctx.fail(f"example {i} has {len(sample.vector)} values; numberOfDimensions is {dims}")
    rows = [list(s.vector) for s in index.floatSamples]
    return np.asarray(rows, np.float32).reshape(len(rows), dims)


def _check_index(ctx: StageContext, index) -> None:
    which = index.WhichOneof("IndexType")
    if which is None:
        ctx.fail("no index type: set linearIndex or singleKdTreeIndex")
    if which == "singleKdTreeIndex" and index.singleKdTreeIndex.leafSize <= 0:
        ctx.fail(f"singleKdTreeIndex.leafSize is {index.singleKdTreeIndex.leafSize}; it must be positive")
    if index.WhichOneof("DistanceFunction") != "squaredEuclideanDistance":
        ctx.fail("no distance function: set squaredEuclideanDistance")


def _labels(ctx: StageContext, message, n_examples: int) -> tuple[list, object]:
    """Each example's label and the default label, checked as Core ML's validator does."""
    which = message.WhichOneof("ClassLabels")
    default_which = message.WhichOneof("DefaultClassLabel")
    labels = []
    if which == "stringClassLabels":
        labels = list(message.stringClassLabels.vector)
    elif which == "int64ClassLabels":
        labels = [int(v) for v in message.int64ClassLabels.vector]
    if default_which is not None and which is not None:
        if (default_which == "defaultStringLabel") != (which == "stringClassLabels"):
            ctx.fail("the class labels and the default class label have different types")
    if default_which is None and not labels:
        ctx.fail("no class labels and no default class label")
    if len(labels) != n_examples:
        ctx.fail(f"{len(labels)} labels for {n_examples} examples (one label per example)")
    default = None
    if default_which == "defaultStringLabel":
        default = message.defaultStringLabel
    elif default_which == "defaultInt64Label":
        default = int(message.defaultInt64Label)
    return labels, default


def number_of_neighbors(ctx: StageContext, parameter) -> int:
    """``numberOfNeighbors.defaultValue``, checked against its allowed range or set."""
    k = int(parameter.defaultValue)
    if k <= 0:
        ctx.fail(f"numberOfNeighbors is {k}; it must be positive")
    allowed = parameter.WhichOneof("AllowedValues")
    if allowed == "range":
        low, high = parameter.range.minValue, parameter.range.maxValue
        if low <= 0 or high < low:
            ctx.fail(f"numberOfNeighbors allows the range [{low}, {high}]; it must be positive and non-empty")
        if not low <= k <= high:
            ctx.fail(f"numberOfNeighbors is {k}, outside its allowed range [{low}, {high}]")
    elif allowed == "set":
        values = list(parameter.set.values)
        if any(v <= 0 for v in values):
            ctx.fail(f"numberOfNeighbors allows {values}; the values must be positive")
        if k not in values:
            ctx.fail(f"numberOfNeighbors is {k}, not one of its allowed values {sorted(values)}")
    return k


def _weights(distances, inverse: bool):
    if not inverse:
        return jnp.ones_like(distances)
    exact = distances == 0
    return jnp.where(jnp.any(exact), exact.astype(distances.dtype), 1.0 / jnp.where(exact, 1.0, distances))


def _check_width(ctx: StageContext, x, dims: int) -> None:
    if x.shape[0] != dims:
        raise MLCFeatureTypeError(f"{ctx.where} ({ctx.kind}): the input holds {x.shape[0]} numbers; the model's examples have {dims}")


@model_type("kNearestNeighborsClassifier")
def k_nearest_neighbors_classifier(ctx: StageContext) -> Stage:
    message = ctx.message
    index = message.nearestNeighborsIndex
    _check_index(ctx, index)
    if message.WhichOneof("WeightingScheme") is None:
        ctx.fail("no weighting scheme: set uniformWeighting or inverseDistanceWeighting")
    inverse = message.WhichOneof("WeightingScheme") == "inverseDistanceWeighting"
    k = number_of_neighbors(ctx, message.numberOfNeighbors)
    examples = _examples(ctx, index)
    labels, default = _labels(ctx, message, examples.shape[0])
    dims = examples.shape[1]

    if not labels:
        def empty(params: dict, values: dict) -> dict:
            _check_width(ctx, vectorize(ctx, values), dims)
            return classifier_outputs(ctx, jnp.ones((1,), FLOAT), (default,))

        return Stage(empty, {})

    classes = tuple(sorted(set(labels)))
    class_of = {c: i for i, c in enumerate(classes)}
    params = {"examples": examples, "labels": np.asarray([class_of[v] for v in labels], np.int32)}

    def fn(params: dict, values: dict) -> dict:
        x = vectorize(ctx, values)
        _check_width(ctx, x, dims)
        examples = params["examples"]
        distances = jnp.sum(jnp.square(examples.astype(x.dtype) - x), axis=1)
        nearest = min(k, examples.shape[0])
        negative, which = jax.lax.top_k(-distances, nearest)  # ties: lower index first
        weights = _weights(-negative, inverse)
        votes = jax.nn.one_hot(params["labels"][which], len(classes), dtype=weights.dtype).T @ weights
        return classifier_outputs(ctx, votes / jnp.sum(votes), classes)

    return Stage(fn, params)
