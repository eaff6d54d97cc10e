"""treeEnsembleRegressor / treeEnsembleClassifier against the libraries the trees came from
(scikit-learn and xgboost ``predict`` / ``predict_proba``, converted by coremltools) and
against a plain-Python walk of hand-built and random specs written here from the proto."""

import math

import jax
import numpy as np
import pytest

import mlc
from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.frontends.classic.values import FLOAT

sk = pytest.importorskip("sklearn")
from sklearn.ensemble import (  # noqa: E402
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402

RNG = np.random.default_rng(0)
# scikit-learn splits float32 inputs; Core ML compares doubles. float32-representable data
# makes both see the same numbers.
X = RNG.normal(size=(300, 4)).astype(np.float32).astype(np.float64)
# Summing a few hundred leaf values: a few ulps of the sum in float64, more in float32.
TOL = 1e-9 if FLOAT == np.float64 else 2e-5
MODES = (
    "BranchOnValueLessThanEqual",
    "BranchOnValueLessThan",
    "BranchOnValueGreaterThanEqual",
    "BranchOnValueGreaterThan",
    "BranchOnValueEqual",
    "BranchOnValueNotEqual",
)
OPS = (
    lambda x, t: x <= t,
    lambda x, t: x < t,
    lambda x, t: x >= t,
    lambda x, t: x > t,
    lambda x, t: x == t,
    lambda x, t: x != t,
)


def _sk_spec(estimator):
    if isinstance(estimator, (ExtraTreesRegressor, ExtraTreesClassifier)):
        # coremltools' convert() has no entry for ExtraTrees; its random-forest tree converter
        # writes them all the same (averaged trees, like a random forest).
        from coremltools.converters.sklearn._tree_ensemble import convert_tree_ensemble
        from coremltools.models import datatypes

        FEATURES = [("x", datatypes.Array(X.shape[1]))]

        if hasattr(estimator, "classes_"):
            return convert_tree_ensemble(estimator, FEATURES, "target", mode="classifier", class_labels=estimator.classes_)
        return convert_tree_ensemble(estimator, FEATURES, "target")
    from coremltools.converters import sklearn as skc

    return skc.convert(estimator, "x", "target").get_spec()


def _probabilities(out: dict, classes) -> np.ndarray:
    return np.array([out[c] for c in classes])


# -- scikit-learn ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "estimator",
    [
        DecisionTreeRegressor(max_depth=7, random_state=0),
        RandomForestRegressor(n_estimators=12, max_depth=5, random_state=0),
        ExtraTreesRegressor(n_estimators=12, max_depth=5, random_state=0),
        GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0),
    ],
    ids=type,
)
def test_sklearn_regressors_match_predict(estimator):
    y = X[:, 0] - 2 * X[:, 1] ** 2 + np.sin(3 * X[:, 2])
    estimator.fit(X, y)
    model = mlc.load(_sk_spec(estimator))
    got = model.predict_batch({"x": X})["target"]
    np.testing.assert_allclose(got, estimator.predict(X), rtol=TOL, atol=TOL)
    rows = [model.predict({"x": row})["target"] for row in X[:5]]
    assert all(isinstance(r, float) for r in rows)
    np.testing.assert_allclose(rows, got[:5], rtol=1e-12, atol=1e-12)  # vmapped sums may reassociate


def _labels_agree(got_labels, expected_labels, probs):
    """Labels agree wherever the two most probable classes are not tied (ties are broken
    towards the first class by scikit-learn; a float64 sum can tip them either way)."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-9
    assert clear.mean() > 0.8
    assert [g for g, c in zip(got_labels, clear) if c] == [e for e, c in zip(expected_labels, clear) if c]


CLASSIFIERS = [
    DecisionTreeClassifier(max_depth=6, random_state=0),
    RandomForestClassifier(n_estimators=12, max_depth=5, random_state=0),
    ExtraTreesClassifier(n_estimators=12, max_depth=5, random_state=0),
    GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0),
]


def _forest_size(estimator) -> int:
    return getattr(estimator, "n_estimators", 1)


@pytest.mark.parametrize("estimator", CLASSIFIERS, ids=type)
@pytest.mark.parametrize("labels", [["no", "yes"], [3, 7, 11]], ids=["binary-str", "3class-int"])
def test_sklearn_classifiers_match_predict_proba(estimator, labels):
    score = X[:, 0] + X[:, 1] * X[:, 2]
    y = np.array(labels)[np.digitize(score, np.quantile(score, np.linspace(0, 1, len(labels) + 1)[1:-1]))]
    estimator.fit(X, y)
    model = mlc.load(_sk_spec(estimator))
    out = model.predict_batch({"x": X})
    expected = estimator.predict_proba(X)
    got = np.array([_probabilities(p, estimator.classes_) for p in out["classProbability"]])
    tol = TOL
    if len(labels) == 2 and not isinstance(estimator, GradientBoostingClassifier):
        # The converter writes p(class 1) with NoTransform and moves a leaf at exactly 0.5 to
        # 0.5 - 1e-7 (so that Core ML's label breaks the tie as scikit-learn does).
        tol = 1.1e-7
    elif len(labels) > 2 and not isinstance(estimator, GradientBoostingClassifier):
        # Multi-class forests: the converter writes each tree's class fractions unscaled, and
        # Core ML (NoTransform) reports their sum, n_trees * predict_proba (coremltools#1541).
        expected = expected * _forest_size(estimator)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    _labels_agree(out["target"], list(estimator.predict(X)), expected)
    one = model.predict({"x": X[0]})
    assert one["target"] == out["target"][0] and type(one["target"]) is type(labels[0])
    np.testing.assert_allclose(_probabilities(one["classProbability"], estimator.classes_), got[0], rtol=1e-12, atol=1e-12)


# -- xgboost -----------------------------------------------------------------------------------

xgb = pytest.importorskip("xgboost")
NAMES = ["f0", "f1", "f2", "f3"]
# Training data with missing values, so that the trees learn a default direction for NaN.
X_NAN = X.copy()
X_NAN[RNG.random(X.shape) < 0.15] = np.nan
# xgboost accumulates its margin in float32: a few float32 ulps of the sum.
XGB_TOL = 1e-5


def _xgb_predict(model, rows):
    return [model.predict({n: float(v) for n, v in zip(NAMES, row)}) for row in rows]


def _xgb_spec(estimator, mode):
    from coremltools.converters import xgboost as xgc

    return xgc.convert(estimator, feature_names=NAMES, target="target", mode=mode).get_spec()


def test_xgboost_regressor_matches_predict_with_missing_values():
    # coremltools' converter writes basePredictionValue 0.5 (xgboost < 2's default); xgboost 2
    # estimates base_score from the data, so the test pins it to 0.5.
    y = X[:, 0] + X[:, 1] ** 2 + 3
    estimator = xgb.XGBRegressor(n_estimators=30, max_depth=4, base_score=0.5).fit(X_NAN, y)
    model = mlc.load(_xgb_spec(estimator, "regressor"))
    rows = X_NAN[:20]
    got = [o["target"] for o in _xgb_predict(model, rows)]
    np.testing.assert_allclose(got, estimator.predict(rows), rtol=XGB_TOL, atol=XGB_TOL)


def test_xgboost_2_estimated_base_score_is_not_in_the_converted_model():
    """What the converter does with xgboost 2's estimated base_score: it keeps 0.5, so the
    Core ML model (and mlc, which runs it as written) is off by base_score - 0.5."""
    import json

    y = X[:, 0] + 3
    estimator = xgb.XGBRegressor(n_estimators=10, max_depth=3).fit(X, y)
    config = json.loads(estimator.get_booster().save_config())
    base = float(config["learner"]["learner_model_param"]["base_score"])
    model = mlc.load(_xgb_spec(estimator, "regressor"))
    got = [o["target"] for o in _xgb_predict(model, X[:10])]
    np.testing.assert_allclose(got, estimator.predict(X[:10]) - (base - 0.5), rtol=XGB_TOL, atol=XGB_TOL)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_xgboost_classifier_matches_predict_proba(n_classes):
    score = X[:, 0] - X[:, 1] * X[:, 3]
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    objective = "binary:logistic" if n_classes == 2 else "multi:softprob"
    estimator = xgb.XGBClassifier(n_estimators=25, max_depth=3, objective=objective, base_score=0.5)
    estimator.fit(X_NAN, y)
    model = mlc.load(_xgb_spec(estimator, "classifier"))
    rows = X_NAN[:20]
    out = _xgb_predict(model, rows)
    expected = estimator.predict_proba(rows)
    got = np.array([_probabilities(o["classProbability"], range(n_classes)) for o in out])
    np.testing.assert_allclose(got, expected, rtol=XGB_TOL, atol=XGB_TOL)
    _labels_agree([o["target"] for o in out], list(estimator.predict(rows)), expected)


# -- hand-built specs against a walk written here ---------------------------------------------


def _reference(spec_message, x: np.ndarray) -> np.ndarray:
    """Sum of the leaves each tree reaches, straight from the proto's words."""
    params = spec_message.treeEnsemble
    nodes = {(n.treeId, n.nodeId): n for n in params.nodes}
    children = {(n.treeId, c) for n in params.nodes if n.nodeBehavior != 6 for c in (n.trueChildNodeId, n.falseChildNodeId)}
    roots = sorted(k for k in nodes if k not in children)
    total = np.array(params.basePredictionValue, np.float64)
    if total.size == 0:
        total = np.zeros(params.numPredictionDimensions)
    for tree, node_id in roots:
        node = nodes[(tree, node_id)]
        while node.nodeBehavior != 6:
            value = x[node.branchFeatureIndex]
            if math.isnan(value):
                go_true = node.missingValueTracksTrueChild
            else:
                go_true = OPS[node.nodeBehavior](value, node.branchFeatureValue)
            node = nodes[(tree, node.trueChildNodeId if go_true else node.falseChildNodeId)]
        for info in node.evaluationInfo:
            total[info.evaluationIndex] += info.evaluationValue
    return total


def _vector_output(spec, name, n):
    out = spec.description.output[0]
    out.name = name
    out.type.multiArrayType.shape[:] = [n]
    out.type.multiArrayType.dataType = 65600  # DOUBLE


def _regressor(n_inputs, base, transform="NoTransform"):
    from coremltools.models import datatypes
    from coremltools.models.tree_ensemble import TreeEnsembleRegressor

    tm = TreeEnsembleRegressor([("x", datatypes.Array(n_inputs))], "y")
    tm.set_default_prediction_value(list(base))
    tm.set_post_evaluation_transform(transform)
    if len(base) > 1:
        _vector_output(tm.spec, "y", len(base))
    return tm


@pytest.mark.parametrize("t", [0.3, 0.0, -2.5])
def test_every_branch_mode_and_missing_value_direction(t):
    """Tree k tests feature k with mode k // 2, NaN to the true child when k is odd; each tree
    writes +1 / -1 into its own dimension."""
    tm = _regressor(12, [0.0] * 12)
    for k in range(12):
        tm.add_branch_node(k, 0, k, t, MODES[k // 2], 1, 2, relative_hit_rate=0.7, missing_value_tracks_true_child=bool(k % 2))
        tm.add_leaf_node(k, 1, {k: 1.0})
        tm.add_leaf_node(k, 2, {k: -1.0})
    model = mlc.load(tm.spec)
    values = [t - 0.1, t, np.nextafter(t, 1), np.nextafter(t, -1), t + 0.1, -0.0, np.nan, -np.inf, np.inf]
    # XLA on CPU reads subnormal inputs as zero (a known limit): next to 0, the sweep uses the
    # nearest normal numbers instead.
    tiny = np.finfo(np.float64).tiny
    values = [v if not 0 < abs(v) < tiny else math.copysign(tiny, v) for v in values]
    for v in values:
        x = np.full(12, v)
        got = model.predict({"x": x})["y"]
        expected = [1.0 if (bool(k % 2) if math.isnan(v) else OPS[k // 2](v, t)) else -1.0 for k in range(12)]
        np.testing.assert_array_equal(got, expected, err_msg=f"x = {v!r}")
        np.testing.assert_array_equal(got, _reference(tm.spec.treeEnsembleRegressor, x))


def _random_ensemble(rng, n_trees, n_inputs, n_dims, max_depth, base):
    """Random trees: every branch mode, NaN directions, sparse multi-dimension leaves, shuffled
    node order, scattered node ids; thresholds drawn from a small grid so inputs hit them."""
    tm = _regressor(n_inputs, base)
    grid = np.round(np.linspace(-1, 1, 9), 2)
    nodes = []
    for tree in range(n_trees):
        tree_id = 10 * tree + 3  # tree ids need not be dense
        ids = iter(rng.permutation(10_000))

        def grow(node_id, depth):
            if depth >= max_depth or (depth > 0 and rng.random() < 0.3):
                dims = rng.choice(n_dims, size=rng.integers(1, n_dims + 1), replace=False)
                nodes.append(("leaf", tree_id, node_id, {int(d): float(rng.normal()) for d in dims}))
                return
            yes, no = next(ids), next(ids)
            nodes.append(
                ("branch", tree_id, node_id, int(rng.integers(n_inputs)), float(rng.choice(grid)),
                 MODES[rng.integers(6)], yes, no, bool(rng.integers(2)))
            )
            grow(yes, depth + 1)
            grow(no, depth + 1)

        grow(next(ids), 0)
    for i in rng.permutation(len(nodes)):
        kind, *args = nodes[i]
        if kind == "leaf":
            tm.add_leaf_node(*args)
        else:
            tree_id, node_id, feature, value, mode, yes, no, nan_true = args
            tm.add_branch_node(tree_id, node_id, feature, value, mode, yes, no, missing_value_tracks_true_child=nan_true)
    return tm


def _random_inputs(rng, n, n_inputs):
    grid = np.round(np.linspace(-1, 1, 9), 2)
    x = np.where(rng.random((n, n_inputs)) < 0.5, rng.choice(grid, (n, n_inputs)), rng.uniform(-1.2, 1.2, (n, n_inputs)))
    x[rng.random((n, n_inputs)) < 0.1] = np.nan
    return x


@pytest.mark.parametrize("n_trees,max_depth", [(1, 1), (5, 3), (37, 7)])
def test_random_trees_match_a_plain_walk(n_trees, max_depth):
    rng = np.random.default_rng(n_trees)
    tm = _random_ensemble(rng, n_trees, n_inputs=5, n_dims=3, max_depth=max_depth, base=[0.5, -1.0, 2.0])
    model = mlc.load(tm.spec)
    x = _random_inputs(rng, 60, 5)
    got = model.predict_batch({"x": x})["y"]
    expected = np.array([_reference(tm.spec.treeEnsembleRegressor, row) for row in x])
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("layout,group", [("perfect", 4), ("walk", 0)])
def test_other_traversal_layouts_agree(monkeypatch, layout, group):
    """The benchmark's alternatives (scripts/bench_trees.py) compute the same sums."""
    from mlc.frontends.classic.models import tree_ensemble

    monkeypatch.setattr(tree_ensemble, "LAYOUT", layout)
    monkeypatch.setattr(tree_ensemble, "TREES_PER_STEP", group)
    rng = np.random.default_rng(3)
    tm = _random_ensemble(rng, 11, n_inputs=4, n_dims=2, max_depth=5, base=[0.0, 1.0])
    x = _random_inputs(rng, 30, 4)
    got = mlc.load(tm.spec).predict_batch({"x": x})["y"]
    expected = np.array([_reference(tm.spec.treeEnsembleRegressor, row) for row in x])
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)


def test_a_deep_unbalanced_tree():
    """A chain 40 branches deep (x <= k / 10 at depth k), next to a one-leaf tree."""
    tm = _regressor(1, [0.0])
    for k in range(40):
        tm.add_branch_node(0, k, 0, k / 10, "BranchOnValueLessThanEqual", 100 + k, k + 1)
        tm.add_leaf_node(0, 100 + k, float(k))
    tm.add_leaf_node(0, 40, 40.0)
    tm.add_leaf_node(1, 0, 0.25)
    model = mlc.load(tm.spec)
    for v in (-1.0, 0.0, 0.05, 1.0, 2.35, 3.9, 3.95, 100.0):
        expected = _reference(tm.spec.treeEnsembleRegressor, np.array([v]))[0]
        assert model.predict({"x": np.array([v])})["y"] == pytest.approx(expected, abs=TOL)


# -- post-evaluation transforms ----------------------------------------------------------------


def _sigmoid(s):
    return 1 / (1 + np.exp(-s))


def _softmax(s):
    e = np.exp(s - np.max(s))
    return e / e.sum()


REGRESSOR_TRANSFORMS = {"NoTransform": lambda s: s, "Regression_Logistic": _sigmoid, "Classification_SoftMax": _softmax}


@pytest.mark.parametrize("transform", list(REGRESSOR_TRANSFORMS))
def test_regressor_transforms(transform):
    rng = np.random.default_rng(1)
    tm = _random_ensemble(rng, 6, n_inputs=3, n_dims=3, max_depth=3, base=[0.1, 0.2, -0.3])
    tm.set_post_evaluation_transform(transform)
    model = mlc.load(tm.spec)
    for row in _random_inputs(rng, 10, 3):
        expected = REGRESSOR_TRANSFORMS[transform](_reference(tm.spec.treeEnsembleRegressor, row))
        np.testing.assert_allclose(model.predict({"x": row})["y"], expected, rtol=TOL, atol=TOL)


def _classifier(labels, n_dims, transform):
    from coremltools.models import datatypes
    from coremltools.models.tree_ensemble import TreeEnsembleClassifier

    tm = TreeEnsembleClassifier([("x", datatypes.Array(2))], labels, "label")
    tm.set_default_prediction_value([0.25] * n_dims)
    tm.set_post_evaluation_transform(transform)
    for tree in range(3):  # tree k splits x[k % 2] at 0 and writes scores into every dimension
        tm.add_branch_node(tree, 0, tree % 2, 0.0, "BranchOnValueGreaterThan", 1, 2)
        tm.add_leaf_node(tree, 1, [0.4 * (tree + 1) * (d + 1) for d in range(n_dims)])
        tm.add_leaf_node(tree, 2, [-0.3 * (d - tree) for d in range(n_dims)])
    return tm


BINARY = {
    "NoTransform": lambda s: s,
    "Regression_Logistic": _sigmoid,
    "Classification_SoftMaxWithZeroClassReference": lambda s: _softmax(np.array([0.0, s]))[1],
}


@pytest.mark.parametrize("transform", list(BINARY))
def test_binary_classifier_transforms(transform):
    tm = _classifier(["neg", "pos"], 1, transform)
    model = mlc.load(tm.spec)
    for row in ([-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [0.0, 0.0]):
        x = np.array(row)
        p = BINARY[transform](_reference(tm.spec.treeEnsembleClassifier, x)[0])
        out = model.predict({"x": x})
        np.testing.assert_allclose([out["classProbability"]["neg"], out["classProbability"]["pos"]], [1 - p, p], rtol=TOL, atol=TOL)
        assert out["label"] == ("pos" if p > 0.5 else "neg")


MULTICLASS = {"NoTransform": lambda s: s, "Classification_SoftMax": _softmax, "Regression_Logistic": _sigmoid}


@pytest.mark.parametrize("transform", list(MULTICLASS))
def test_multiclass_classifier_transforms(transform):
    tm = _classifier([10, 20, 30], 3, transform)
    model = mlc.load(tm.spec)
    for row in ([-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]):
        x = np.array(row)
        p = MULTICLASS[transform](_reference(tm.spec.treeEnsembleClassifier, x))
        out = model.predict({"x": x})
        np.testing.assert_allclose([out["classProbability"][c] for c in (10, 20, 30)], p, rtol=TOL, atol=TOL)
        assert out["label"] == (10, 20, 30)[int(np.argmax(p))]


def test_classifier_without_labels_uses_class_indices():
    from coremltools.proto import FeatureTypes_pb2

    tm = _classifier([0, 1, 2], 3, "Classification_SoftMax")
    tm.spec.treeEnsembleClassifier.ClearField("int64ClassLabels")
    tm.spec.description.output[0].type.CopyFrom(FeatureTypes_pb2.FeatureType(int64Type={}))
    out = mlc.load(tm.spec).predict({"x": np.array([1.0, 1.0])})
    p = _softmax(_reference(tm.spec.treeEnsembleClassifier, np.array([1.0, 1.0])))
    assert out["label"] == int(np.argmax(p))
    np.testing.assert_allclose([out["classProbability"][k] for k in range(3)], p, rtol=TOL, atol=TOL)


@pytest.mark.parametrize(
    "labels,n_dims,transform,words",
    [
        (["a", "b"], 1, "Classification_SoftMax", "single prediction dimension"),
        (["a", "b", "c"], 3, "Classification_SoftMaxWithZeroClassReference", "3 prediction dimensions"),
    ],
)
def test_undocumented_transforms_are_refused(labels, n_dims, transform, words):
    with pytest.raises(MLCUnsupportedError, match=words):
        mlc.load(_classifier(labels, n_dims, transform).spec)
    if n_dims == 3:
        tm = _regressor(2, [0.0])
        tm.add_leaf_node(0, 0, 1.0)
        tm.set_post_evaluation_transform(transform)
        with pytest.raises(MLCUnsupportedError, match="regressor"):
            mlc.load(tm.spec)


# -- batching, the pure function, gradients ----------------------------------------------------


def test_predict_batch_equals_predict_and_jit_of_the_pure_function():
    rng = np.random.default_rng(5)
    tm = _random_ensemble(rng, 40, n_inputs=4, n_dims=2, max_depth=5, base=[1.0, -1.0])
    model = mlc.load(tm.spec)
    x = _random_inputs(rng, 25, 4)
    batch = model.predict_batch({"x": x})["y"]
    rows = np.array([model.predict({"x": row})["y"] for row in x])
    np.testing.assert_allclose(batch, rows, rtol=1e-12, atol=1e-12)  # vmapped sums may reassociate
    fn, params = model.jax_function()
    jitted = jax.jit(fn)
    pure = np.array([np.asarray(jitted(params, {"x": row})["y"]) for row in x[:5]])
    np.testing.assert_array_equal(pure, rows[:5])
    classifier = mlc.load(_classifier(["a", "b", "c"], 3, "Classification_SoftMax").spec)
    x2 = x[:, :2]
    labels = classifier.predict_batch({"x": x2})["label"]
    assert labels == [classifier.predict({"x": row})["label"] for row in x2]


def test_gradient_with_respect_to_leaf_values_and_base():
    """Each tree adds exactly one leaf: d(sum of outputs)/d(leaf values) sums to the number of
    trees per output dimension, and d/d(base) is one."""
    rng = np.random.default_rng(6)
    tm = _random_ensemble(rng, 9, n_inputs=3, n_dims=2, max_depth=4, base=[0.0, 0.0])
    model = mlc.load(tm.spec)
    fn, params = model.jax_function()
    x = np.array([0.1, -0.4, 0.7])
    with jax.enable_x64(FLOAT == np.float64):  # the model computes in FLOAT; so do its cotangents
        grads = jax.grad(lambda p: fn(p, {"x": x})["y"].sum())(params)
    np.testing.assert_allclose(np.asarray(grads["leaf_values"]).reshape(-1, 2).sum(axis=0), [9.0, 9.0])
    np.testing.assert_allclose(grads["base"], [1.0, 1.0])


# -- corrupt trees -----------------------------------------------------------------------------


def _two_leaf_tree():
    tm = _regressor(3, [0.0])
    tm.add_branch_node(0, 0, 1, 0.5, "BranchOnValueLessThanEqual", 1, 2)
    tm.add_leaf_node(0, 1, 1.0)
    tm.add_leaf_node(0, 2, 2.0)
    return tm


def _dangling(tm):
    tm.spec.treeEnsembleRegressor.treeEnsemble.nodes[0].falseChildNodeId = 9


def _cycle(tm):
    tm.add_branch_node(1, 0, 0, 0.0, "BranchOnValueLessThanEqual", 1, 2)
    tm.add_branch_node(1, 1, 0, 0.0, "BranchOnValueLessThanEqual", 3, 0)
    tm.add_leaf_node(1, 2, 1.0)
    tm.add_leaf_node(1, 3, 1.0)


def _two_parents(tm):
    tm.add_branch_node(1, 0, 0, 0.0, "BranchOnValueLessThanEqual", 1, 2)
    tm.add_branch_node(1, 1, 0, 0.0, "BranchOnValueLessThanEqual", 2, 3)
    tm.add_leaf_node(1, 2, 1.0)
    tm.add_leaf_node(1, 3, 1.0)


def _edit(field, value):
    def edit(tm):
        setattr(tm.spec.treeEnsembleRegressor.treeEnsemble.nodes[0], field, value)

    return edit


def _leaf_edit(edit_leaf):
    def edit(tm):
        edit_leaf(tm.spec.treeEnsembleRegressor.treeEnsemble.nodes[1])

    return edit


@pytest.mark.parametrize(
    "corrupt,words",
    [
        (_dangling, "false child 9 is not declared"),
        (_cycle, "not reachable from any root"),
        (_two_parents, "child of both"),
        (_edit("branchFeatureIndex", 3), "branchFeatureIndex 3 is beyond the input, which holds 3"),
        (_edit("trueChildNodeId", 0), "true child is the node itself"),
        (lambda tm: tm.add_leaf_node(0, 1, 5.0), "declared twice"),
        (lambda tm: tm.add_leaf_node(0, 7, 5.0), "several root nodes"),
        (_leaf_edit(lambda n: n.ClearField("evaluationInfo")), "no evaluationInfo"),
        (_leaf_edit(lambda n: setattr(n.evaluationInfo[0], "evaluationIndex", 4)), "evaluationIndex 4 is out of range"),
        (_leaf_edit(lambda n: n.evaluationInfo.add(evaluationIndex=0, evaluationValue=1.0)), "given twice"),
        (lambda tm: tm.spec.treeEnsembleRegressor.treeEnsemble.basePredictionValue.append(1.0), "2 basePredictionValue"),
        (lambda tm: setattr(tm.spec.treeEnsembleRegressor.treeEnsemble, "numPredictionDimensions", 0), "is 0"),
        (lambda tm: tm.spec.treeEnsembleRegressor.treeEnsemble.ClearField("nodes"), "no nodes"),
        (lambda tm: setattr(tm.spec.treeEnsembleRegressor, "postEvaluationTransform", 9), "postEvaluationTransform 9"),
    ],
)
def test_corrupt_trees_are_refused_by_name(corrupt, words):
    tm = _two_leaf_tree()
    mlc.load(tm.spec)  # the intact tree loads
    corrupt(tm)
    with pytest.raises(MLCParametersError, match=words):
        mlc.load(tm.spec)


def test_class_label_count_must_match_the_dimensions():
    tm = _classifier(["a", "b", "c"], 3, "Classification_SoftMax")
    tm.spec.treeEnsembleClassifier.stringClassLabels.vector.append("d")
    with pytest.raises(MLCParametersError, match="numPredictionDimensions 3 does not match the 4 class labels"):
        mlc.load(tm.spec)
