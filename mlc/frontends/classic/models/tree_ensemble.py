"""``treeEnsembleRegressor`` and ``treeEnsembleClassifier`` (TreeEnsemble.proto).

The inputs are vectorised (every numeric input flattened, in declaration order). Each tree
starts at its root; a branch node sends the example to ``trueChildNodeId`` when
``x[branchFeatureIndex] <op> branchFeatureValue`` holds (``<=``, ``<``, ``>=``, ``>``, ``==``,
``!=`` by ``nodeBehavior``), else to ``falseChildNodeId``; a NaN input goes to the true child
when ``missingValueTracksTrueChild`` is set, else to the false child. The leaf reached adds
its sparse ``evaluationInfo`` (``evaluationIndex`` -> ``evaluationValue``) to the scores; the
scores of all trees are summed onto ``basePredictionValue`` (``numPredictionDimensions``
values; zeros when absent). ``relativeHitRate`` only guides Core ML's optimiser and is
ignored. Then ``postEvaluationTransform``:

- ``NoTransform``: the scores as they are;
- ``Regression_Logistic``: ``1 / (1 + exp(-s))`` on each score;
- ``Classification_SoftMax``: ``exp(s_i) / sum_j exp(s_j)``;
- ``Classification_SoftMaxWithZeroClassReference``: a softmax in which a reference class
  with score 0 comes first. With one prediction dimension and two classes that is
  ``[1 / (1 + exp(s)), 1 / (1 + exp(-s))]``; for other shapes the proto does not say which
  dimension is the reference, and mlc refuses the model rather than guess.

Classifiers (labels from ``stringClassLabels`` / ``int64ClassLabels``, else ``0..K-1``):

- binary, one prediction dimension and two labels: the transformed score is the probability
  of the second label, ``p(labels[1]) = f(s)`` and ``p(labels[0]) = 1 - f(s)``; the label is
  ``labels[1]`` when that probability exceeds 0.5 (scikit-learn's converter writes the class-1
  fraction with NoTransform, the gradient-boosting and xgboost converters a log-odds score
  with Regression_Logistic);
- multi-class, ``K`` dimensions and ``K`` labels: the transformed scores are the class
  probabilities and the label is the most probable class.

Traversal is vectorised (no per-node Python): at load the node list becomes flat arrays
(``_tree_tables``: every test normalised to ``xe[slot] <= t`` or ``==``, the two children of
a branch adjacent) and every tree advances one level per step, ``max_depth`` steps, with
gathers: ``node = first_child[node] + (0 if test else 1)``, leaves looping to themselves.
Trees go through in groups of ``TREES_PER_STEP`` per ``lax.scan`` step, which keeps the
per-level arrays of a batch small enough for the cache (about twice as fast as all trees at
once on 10,000 rows; ``bench/trees.md``). The ``perfect`` layout (every tree padded to a
complete binary tree, ``next = 2h + 1 + went_right``, no child table) measured slower and
stays selectable for the benchmark.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError, MLCUnsupportedError
from mlc.frontends.classic.models import _tree_tables as tables
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.frontends.classic.values import FLOAT, class_labels, classifier_outputs, regressor_outputs, vectorize

NO_TRANSFORM, SOFTMAX, LOGISTIC, SOFTMAX_ZERO_REFERENCE = range(4)

# The traversal layout ("walk" or "perfect") and how many trees advance together per scan
# step (0: all at once). scripts/bench_trees.py measures them; these defaults won.
LAYOUT = "walk"
TREES_PER_STEP = 32


def _input_width(ctx: StageContext) -> int | None:
    """How many numbers the vectorised input holds, when the description fixes it."""
    width = 0
    for feature in ctx.inputs.values():
        if feature.kind in ("double", "int64"):
            width += 1
        elif feature.kind == "multiArray" and feature.shape and not feature.shape_ranges and not feature.enumerated_shapes:
            width += int(np.prod(feature.shape))
        else:
            return None
    return width


# -- traversal -------------------------------------------------------------------------------


def _extended_input(ens: tables.Ensemble, x):
    """``[x[:n], -x[:n], 0]``: the values the normalised tests read (see ``_tree_tables``)."""
    head = x[: ens.n_read]
    return jnp.concatenate([head, -head, jnp.zeros((1,), x.dtype)])


def _goes_left(has_equal: bool, slot, threshold, flags, xe):
    """The normalised test of each node on the extended input ``xe``."""
    value = xe[slot]
    left = value <= threshold
    if has_equal:
        equal = jnp.where(jnp.isnan(value), (flags & tables.NAN_LEFT_FLAG) != 0, value == threshold)
        left = jnp.where((flags & tables.EQUAL_FLAG) != 0, equal, left)
    return left


def _walk_group(layout: tables.Layout, has_equal: bool, xe, table):
    """Leaf index per tree of one group: follow first_child (+1 when the test fails)."""
    slot, threshold, flags, first, roots = table
    node = roots
    for _ in range(layout.steps):
        left = _goes_left(has_equal, slot[node], threshold[node], flags[node] if has_equal else None, xe)
        node = first[node] + 1 - left.astype(jnp.int32)
    return node


def _perfect_group(layout: tables.Layout, has_equal: bool, xe, table):
    """Leaf index per tree of one group: heap arithmetic, no child table."""
    slot, threshold, flags = table[:3]
    g, depth = layout.group, layout.steps
    n_internal = (1 << depth) - 1
    tree_start = np.arange(g, dtype=np.int32) * n_internal
    heap = jnp.zeros((g,), jnp.int32)
    for _ in range(depth):
        node = tree_start + heap
        left = _goes_left(has_equal, slot[node], threshold[node], flags[node] if has_equal else None, xe)
        heap = 2 * heap + 2 - left.astype(jnp.int32)
    return np.arange(g, dtype=np.int32) * (n_internal + 1) + (heap - n_internal)


def _traversal(ens: tables.Ensemble, layout: tables.Layout):
    """``(params, evaluate(params, x) -> (n_dims,))``: summed leaf values, a scan over groups."""
    has_equal = ens.has_equal
    leaf_of = _perfect_group if layout.kind == "perfect" else _walk_group
    structure = [layout.slot, layout.flags]
    if layout.kind == "walk":
        structure += [layout.first_child, layout.roots]
    params = {"threshold": layout.threshold, "leaf_values": layout.leaf_values.astype(FLOAT)}

    def evaluate(p, x):
        xe = _extended_input(ens, x)

        def step(total, group):
            slot, flags, *rest = group["structure"]
            leaf = leaf_of(layout, has_equal, xe, (slot, group["threshold"], flags, *rest))
            return total + jnp.sum(group["leaf_values"][leaf], axis=0), None

        groups = {"structure": [jnp.asarray(a) for a in structure], "threshold": p["threshold"], "leaf_values": p["leaf_values"]}
        total, _ = jax.lax.scan(step, jnp.zeros((ens.n_dims,), x.dtype), groups)
        return total

    return params, evaluate


def _ensemble_scores(ctx: StageContext, message):
    """``(ensemble, params, scores(params, values) -> (n_dims,))`` for the message's trees."""
    ens = tables.build_ensemble(ctx, message.treeEnsemble, _input_width(ctx), FLOAT)
    kind = LAYOUT
    if kind == "perfect":
        layout = tables.perfect_layout(ens, TREES_PER_STEP)
    elif kind == "walk":
        layout = tables.walk_layout(ens, TREES_PER_STEP)
    else:
        raise ValueError(f"tree_ensemble.LAYOUT is {kind!r}; it takes 'walk' or 'perfect'")
    params, evaluate = _traversal(ens, layout)
    params["base"] = ens.base.astype(FLOAT)

    def scores(p, values):
        x = vectorize(ctx, values)
        if x.shape[0] < ens.n_read:
            raise MLCFeatureTypeError(
                f"{ctx.where} ({ctx.kind}): the inputs hold {x.shape[0]} numbers, the trees read feature {ens.n_read - 1}"
            )
        return evaluate(p, x) + p["base"]

    return ens, params, scores


def _transform_id(ctx: StageContext, message) -> int:
    transform = int(message.postEvaluationTransform)
    if transform not in range(4):
        ctx.fail(f"unknown postEvaluationTransform {transform}")
    return transform


def _refuse(ctx: StageContext, what: str):
    raise MLCUnsupportedError(f"{ctx.where} ({ctx.kind}): {what}")


# -- regressor -------------------------------------------------------------------------------


@model_type("treeEnsembleRegressor")
def tree_ensemble_regressor(ctx: StageContext) -> Stage:
    message = ctx.message
    transform = _transform_id(ctx, message)
    if transform == SOFTMAX_ZERO_REFERENCE:
        _refuse(ctx, "Classification_SoftMaxWithZeroClassReference on a regressor is undocumented (which output is the reference?)")
    ens, params, scores = _ensemble_scores(ctx, message)

    def fn(p: dict, values: dict) -> dict:
        y = scores(p, values)
        if transform == LOGISTIC:
            y = jax.nn.sigmoid(y)
        elif transform == SOFTMAX:
            y = jax.nn.softmax(y)
        return regressor_outputs(ctx, y[0] if ens.n_dims == 1 else y)

    return Stage(fn, params)


# -- classifier ------------------------------------------------------------------------------


def _labels(ctx: StageContext, message, n_dims: int) -> tuple:
    if message.WhichOneof("ClassLabels") is None:  # Core ML: classes 0..K-1 (0, 1 when binary)
        return (0, 1) if n_dims == 1 else tuple(range(n_dims))
    labels = class_labels(ctx, message)
    if not ((n_dims == 1 and len(labels) == 2) or (n_dims >= 2 and len(labels) == n_dims)):
        ctx.fail(f"numPredictionDimensions {n_dims} does not match the {len(labels)} class labels")
    return labels


def _binary_probabilities(transform: int, s):
    p = s if transform == NO_TRANSFORM else jax.nn.sigmoid(s)  # logistic == softmax([0, s])[1]
    return jnp.stack([1.0 - p, p])


def _multiclass_probabilities(transform: int, s):
    if transform == SOFTMAX:
        return jax.nn.softmax(s)
    if transform == LOGISTIC:
        return jax.nn.sigmoid(s)
    return s


@model_type("treeEnsembleClassifier")
def tree_ensemble_classifier(ctx: StageContext) -> Stage:
    message = ctx.message
    transform = _transform_id(ctx, message)
    ens, params, scores = _ensemble_scores(ctx, message)
    labels = _labels(ctx, message, ens.n_dims)
    binary = ens.n_dims == 1
    if binary and transform == SOFTMAX:
        _refuse(ctx, "Classification_SoftMax over a single prediction dimension is always 1; the binary semantics are undocumented")
    if not binary and transform == SOFTMAX_ZERO_REFERENCE:
        _refuse(
            ctx,
            f"Classification_SoftMaxWithZeroClassReference with {ens.n_dims} prediction dimensions is undocumented "
            "(only the binary case, one dimension, is well defined)",
        )

    def fn(p: dict, values: dict) -> dict:
        s = scores(p, values)
        probs = _binary_probabilities(transform, s[0]) if binary else _multiclass_probabilities(transform, s)
        return classifier_outputs(ctx, probs, labels)

    return Stage(fn, params)
