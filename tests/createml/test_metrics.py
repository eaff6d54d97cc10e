"""Classifier metrics (mlc.createml.metrics), checked against scikit-learn."""

import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

import mlc
from mlc.createml.metrics import ClassifierMetrics, Misclassification


def _random_predictions(labels, count, seed, never_predicted=(), never_true=()):
    rng = np.random.default_rng(seed)
    true_choices = [label for label in labels if label not in never_true]
    predicted_choices = [label for label in labels if label not in never_predicted]
    true = [true_choices[i] for i in rng.integers(0, len(true_choices), count)]
    # mostly right, so that the diagonal is not empty
    predicted = [t if t in predicted_choices and rng.random() < 0.6 else predicted_choices[i]
                 for t, i in zip(true, rng.integers(0, len(predicted_choices), count))]
    return true, predicted


CASES = {
    "three": (["cat", "dog", "fox"], {}),
    "never predicted": (["ant", "bee", "cow", "doe"], {"never_predicted": ("bee",)}),
    "never true": (["ant", "bee", "cow", "doe"], {"never_true": ("doe",)}),
    "both": (["a", "b", "c", "d", "e"], {"never_predicted": ("b",), "never_true": ("e",)}),
    "int labels": ([0, 1, 2, 3, 10], {"never_predicted": (10,)}),
    "two": (["no", "yes"], {}),
}


def _assert_same_floats(actual: dict, expected: np.ndarray, labels):
    np.testing.assert_allclose([actual[label] for label in labels], expected, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scikit_learn(case, seed):
    labels, options = CASES[case]
    true, predicted = _random_predictions(labels, 60, seed, **options)
    metrics = ClassifierMetrics.from_predictions(true, predicted, labels=labels)

    precision, recall, _, support = precision_recall_fscore_support(
        true, predicted, labels=labels, zero_division=np.nan, average=None)
    assert metrics.labels == labels
    assert metrics.confusion.dtype == np.int64
    np.testing.assert_array_equal(metrics.confusion, confusion_matrix(true, predicted, labels=labels))
    assert metrics.accuracy == pytest.approx(accuracy_score(true, predicted), abs=1e-12)
    assert metrics.classification_error == pytest.approx(1 - accuracy_score(true, predicted), abs=1e-12)
    assert metrics.count == 60
    _assert_same_floats(metrics.precision, precision, labels)
    _assert_same_floats(metrics.recall, recall, labels)
    assert [metrics.support[label] for label in labels] == support.tolist()
    for label in options.get("never_predicted", ()):
        assert math.isnan(metrics.precision[label])
    for label in options.get("never_true", ()):
        assert math.isnan(metrics.recall[label]) and metrics.support[label] == 0


def test_default_labels_are_the_sorted_union():
    metrics = ClassifierMetrics.from_predictions(["b", "c", "b"], ["b", "a", "d"])
    assert metrics.labels == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(metrics.confusion, confusion_matrix(["b", "c", "b"], ["b", "a", "d"],
                                                                      labels=["a", "b", "c", "d"]))


def test_labels_may_list_unseen_ones_in_any_order():
    metrics = ClassifierMetrics.from_predictions(["x", "y"], ["x", "x"], labels=["z", "y", "x"])
    assert metrics.labels == ["z", "y", "x"]
    np.testing.assert_array_equal(metrics.confusion, [[0, 0, 0], [0, 0, 1], [0, 0, 1]])
    assert math.isnan(metrics.precision["z"]) and math.isnan(metrics.recall["z"])
    assert metrics.precision["x"] == 0.5 and metrics.recall["y"] == 0.0


def test_numpy_inputs_give_plain_labels():
    true, predicted = np.array(["a", "b", "b"]), np.array(["a", "a", "b"])
    metrics = ClassifierMetrics.from_predictions(true, predicted)
    assert all(type(label) is str for label in metrics.labels)
    ints = ClassifierMetrics.from_predictions(np.array([1, 2, 2]), np.array([1, 1, 2]))
    assert all(type(label) is int for label in ints.labels)
    json.dumps(ints.to_dict())


def test_misclassified_in_input_order_with_paths_and_confidences():
    true = ["cat", "dog", "dog", "fox", "cat"]
    predicted = ["cat", "cat", "dog", "dog", "fox"]
    paths = [f"img{i}.jpg" for i in range(5)]
    confidences = np.array([0.9, 0.8, 0.7, 0.6, 0.55], dtype=np.float32)
    metrics = ClassifierMetrics.from_predictions(true, predicted, paths=paths, confidences=confidences)
    assert metrics.misclassified == [
        Misclassification("img1.jpg", "dog", "cat", pytest.approx(0.8)),
        Misclassification("img3.jpg", "fox", "dog", pytest.approx(0.6)),
        Misclassification("img4.jpg", "cat", "fox", pytest.approx(0.55)),
    ]
    assert all(type(item.confidence) is float for item in metrics.misclassified)


def test_misclassified_without_paths_or_confidences():
    metrics = ClassifierMetrics.from_predictions(["a", "b"], ["b", "b"])
    [item] = metrics.misclassified
    assert (item.path, item.label, item.predicted) == (None, "a", "b")
    assert math.isnan(item.confidence)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.label = "c"


def test_all_correct():
    metrics = ClassifierMetrics.from_predictions(["a", "b"], ["a", "b"])
    assert metrics.accuracy == 1.0 and metrics.classification_error == 0.0 and metrics.misclassified == []


@pytest.mark.parametrize("call, words", [
    (lambda: ClassifierMetrics.from_predictions([], []), "empty"),
    (lambda: ClassifierMetrics.from_predictions(["a", "b"], ["a"]), "predicted"),
    (lambda: ClassifierMetrics.from_predictions(["a"], ["a"], paths=["p", "q"]), "paths"),
    (lambda: ClassifierMetrics.from_predictions(["a"], ["a"], confidences=[]), "confidences"),
    (lambda: ClassifierMetrics.from_predictions(["a"], ["a"], confidences=["high"]), "confidences"),
    (lambda: ClassifierMetrics.from_predictions(["a", "c"], ["a", "b"], labels=["a", "b"]), "'c'"),
    (lambda: ClassifierMetrics.from_predictions(["a"], ["z"], labels=["a", "b"]), "'z'"),
    (lambda: ClassifierMetrics.from_predictions(["a"], ["a"], labels=["a", "a"]), "duplicates"),
    (lambda: ClassifierMetrics.from_predictions(["a", 1], ["a", 1]), "labels="),
    (lambda: ClassifierMetrics.from_predictions("ab", "ab"), "sequence"),
    (lambda: ClassifierMetrics.from_predictions(3, [3]), "sequence"),
    (lambda: ClassifierMetrics(labels=["a", "b"], confusion=np.zeros((3, 3))), "shape"),
])
def test_errors(call, words):
    with pytest.raises(mlc.MLCParametersError, match=words):
        call()


def _example() -> ClassifierMetrics:
    true = ["cat"] * 3 + ["dog"] * 3 + ["fox"] * 2
    predicted = ["cat", "cat", "dog", "dog", "dog", "cat", "cat", "dog"]
    return ClassifierMetrics.from_predictions(true, predicted, labels=["cat", "dog", "fox", "owl"])


def test_table_lists_every_label_with_formatted_numbers():
    metrics = _example()
    table = metrics.table()
    assert str(metrics) == table
    lines = table.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:5]}
    # cat: predicted 4 times, 2 right; dog: predicted 4 times, 2 right; fox, owl never predicted
    assert rows == {
        "cat": ["3", "0.500", "0.667"],
        "dog": ["3", "0.500", "0.667"],
        "fox": ["2", "n/a", "0.000"],
        "owl": ["0", "n/a", "n/a"],
    }
    assert len({len(line) for line in lines[:5]}) == 1  # fixed width
    assert "accuracy: 0.500 (4/8 correct)" in table
    confusion = lines[lines.index("confusion matrix (rows: true label, columns: predicted label)") + 1:]
    assert confusion[0].split()[-4:] == ["cat", "dog", "fox", "owl"]
    assert [line.split() for line in confusion[1:]] == [
        ["cat", "2", "1", "0", "0"],
        ["dog", "1", "2", "0", "0"],
        ["fox", "1", "1", "0", "0"],
        ["owl", "0", "0", "0", "0"],
    ]
    assert len({len(line) for line in confusion}) == 1


def test_table_truncates_long_labels_keeping_both_ends():
    long_a = "n01440764_" + "x" * 40 + "_tench"
    long_b = "n01443537_" + "x" * 40 + "_goldfish"
    metrics = ClassifierMetrics.from_predictions([long_a, long_b, long_b], [long_a, long_b, long_a])
    table = metrics.table()
    assert long_a not in table and long_b not in table
    assert max(len(line) for line in table.splitlines()) < 80
    assert "n01440764_x" in table and "x_tench" in table and "x_goldfish" in table
    assert ".." in table


def test_to_dict_is_json_with_nan_as_none():
    metrics = ClassifierMetrics.from_predictions(
        ["cat", "dog", "fox"], ["cat", "cat", "dog"], labels=["cat", "dog", "fox"],
        paths=["a.png", "b.png", "c.png"], confidences=[0.9, 0.6, 0.5])
    data = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert data["labels"] == ["cat", "dog", "fox"]
    assert data["count"] == 3
    assert data["accuracy"] == pytest.approx(1 / 3)
    assert data["classification_error"] == pytest.approx(2 / 3)
    assert data["precision"] == {"cat": 0.5, "dog": 0.0, "fox": None}
    assert data["recall"] == {"cat": 1.0, "dog": 0.0, "fox": 0.0}
    assert data["support"] == {"cat": 1, "dog": 1, "fox": 1}
    assert data["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert data["misclassified"] == [
        {"path": "b.png", "label": "dog", "predicted": "cat", "confidence": 0.6},
        {"path": "c.png", "label": "fox", "predicted": "dog", "confidence": 0.5},
    ]
    no_confidence = ClassifierMetrics.from_predictions(["a"], ["b"], labels=["a", "b"]).to_dict()
    assert json.loads(json.dumps(no_confidence, allow_nan=False))["misclassified"][0]["confidence"] is None
