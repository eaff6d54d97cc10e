"""Updating an updatable kNN classifier (``mlc.train.knn``) against scikit-learn.

Oracle: scikit-learn's ``KNeighborsClassifier(algorithm="brute")`` fitted on every example
added so far, in float32 as ``FloatVector`` stores them; inverse-distance weighting is
scikit-learn with ``weights=1 / d**2``, the model's squared Euclidean distance. The models
are coremltools' ``KNearestNeighborsClassifierBuilder`` ones (updatable, empty or not).

Ties: the examples and queries are continuous random draws, and each query's k-th and
(k+1)-th nearest distances are asserted 1e-4 apart, so both pick the same neighbors; a tie
in the votes goes to the smallest label in both (mlc by its documented rule, scikit-learn by
``argmax`` over its sorted ``classes_``), so vote ties need not be avoided.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc
from mlc._errors import MLCParametersError, MLCUpdateError
from mlc.train.knn import add_examples, is_updatable_knn, knn_training_features

neighbors = pytest.importorskip("sklearn.neighbors")

DIMS = 4
WHERE = "Updatable.mlmodel"


def _builder(ct, default, k=5, weighting="uniform", index_type="linear"):
    from coremltools.models.nearest_neighbors import KNearestNeighborsClassifierBuilder

    builder = KNearestNeighborsClassifierBuilder(
        input_name="x",
        output_name="label",
        number_of_dimensions=DIMS,
        default_class_label=default,
        number_of_neighbors=k,
        weighting_scheme=weighting,
        index_type=index_type,
        leaf_size=4,
    )
    assert builder.is_updatable
    return builder


def _dataset(labels, n, seed):
    """n examples around one centre per label, and their labels."""
    rng = np.random.RandomState(seed)
    centres = {label: rng.randn(DIMS) * 2 for label in labels}
    y = [labels[i] for i in rng.randint(0, len(labels), n)]
    x = np.stack([centres[label] for label in y]) + rng.randn(n, DIMS)
    return x, y


def _margin(examples, queries, k):
    d = np.sort(((examples[None] - queries[:, None]) ** 2).sum(-1), axis=1)
    return np.min(d[:, k] - d[:, k - 1]) if k < examples.shape[0] else np.inf


def _sklearn(examples, labels, k, weighting):
    weights = "uniform" if weighting == "uniform" else (lambda d: 1.0 / d**2)
    stored = np.asarray(examples, np.float32).astype(np.float64)
    return neighbors.KNeighborsClassifier(n_neighbors=k, algorithm="brute", weights=weights).fit(stored, labels)


def _queries(seed, n=60):
    return (np.random.RandomState(seed).randn(n, DIMS) * 2.5).astype(np.float32)


def _labels_of(model, queries):
    return model.predict_batch({"x": queries})["label"]


def _assert_matches(spec, examples, labels, k, weighting, seed=11):
    q = _queries(seed)
    assert _margin(np.asarray(examples, np.float32).astype(np.float64), q.astype(np.float64), k) > 1e-4
    want = _sklearn(examples, labels, k, weighting).predict(q).tolist()
    model = mlc.load(spec)
    assert _labels_of(model, q) == want
    assert [model.predict({"x": row})["label"] for row in q[:5]] == want[:5]


STRING_LABELS = ("cat", "dog", "emu")
INT_LABELS = (7, -2, 40, 3)


# -- updates against scikit-learn ---------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["linear", "kd_tree"])
@pytest.mark.parametrize("weighting", ["uniform", "inverse_distance"])
@pytest.mark.parametrize("labels", [STRING_LABELS, INT_LABELS], ids=["string", "int64"])
def test_update_of_an_empty_model(ct, labels, weighting, index_type):
    k = 5
    spec = _builder(ct, "none" if isinstance(labels[0], str) else -1, k, weighting, index_type).spec
    x, y = _dataset(labels, 90, seed=1)
    updated = add_examples(spec, {"x": x, "label": y}, WHERE)
    _assert_matches(updated, x, y, k, weighting)
    assert type(_labels_of(mlc.load(updated), _queries(0, 3))[0]) is type(labels[0])


@pytest.mark.parametrize("weighting", ["uniform", "inverse_distance"])
@pytest.mark.parametrize("labels", [STRING_LABELS, INT_LABELS], ids=["string", "int64"])
def test_two_updates_accumulate_and_may_bring_new_labels(ct, labels, weighting):
    """The second update brings a label the model never held (a kNN has no fixed class set)."""
    k = 6
    spec = _builder(ct, "none" if isinstance(labels[0], str) else -1, k, weighting).spec
    x1, y1 = _dataset(labels[:2], 40, seed=2)
    x2, y2 = _dataset(labels, 50, seed=3)
    assert set(y2) - set(y1)
    once = add_examples(spec, {"x": x1.tolist(), "label": np.asarray(y1)}, WHERE)
    once_bytes = once.SerializeToString()
    twice = add_examples(once, {"x": x2, "label": list(y2)}, WHERE)
    assert once.SerializeToString() == once_bytes
    _assert_matches(once, x1, y1, k, weighting)
    _assert_matches(twice, np.concatenate([x1, x2]), y1 + y2, k, weighting)
    knn = twice.kNearestNeighborsClassifier
    stored = np.array([list(s.vector) for s in knn.nearestNeighborsIndex.floatSamples], np.float32)
    np.testing.assert_array_equal(stored, np.concatenate([x1, x2]).astype(np.float32))
    class_labels = knn.stringClassLabels if isinstance(labels[0], str) else knn.int64ClassLabels
    assert list(class_labels.vector) == y1 + y2


def test_update_of_a_model_that_already_holds_examples(ct):
    builder = _builder(ct, "none", k=3)
    x0, y0 = _dataset(STRING_LABELS, 30, seed=4)
    builder.add_samples(x0.tolist(), y0)
    x1, y1 = _dataset(("dog", "fox"), 25, seed=5)
    updated = add_examples(builder.spec, {"x": x1, "label": y1}, WHERE)
    _assert_matches(updated, np.concatenate([x0, x1]), y0 + y1, 3, "uniform")


def test_the_given_spec_is_unchanged(ct):
    spec = _builder(ct, 0).spec
    before = spec.SerializeToString()
    x, y = _dataset(INT_LABELS, 20, seed=6)
    updated = add_examples(spec, {"x": x, "label": y}, WHERE)
    assert spec.SerializeToString() == before
    assert len(spec.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples) == 0
    assert len(updated.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples) == 20
    assert updated.isUpdatable and updated.description == spec.description


def test_numpy_and_jax_values_and_extra_features(ct):
    """numpy integer labels, numpy string labels, an int array of examples, a jax array; features
    the update does not read are ignored."""
    import jax.numpy as jnp

    spec = _builder(ct, -1, k=1).spec
    updated = add_examples(
        spec, {"x": np.array([[0, 0, 0, 0], [10, 10, 10, 10]]), "label": np.array([5, 9], np.int64), "other": 1}, WHERE
    )
    updated = add_examples(updated, {"x": jnp.full((1, DIMS), -10.0), "label": [np.int32(2)]}, WHERE)
    q = np.array([[1, 1, 1, 1], [9, 9, 9, 9], [-9, -9, -9, -9]], np.float32)
    assert _labels_of(mlc.load(updated), q) == [5, 9, 2]

    spec = _builder(ct, "none", k=1).spec
    updated = add_examples(spec, {"x": [[0.0] * DIMS, [3.0] * DIMS], "label": np.array(["near", "far"])}, WHERE)
    assert list(updated.kNearestNeighborsClassifier.stringClassLabels.vector) == ["near", "far"]
    assert _labels_of(mlc.load(updated), q[:2]) == ["near", "far"]


# -- the label type when the model holds none yet -----------------------------------------------


def test_label_type_from_the_default_label(ct):
    spec = _builder(ct, 4).spec
    spec.kNearestNeighborsClassifier.ClearField("int64ClassLabels")
    assert spec.kNearestNeighborsClassifier.WhichOneof("ClassLabels") is None
    updated = add_examples(spec, {"x": np.zeros((1, DIMS)), "label": [8]}, WHERE)
    assert updated.kNearestNeighborsClassifier.WhichOneof("ClassLabels") == "int64ClassLabels"
    with pytest.raises(MLCUpdateError, match="label 0 is 'a' .* int64"):
        add_examples(spec, {"x": np.zeros((1, DIMS)), "label": ["a"]}, WHERE)


def test_label_type_from_the_output_description(ct):
    spec = _builder(ct, "none").spec
    spec.kNearestNeighborsClassifier.ClearField("stringClassLabels")
    spec.kNearestNeighborsClassifier.ClearField("defaultStringLabel")
    updated = add_examples(spec, {"x": np.ones((2, DIMS)), "label": ["a", "b"]}, WHERE)
    assert updated.kNearestNeighborsClassifier.WhichOneof("ClassLabels") == "stringClassLabels"
    assert mlc.load(updated).predict({"x": np.ones(DIMS, np.float32)})["label"] == "a"


# -- Core ML's format ---------------------------------------------------------------------------


@pytest.mark.parametrize("default", ["none", -1], ids=["string", "int64"])
def test_updated_spec_loads_in_coremltools_and_round_trips(ct, default):
    labels = STRING_LABELS if isinstance(default, str) else INT_LABELS
    spec = _builder(ct, default, weighting="inverse_distance", index_type="kd_tree").spec
    x, y = _dataset(labels, 30, seed=7)
    updated = add_examples(spec, {"x": x, "label": y}, WHERE)
    data = updated.SerializeToString()
    parsed = type(updated)()
    parsed.ParseFromString(data)
    assert parsed == updated and parsed.SerializeToString() == data
    mlmodel = ct.models.MLModel(updated)
    assert mlmodel.get_spec() == updated
    assert mlc.load(mlmodel).predict({"x": x[0].astype(np.float32)})["label"] == y[0]


# -- what the model declares --------------------------------------------------------------------


def test_is_updatable_knn(ct):
    spec = _builder(ct, "none").spec
    assert is_updatable_knn(spec)
    spec.isUpdatable = False
    assert not is_updatable_knn(spec)
    glm = ct.proto.Model_pb2.Model()
    glm.glmClassifier.SetInParent()
    glm.isUpdatable = True
    assert not is_updatable_knn(glm)
    assert not is_updatable_knn({"not": "a spec"})


def test_knn_training_features(ct):
    assert knn_training_features(_builder(ct, "none").spec) == ("x", "label")


def _without_training_input(spec, name):
    kept = [f for f in spec.description.trainingInput if f.name != name]
    del spec.description.trainingInput[:]
    spec.description.trainingInput.extend(kept)
    return spec


def test_training_features_must_be_declared(ct):
    spec = _without_training_input(_builder(ct, "none").spec, "label")
    with pytest.raises(MLCParametersError, match=r"Updatable.mlmodel .*no label 'label' .*predictedFeatureName.*\['x'\]"):
        knn_training_features(spec, WHERE)
    with pytest.raises(MLCParametersError, match="no label 'label'"):
        add_examples(spec, {"x": np.zeros((1, DIMS)), "label": ["a"]}, WHERE)

    spec = _without_training_input(_builder(ct, "none").spec, "x")
    with pytest.raises(MLCParametersError, match=r"no multiarray example input .*\['label'\]"):
        knn_training_features(spec, WHERE)

    spec = _builder(ct, "none").spec
    spec.description.trainingInput[1].type.int64Type.SetInParent()
    with pytest.raises(MLCParametersError, match="'label' is int64, but the model's class labels are string"):
        knn_training_features(spec, WHERE)

    spec = _builder(ct, "none").spec
    spec.description.trainingInput[0].type.multiArrayType.shape[0] = DIMS + 1
    with pytest.raises(MLCParametersError, match=f"'x' has shape \\[{DIMS + 1}\\], not numberOfDimensions = {DIMS}"):
        knn_training_features(spec, WHERE)

    glm = ct.proto.Model_pb2.Model()
    glm.glmClassifier.SetInParent()
    with pytest.raises(MLCParametersError, match="not a kNearestNeighborsClassifier"):
        knn_training_features(glm, WHERE)


# -- refused training data ----------------------------------------------------------------------


def _good(n=3):
    return np.arange(n * DIMS, dtype=np.float64).reshape(n, DIMS)


BAD_DATA = {
    "missing label": ({"x": _good()}, r"lack training input\(s\) \['label'\]"),
    "missing example": ({"label": ["a"]}, r"lack training input\(s\) \['x'\]"),
    "not a dict": ([("x", _good())], "must be a dict"),
    "empty array": ({"x": np.zeros((0, DIMS)), "label": []}, r"'x': the dataset is empty \(n == 0\)"),
    "empty list": ({"x": [], "label": []}, r"'x': the dataset is empty \(n == 0\)"),
    "empty labels": ({"x": _good(1), "label": []}, r"'label': the dataset is empty"),
    "short row": (
        {"x": [[0.0] * DIMS, [1.0] * (DIMS - 1)], "label": ["a", "b"]},
        rf"'x': example 1 has shape \({DIMS - 1},\); .* {DIMS} values",
    ),
    "wide array": ({"x": np.zeros((2, DIMS + 1)), "label": ["a", "b"]}, rf"shape \(2, {DIMS + 1}\); stack them as \(n, {DIMS}\)"),
    "1-d array": ({"x": np.zeros(DIMS), "label": ["a"]}, rf"shape \({DIMS},\); stack them as \(n, {DIMS}\)"),
    "nan": (
        {"x": np.where(np.eye(3, DIMS) > 0, np.nan, 0.0), "label": ["a"] * 3},
        r"example 0 holds nan at position 0, which is not finite \(3 such",
    ),
    "inf in a list": (
        {"x": [[0.0] * DIMS, [0.0, 0.0, float("-inf"), 0.0]], "label": ["a", "b"]},
        "example 1 holds -inf at position 2, which is not finite",
    ),
    "past float32": ({"x": np.full((1, DIMS), 1e39), "label": ["a"]}, "does not fit in float32"),
    "strings as examples": ({"x": [["1", "2", "3", "4"]], "label": ["a"]}, "example 0 must be real numbers"),
    "a scalar": ({"x": 3.0, "label": ["a"]}, "expected an .* array or a list of n vectors, got float"),
    "int label for strings": (
        {"x": _good(2), "label": ["a", 3]},
        r"'label': label 1 is 3 \(int\); the model's labels are strings",
    ),
    "one string for labels": ({"x": _good(3), "label": "abc"}, "expected a list of n labels, got str"),
    "2-d labels": ({"x": _good(2), "label": np.array([["a"], ["b"]])}, r"the labels have shape \(2, 1\)"),
    "more labels": ({"x": _good(2), "label": ["a", "b", "c"]}, r"2 examples in training input 'x' but 3 labels in 'label'"),
    "fewer labels": ({"x": _good(3), "label": ["a"]}, r"3 examples in training input 'x' but 1 labels in 'label'"),
}


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_bad_training_data_for_string_labels(ct, case):
    data, match = BAD_DATA[case]
    spec = _builder(ct, "none").spec
    with pytest.raises(MLCUpdateError, match=match) as error:
        add_examples(spec, data, WHERE)
    assert error.value.code == "update"
    assert error.value.message.startswith(f"{WHERE} (kNearestNeighborsClassifier)")


BAD_INT_LABELS = {
    "str": (["a", "b"], r"label 0 is 'a' \(str\); the model's labels are int64"),
    "float": ([1, 2.0], r"label 1 is 2.0 \(float\); the model's labels are int64"),
    "float array": (np.array([1.0, 2.0]), r"label 0 is 1.0 \(float\)"),
    "bool": ([True, 1], r"label 0 is True \(bool\)"),
    "past int64": ([1, 2**63], "label 1 is 9223372036854775808, outside int64"),
}


@pytest.mark.parametrize("case", BAD_INT_LABELS, ids=list(BAD_INT_LABELS))
def test_bad_labels_for_int64_labels(ct, case):
    labels, match = BAD_INT_LABELS[case]
    with pytest.raises(MLCUpdateError, match=match):
        add_examples(_builder(ct, -1).spec, {"x": _good(2), "label": labels}, WHERE)


def test_only_an_updatable_knn_takes_examples(ct):
    data = {"x": _good(1), "label": ["a"]}
    spec = _builder(ct, "none").spec
    spec.isUpdatable = False
    with pytest.raises(MLCUpdateError, match=r"Updatable.mlmodel: the kNN is not updatable \(spec.isUpdatable is false\)"):
        add_examples(spec, data, WHERE)
    glm = ct.proto.Model_pb2.Model()
    glm.glmClassifier.SetInParent()
    glm.isUpdatable = True
    with pytest.raises(MLCUpdateError, match="the model is a glmClassifier, not a kNearestNeighborsClassifier"):
        add_examples(glm, data, WHERE)
    with pytest.raises(MLCUpdateError, match="dict is not a Core ML Model spec"):
        add_examples({}, data, WHERE)
