"""``mlc update`` on the command line, and ``mlc.update`` on updatable kNN classifiers (the
oracle is scikit-learn's brute-force ``KNeighborsClassifier``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

import mlc
from mlc.cli import main

from mlc.testing.updatable import CLASSES, mlp_model


@pytest.fixture()
def classifier_file(tmp_path, ct):
    path = tmp_path / "Classifier.mlmodel"
    ct.models.utils.save_spec(mlp_model("ce", "adam")[0], str(path))
    return path


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_cli_update_writes_an_updated_model(tmp_path, classifier_file, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    labels = np.array([CLASSES[i] for i in rng.integers(0, 3, 12)])
    out = tmp_path / "Updated.mlmodel"
    before = classifier_file.read_bytes()
    code = main(["update", str(classifier_file), "--data", _npz(tmp_path, x=x, label=labels), "-o", str(out), "--epochs", "2", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "2 epoch(s) on 12 examples" in text and f"wrote {out}" in text
    assert classifier_file.read_bytes() == before
    expected = mlc.update(str(classifier_file), {"x": x, "label": list(labels)}, epochs=2)
    updated = mlc.load(out)
    for k, v in expected.model.params.items():
        np.testing.assert_array_equal(np.asarray(updated.params[k]), np.asarray(v))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((3, 4), np.float32)}, "training data has no 'label'"),
        ({"x": np.zeros((3, 4), np.float32), "label": np.array(["cat", "dog", "wolf"])}, "'wolf'"),
        ({"x": np.zeros((0, 4), np.float32), "label": np.array([], dtype=str)}, "empty"),
    ],
)
def test_cli_update_bad_data_writes_nothing(tmp_path, classifier_file, capsys, arrays, message):
    out = tmp_path / "Updated.mlmodel"
    code = main(["update", str(classifier_file), "--data", _npz(tmp_path, **arrays), "-o", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "mlc: error [update]" in err and message in err
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["Classifier.mlmodel", "data.npz"]


def test_cli_update_refuses_an_unreadable_data_file(tmp_path, classifier_file, capsys):
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"not a zip")
    assert main(["update", str(classifier_file), "--data", str(bad), "-o", str(tmp_path / "o.mlmodel"), "--quiet"]) == 2
    assert "mlc: error [io]" in capsys.readouterr().err


def test_cli_update_refuses_epochs_the_model_does_not_allow(tmp_path, classifier_file, capsys):
    data = _npz(tmp_path, x=np.zeros((2, 4), np.float32), label=np.array(["cat", "dog"]))
    assert main(["update", str(classifier_file), "--data", data, "-o", str(tmp_path / "o.mlmodel"), "--epochs", "7", "--quiet"]) == 2
    assert "epochs=7 is not one of the values" in capsys.readouterr().err


# -- kNN ------------------------------------------------------------------------------------
@pytest.fixture()
def knn_spec():
    from coremltools.models.nearest_neighbors import KNearestNeighborsClassifierBuilder

    builder = KNearestNeighborsClassifierBuilder(
        input_name="features", output_name="label", number_of_dimensions=3, default_class_label="none",
        number_of_neighbors=3, weighting_scheme="uniform", index_type="linear",
    )
    builder.is_updatable = True
    return builder.spec


def test_knn_update_adds_examples_and_saves_them(tmp_path, knn_spec):
    rng = np.random.default_rng(5)
    centers = np.array([[0, 0, 0], [4, 4, 4], [0, 4, 8]], np.float32)
    y = rng.integers(0, 3, 30)
    x = (centers[y] + rng.normal(scale=0.8, size=(30, 3))).astype(np.float32)
    names = np.array(["red", "green", "blue"])[y]
    task = mlc.update(mlc.load(knn_spec), {"features": x, "label": list(names)})
    assert task.state == "completed" and task.result.metrics == {"examples": 30}
    queries = (centers[rng.integers(0, 3, 10)] + rng.normal(scale=1.0, size=(10, 3))).astype(np.float32)
    oracle = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(x, names).predict(queries)
    assert [task.model.predict({"features": q})["label"] for q in queries] == list(oracle)
    out = tmp_path / "Personal.mlmodel"
    task.model.save(out)
    saved = mlc.load(out)
    assert len(saved.spec.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples) == 30
    assert [saved.predict({"features": q})["label"] for q in queries] == list(oracle)
    again = mlc.update(saved, {"features": x[:2], "label": ["violet", "violet"]})
    assert len(again.model.spec.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples) == 32
    assert len(knn_spec.kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples) == 0  # the original is untouched


def test_knn_update_bad_input(knn_spec):
    model = mlc.load(knn_spec)
    with pytest.raises(mlc.MLCUpdateError, match="label"):
        mlc.update(model, {"features": np.zeros((2, 3), np.float32)})
    with pytest.raises(mlc.MLCUpdateError, match="empty"):
        mlc.update(model, {"features": np.zeros((0, 3), np.float32), "label": []})
    with pytest.raises(mlc.MLCUpdateError, match="no hyper-parameters"):
        mlc.update(model, {"features": np.zeros((1, 3), np.float32), "label": ["a"]}, epochs=3)
