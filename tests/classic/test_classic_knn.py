"""kNearestNeighborsClassifier against scikit-learn and a numpy oracle.

Oracles: scikit-learn's ``KNeighborsClassifier.predict`` / ``predict_proba`` on models
converted by coremltools (brute and kd-tree, several k); models built with coremltools'
``KNearestNeighborsClassifierBuilder`` against ``_oracle`` below, written independently in
float64 numpy. Labels are compared exactly: the data keep the k-th and (k+1)-th nearest
distances apart by far more than rounding (asserted, 1e-4), so mlc's distances (from the
float32 examples, in the compute dtype) choose the same neighbors. Probabilities (shares of
the vote) to 1e-6: a ratio of sums of at most k weights, exact to float32 rounding at worst.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc
from mlc._errors import MLCFeatureTypeError, MLCParametersError

neighbors = pytest.importorskip("sklearn.neighbors")
from sklearn.datasets import load_iris  # noqa: E402


@pytest.fixture(scope="module")
def ct():
    from mlc.io.proto import import_coremltools

    return import_coremltools()


@pytest.fixture(scope="module")
def iris():
    x, y = load_iris(return_X_y=True)
    queries = x + np.random.RandomState(0).randn(*x.shape) * 0.3
    return x, y, queries


def _oracle(examples, labels, query, k, inverse):
    """Label and class shares of the k nearest examples (squared Euclidean, stable order on
    equal distances); inverse weighting 1 / squared distance, exact matches taking all the
    weight; ties to the smallest label."""
    d = ((np.asarray(examples, np.float64) - np.asarray(query, np.float64)) ** 2).sum(axis=1)
    nearest = np.argsort(d, kind="stable")[: min(k, len(d))]
    if not inverse:
        w = np.ones(len(nearest))
    elif np.any(d[nearest] == 0):
        w = (d[nearest] == 0).astype(float)
    else:
        w = 1.0 / d[nearest]
    classes = sorted(set(labels))
    votes = np.array([w[[labels[i] == c for i in nearest]].sum() for c in classes])
    return classes[int(np.argmax(votes))], dict(zip(classes, votes / votes.sum()))


def _margin(examples, queries, k):
    """The smallest gap, over the queries, between the k-th and (k+1)-th nearest distances."""
    d = np.sort(((examples[None] - queries[:, None]) ** 2).sum(-1), axis=1)
    return np.min(d[:, k] - d[:, k - 1]) if k < examples.shape[0] else np.inf


def _predict(model, x):
    return model.predict_batch({"x": np.asarray(x, np.float32)})


# -- scikit-learn -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["brute", "kd_tree"])
@pytest.mark.parametrize("k", [1, 4, 7, 42])
def test_sklearn_uniform(ct, iris, algorithm, k):
    """Even k makes vote ties: Core ML (here) and scikit-learn give them to the smaller label."""
    x, y, queries = iris
    clf = neighbors.KNeighborsClassifier(n_neighbors=k, algorithm=algorithm, leaf_size=10).fit(x, y)
    spec = ct.converters.sklearn.convert(clf, "x", "label")
    index = spec.get_spec().kNearestNeighborsClassifier.nearestNeighborsIndex
    assert index.WhichOneof("IndexType") == ("linearIndex" if algorithm == "brute" else "singleKdTreeIndex")
    assert _predict(mlc.load(spec), queries)["label"] == clf.predict(queries).tolist()


@pytest.mark.parametrize("k", [3, 8])
def test_sklearn_inverse_distance(ct, k):
    """coremltools' converter refuses ``weights='distance'``; the converted uniform model is
    switched to inverseDistanceWeighting and compared with scikit-learn weighting by
    ``1 / squared distance`` (the model's distance function). The data are continuous, so no
    query sits on an example."""
    rng = np.random.RandomState(k)
    x = rng.randn(120, 4)
    y = (x[:, 0] + 0.5 * rng.randn(120) > 0).astype(int) + (x[:, 1] > 0.8)
    q = rng.randn(60, 4)
    assert _margin(x, q, k) > 1e-4
    uniform = neighbors.KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x, y)
    spec = ct.converters.sklearn.convert(uniform, "x", "label").get_spec()
    spec.kNearestNeighborsClassifier.inverseDistanceWeighting.SetInParent()
    weighted = neighbors.KNeighborsClassifier(n_neighbors=k, algorithm="brute", weights=lambda d: 1.0 / d**2).fit(x, y)
    assert _predict(mlc.load(spec), q)["label"] == weighted.predict(q).tolist()


# -- coremltools' builder -----------------------------------------------------------------------


def _builder(ct, labels, k=3, index_type="linear", weighting="uniform", n=80, dims=4, seed=0):
    from coremltools.models.nearest_neighbors import KNearestNeighborsClassifierBuilder

    rng = np.random.RandomState(seed)
    default = "none" if isinstance(labels[0], str) else -1
    builder = KNearestNeighborsClassifierBuilder(
        input_name="x",
        output_name="label",
        number_of_dimensions=dims,
        default_class_label=default,
        number_of_neighbors=k,
        weighting_scheme=weighting,
        index_type=index_type,
        leaf_size=5,
    )
    examples = rng.randn(n, dims).astype(np.float32)
    example_labels = [labels[i] for i in rng.randint(0, len(labels), n)]
    if n:
        builder.add_samples(examples.tolist(), example_labels)
    return builder.spec, examples, example_labels


@pytest.mark.parametrize("index_type", ["linear", "kd_tree"])
@pytest.mark.parametrize("weighting", ["uniform", "inverse_distance"])
@pytest.mark.parametrize("labels", [("cat", "dog", "emu"), (7, -2, 40, 3)], ids=["string", "int64"])
def test_builder_models(ct, index_type, weighting, labels):
    k = 5
    spec, examples, example_labels = _builder(ct, labels, k=k, index_type=index_type, weighting=weighting)
    q = np.random.RandomState(9).randn(50, 4)
    assert _margin(examples, q, k) > 1e-4
    out = _predict(mlc.load(spec), q)
    for query, label, probs in zip(q, out["label"], out["labelProbs"]):
        want_label, want_probs = _oracle(examples, example_labels, query, k, weighting == "inverse_distance")
        assert label == want_label
        assert probs.keys() == want_probs.keys()
        assert all(abs(probs[c] - want_probs[c]) < 1e-6 for c in probs)


def test_probabilities_are_scikit_learns(ct):
    rng = np.random.RandomState(4)
    x = rng.randn(90, 3)
    y = rng.randint(0, 3, 90)
    clf = neighbors.KNeighborsClassifier(n_neighbors=6).fit(x, y)
    spec, _, _ = _builder(ct, (0, 1, 2), k=6, n=0, dims=3)
    spec.kNearestNeighborsClassifier.nearestNeighborsIndex.ClearField("floatSamples")
    for row, label in zip(x, y):
        spec.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples.add().vector.extend(row)
        spec.kNearestNeighborsClassifier.int64ClassLabels.vector.append(int(label))
    q = rng.randn(40, 3)
    out = _predict(mlc.load(spec), q)
    got = np.array([[p[c] for c in (0, 1, 2)] for p in out["labelProbs"]])
    np.testing.assert_allclose(got, clf.predict_proba(q), atol=1e-6)
    assert out["label"] == clf.predict(q).tolist()


def test_exact_match_takes_all_the_inverse_weight(ct):
    spec, examples, example_labels = _builder(ct, ("a", "b", "c"), k=7, weighting="inverse_distance")
    model = mlc.load(spec)
    for i in (0, 5, 17):
        out = model.predict({"x": examples[i]})
        assert out["label"] == example_labels[i]
        assert out["labelProbs"][example_labels[i]] == 1.0


def test_more_neighbors_than_examples_uses_them_all(ct):
    spec, examples, example_labels = _builder(ct, (1, 2), k=50, n=6)
    q = np.random.RandomState(2).randn(10, 4)
    out = _predict(mlc.load(spec), q)
    assert out["label"] == [_oracle(examples, example_labels, row, 50, False)[0] for row in q]


@pytest.mark.parametrize("default", ["nothing yet", 77])
def test_empty_model_predicts_the_default_label(ct, default):
    from coremltools.models.nearest_neighbors import KNearestNeighborsClassifierBuilder

    builder = KNearestNeighborsClassifierBuilder("x", "label", number_of_dimensions=3, default_class_label=default)
    out = mlc.load(builder.spec).predict({"x": np.zeros(3, np.float32)})
    assert out["label"] == default


def test_examples_and_labels_are_params(ct):
    spec, examples, example_labels = _builder(ct, ("p", "q"), k=3)
    model = mlc.load(spec)
    _, params = model.jax_function()
    np.testing.assert_array_equal(np.asarray(params["examples"]), examples)
    assert [("p", "q")[i] for i in np.asarray(params["labels"])] == example_labels
    single = [model.predict({"x": row})["label"] for row in examples[:4] + 0.1]
    assert single == _predict(model, examples[:4] + 0.1)["label"]


# -- refusals -----------------------------------------------------------------------------------


def _fails(spec, match, error=MLCParametersError):
    with pytest.raises(error, match=match):
        mlc.load(spec)


def test_bad_number_of_neighbors(ct):
    spec, _, _ = _builder(ct, ("a", "b"))
    parameter = spec.kNearestNeighborsClassifier.numberOfNeighbors
    parameter.range.maxValue = 2  # default 3 now outside [1, 2]
    _fails(spec, "outside its allowed range")

    spec, _, _ = _builder(ct, ("a", "b"))
    spec.kNearestNeighborsClassifier.numberOfNeighbors.set.values.extend([1, 5])
    _fails(spec, "not one of its allowed values")

    spec, _, _ = _builder(ct, ("a", "b"))
    spec.kNearestNeighborsClassifier.numberOfNeighbors.defaultValue = 0
    _fails(spec, "must be positive")


def test_bad_examples_and_labels(ct):
    spec, _, _ = _builder(ct, ("a", "b"))
    spec.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples[3].vector.append(1.0)
    _fails(spec, "example 3 has 5 values")

    spec, _, _ = _builder(ct, ("a", "b"))
    spec.kNearestNeighborsClassifier.stringClassLabels.vector.append("a")
    _fails(spec, "81 labels for 80 examples")

    spec, _, _ = _builder(ct, (1, 2))
    spec.kNearestNeighborsClassifier.defaultStringLabel = "x"
    _fails(spec, "different types")

    spec, _, _ = _builder(ct, (1, 2), index_type="kd_tree")
    spec.kNearestNeighborsClassifier.nearestNeighborsIndex.singleKdTreeIndex.leafSize = 0
    _fails(spec, "leafSize")

    spec, _, _ = _builder(ct, (1, 2))
    spec.kNearestNeighborsClassifier.nearestNeighborsIndex.ClearField("linearIndex")
    _fails(spec, "no index type")

    spec, _, _ = _builder(ct, (1, 2))
    spec.kNearestNeighborsClassifier.ClearField("uniformWeighting")
    _fails(spec, "no weighting scheme")


def test_input_of_the_wrong_width(ct):
    spec, _, _ = _builder(ct, (1, 2))
    spec.description.input[0].type.multiArrayType.shape[0] = 5
    with pytest.raises(MLCFeatureTypeError, match="examples have 4"):
        mlc.load(spec).predict({"x": np.zeros(5, np.float32)})
