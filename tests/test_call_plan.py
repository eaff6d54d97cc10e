"""predict's path for a signature it has run (mlc.call_plan): the same results and errors as the
full path, and the full path again wherever something a plan does not hold changed."""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.model import _input_signature
from mlc.testing.mil_program import mil_model


def _two_in_two_out(x, y):
    return mb.add(x=x, y=y, name="s"), mb.reduce_sum(x=mb.mul(x=x, y=y), axes=[0, 1], keep_dims=False, name="dot")


@pytest.fixture()
def model():
    return mil_model(_two_in_two_out, {"x": (2, 3), "y": (2, 3)})


def _expected(x, y):
    x, y = x.astype(np.float32), y.astype(np.float32)
    return x + y, np.array([np.sum(x * y, dtype=np.float64)])


def _counting_full_path(model, monkeypatch, method: str = "call"):
    """A list that grows by one at each call of the runner's full path (``call``, or
    ``call_batch`` for predict_batch)."""
    calls = []
    original = getattr(model.runner, method)
    monkeypatch.setattr(model.runner, method, lambda inputs: calls.append(1) or original(inputs))
    return calls


def test_later_calls_take_the_plan_and_compute_what_the_full_path_does(model, monkeypatch):
    rng = np.random.default_rng(0)
    calls = _counting_full_path(model, monkeypatch)
    for i in range(4):
        x, y = rng.random((2, 3)), rng.random((2, 3)).astype(np.float32)  # x float64: cast every call
        out = model.predict({"x": x, "y": y})
        s, dot = _expected(x, y)
        np.testing.assert_array_equal(out["s"], s)
        np.testing.assert_allclose(out["dot"], dot, rtol=1e-6)
        assert out["dot"].shape == (1,)  # Core ML has no rank-0 multiarray, on either path
        assert list(out) == ["s", "dot"] and out["s"].dtype == np.float32
    assert len(calls) == 1 and len(model._plans) == 1
    # the same inputs in another dict order: the same signature? no: names are in order; a plan of its own
    model.predict({"y": y, "x": x})
    assert len(model._plans) == 2


def test_a_plan_raises_the_programs_run_time_checks():
    build = lambda data, updates, indices: mb.scatter(data=data, indices=indices, updates=updates, validate_indices=True)
    model = mil_model(build, {"data": ((2, 3), "fp32"), "updates": ((2, 3), "fp32"), "indices": ((2,), "int32")})
    data, updates = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    for _ in range(2):
        (out,) = model.predict({"data": data, "updates": updates, "indices": np.array([1, 0], np.int32)}).values()
        np.testing.assert_array_equal(out, updates)
    assert len(model._plans) == 1
    with pytest.raises(mlc.MLCPredictionError, match="validate_indices"):
        model.predict({"data": data, "updates": updates, "indices": np.array([2, 0], np.int32)})


def test_what_a_plan_does_not_hold_takes_the_full_path(model, monkeypatch):
    x = np.ones((2, 3), np.float32)
    model.predict({"x": x, "y": x})
    calls = _counting_full_path(model, monkeypatch)
    model.predict({"x": x, "y": x})
    assert calls == []
    with pytest.raises(mlc.MLCFeatureTypeError, match="shape mismatch"):  # another signature: checked
        model.predict({"x": np.ones((3, 2), np.float32), "y": x})
    model.predict({"x": [[1.0] * 3] * 2, "y": x})  # a list: checked and converted
    monkeypatch.setenv("MLC_DEBUG", "0")  # a debug switch set: the full path decides
    model.predict({"x": x, "y": x})
    monkeypatch.delenv("MLC_DEBUG")
    monkeypatch.setenv("MLC_MAX_TENSOR_BYTES", "16")  # another size limit: another signature
    with pytest.raises(mlc.MLCFeatureTypeError):
        model.predict({"x": x, "y": x})
    assert len(calls) == 2  # the list and the debug switch; the refusals come before any call


def test_a_trained_copy_plans_with_its_own_weights():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = mil_model(lambda x: mb.mul(x=x, y=w, name="y"), {"x": (2, 3)})
    x = np.ones((2, 3), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(model.predict({"x": x})["y"], w)
    (name,) = model.params
    trained = model.with_params({name: w * 10})
    for _ in range(2):
        np.testing.assert_array_equal(trained.predict({"x": x})["y"], w * 10)
        np.testing.assert_array_equal(model.predict({"x": x})["y"], w)
    assert trained._plans is not model._plans


def test_classifier_in_double_precision_through_a_plan():
    """A classic model (computed in float64, JAX's 64-bit mode around the call) with a label and
    a probability dict: the plan's outputs are the full path's, against scikit-learn."""
    sk = pytest.importorskip("sklearn")
    from coremltools.converters import sklearn as skc
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4)).astype(np.float32).astype(np.float64)
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    model = mlc.load(skc.convert(tree, "x", "target").get_spec())
    assert sk is not None
    expected = tree.predict_proba(X[:5])
    for i in range(5):
        out = model.predict({"x": X[i]})
        assert out["target"] == tree.predict(X[i : i + 1])[0]
        np.testing.assert_allclose([out["classProbability"][c] for c in tree.classes_], expected[i], rtol=1e-12, atol=1e-12)
    assert len(model._plans) == 1 and _input_signature({"x": X[0]}) in model._plans


def test_a_model_with_its_own_size_limit_plans_too():
    """The plan's key holds the limit the model's checks ran under (load's ``max_tensor_bytes``)."""
    model = mil_model(_two_in_two_out, {"x": (2, 3), "y": (2, 3)}, max_tensor_bytes=1 << 20)
    x = np.ones((2, 3), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(model.predict({"x": x, "y": x})["s"], x * 2)
    assert len(model._plans) == 1


# -- predict_batch ---------------------------------------------------------------------------


def test_later_batches_take_a_plan_and_compute_what_the_full_path_does(model, monkeypatch):
    monkeypatch.setenv("MLC_BATCH_SPLIT", "1")
    rng = np.random.default_rng(2)
    calls = _counting_full_path(model, monkeypatch, "call_batch")
    for _ in range(3):
        x, y = rng.random((5, 2, 3)), rng.random((5, 2, 3)).astype(np.float32)
        out = model.predict_batch({"x": x, "y": y})
        assert list(out) == ["s", "dot"] and out["s"].dtype == np.float32
        for i in range(5):
            s, dot = _expected(x[i], y[i])
            np.testing.assert_array_equal(out["s"][i], s)
            np.testing.assert_allclose(out["dot"][i], dot, rtol=1e-6)
        assert out["dot"].shape == (5, 1)  # a per-example scalar, as the full path gives it
    assert len(calls) == 1 and list(model._plans) == [("batch", _input_signature({"x": x, "y": y}))]
    model.predict_batch({"x": x[:4], "y": y[:4]})  # another batch size: another signature
    assert len(calls) == 2


def test_a_batch_plan_raises_the_programs_run_time_checks():
    build = lambda data, updates, indices: mb.scatter(data=data, indices=indices, updates=updates, validate_indices=True)
    model = mil_model(build, {"data": ((2, 3), "fp32"), "updates": ((2, 3), "fp32"), "indices": ((2,), "int32")})
    data, updates = np.zeros((4, 2, 3), np.float32), np.ones((4, 2, 3), np.float32)
    good = np.tile(np.array([1, 0], np.int32), (4, 1))
    for _ in range(2):
        (out,) = model.predict_batch({"data": data, "updates": updates, "indices": good}).values()
        np.testing.assert_array_equal(out, updates)
    assert any(k[0] == "batch" for k in model._plans)
    bad = good.copy()
    bad[3] = [2, 0]
    with pytest.raises(mlc.MLCPredictionError, match="validate_indices"):
        model.predict_batch({"data": data, "updates": updates, "indices": bad})


def test_batches_split_over_threads_take_the_full_path(model, monkeypatch):
    """A batch size the runner splits (batch_split) has no plan; a plan made under one
    MLC_BATCH_SPLIT is not used under another."""
    x = np.ones((8, 2, 3), np.float32)
    monkeypatch.setenv("MLC_BATCH_SPLIT", "2")  # forced: split without timing
    calls = _counting_full_path(model, monkeypatch, "call_batch")
    for _ in range(2):
        np.testing.assert_array_equal(model.predict_batch({"x": x, "y": x})["s"], x * 2)
    assert len(calls) == 2 and not model._plans
    monkeypatch.setenv("MLC_BATCH_SPLIT", "1")
    for _ in range(3):
        np.testing.assert_array_equal(model.predict_batch({"x": x, "y": x})["s"], x * 2)
    assert len(calls) == 3 and len(model._plans) == 1
    monkeypatch.setenv("MLC_BATCH_SPLIT", "2")
    model.predict_batch({"x": x, "y": x})
    assert len(calls) == 4


def test_classic_batches_through_a_plan_against_scikit_learn(monkeypatch):
    """Double-precision classic models: a classifier's labels and probability dicts and a
    regressor's double output, per example, through a batch plan."""
    pytest.importorskip("sklearn")
    from coremltools.converters import sklearn as skc
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    monkeypatch.setenv("MLC_BATCH_SPLIT", "1")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4)).astype(np.float32).astype(np.float64)
    labels = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    classifier = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, labels)
    regressor = DecisionTreeRegressor(max_depth=5, random_state=0).fit(X, X[:, 2] - X[:, 3] ** 2)
    clf = mlc.load(skc.convert(classifier, "x", "target").get_spec())
    reg = mlc.load(skc.convert(regressor, "x", "y").get_spec())
    for start in (0, 6, 12):
        rows = X[start : start + 6]
        out = clf.predict_batch({"x": rows})
        assert out["target"] == list(classifier.predict(rows))
        probabilities = [[p[c] for c in classifier.classes_] for p in out["classProbability"]]
        np.testing.assert_allclose(probabilities, classifier.predict_proba(rows), rtol=1e-12, atol=1e-12)
        y = reg.predict_batch({"x": rows})["y"]
        assert y.dtype == np.float64 and y.shape == (6,)
        np.testing.assert_allclose(y, regressor.predict(rows), rtol=1e-12, atol=1e-12)
    assert [k[0] for k in clf._plans] == ["batch"] and [k[0] for k in reg._plans] == ["batch"]
