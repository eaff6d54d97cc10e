"""``Model._prepare``'s fast path: inputs of a signature already checked skip the checks, and
everything the checks decide from values, names or the size limit is still decided."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.features import cast_needs_no_values
from mlc.testing.mil_program import mil_model


@pytest.fixture()
def add_model():
    return mil_model(lambda x, y: mb.add(x=x, y=y), {"x": (2, 3), "y": (2, 3)})


@pytest.fixture()
def int_model():
    return mil_model(lambda n: mb.add(x=n, y=np.int32(1)), {"n": ((4,), "int32")})


def test_a_known_signature_computes_with_the_new_values(add_model):
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.random((2, 3)), rng.random((2, 3))  # float64: cast to the declared fp32 every call
        (out,) = add_model.predict({"x": x, "y": y}).values()
        np.testing.assert_array_equal(out, x.astype(np.float32) + y.astype(np.float32))
    assert len(add_model._known_inputs) == 1


def test_values_a_cast_must_look_at_are_checked_every_call(int_model):
    fine = np.array([1, 2, 3, 4], np.int64)
    np.testing.assert_array_equal(next(iter(int_model.predict({"n": fine}).values())), [2, 3, 4, 5])
    np.testing.assert_array_equal(next(iter(int_model.predict({"n": fine}).values())), [2, 3, 4, 5])
    with pytest.raises(mlc.MLCFeatureTypeError, match="out of the range"):
        int_model.predict({"n": np.array([1, 2, 3, 2**40], np.int64)})
    whole = np.array([1.0, 2.0, 3.0, 4.0])
    int_model.predict({"n": whole})
    with pytest.raises(mlc.MLCFeatureTypeError, match="without losing its meaning"):
        int_model.predict({"n": np.array([1.5, 2.0, 3.0, 4.0])})
    assert int_model._known_inputs == {}  # int64 -> int32 and float -> int look at values: never remembered


def test_other_names_shapes_or_limits_are_checked_again(add_model, monkeypatch):
    x = np.ones((2, 3), np.float32)
    add_model.predict({"x": x, "y": x})
    with pytest.raises(mlc.MLCFeatureTypeError, match="shape mismatch"):
        add_model.predict({"x": np.ones((3, 2), np.float32), "y": x})
    with pytest.raises(mlc.MLCFeatureTypeError, match="unknown input"):
        add_model.predict({"x": x, "z": x})
    monkeypatch.setenv("MLC_MAX_TENSOR_BYTES", "16")
    with pytest.raises(mlc.MLCFeatureTypeError):
        add_model.predict({"x": x, "y": x})


def test_lists_and_other_array_types_take_the_checked_path(add_model):
    x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    (out,) = add_model.predict({"x": x, "y": x}).values()
    np.testing.assert_array_equal(out, np.array(x, np.float32) * 2)
    assert add_model._known_inputs == {}


@pytest.mark.parametrize(
    "given, declared, expected",
    [("float32", "float32", True), ("float64", "float32", True), ("float16", "float32", True), ("int32", "int32", True),
     ("int8", "int32", True), ("int64", "int32", False), ("float64", "int32", False), ("int32", "float32", True),
     ("uint32", "int32", False), ("bool", "float32", True), ("float32", "int32", False)],
)
def test_cast_needs_no_values(given, declared, expected):
    """Only casts ``multiarray_input`` makes without a look at the values (same kind, and no
    integer narrowing) are remembered; int -> float and bool -> float are same_kind casts in numpy."""
    assert cast_needs_no_values(np.dtype(given), np.dtype(declared)) is expected


def test_predict_batch_remembers_its_own_signatures(add_model):
    rng = np.random.default_rng(1)
    for _ in range(2):
        x, y = rng.random((5, 2, 3)).astype(np.float32), rng.random((5, 2, 3)).astype(np.float32)
        (out,) = add_model.predict_batch({"x": x, "y": y}).values()
        np.testing.assert_array_equal(out, x + y)
    assert [key[0] for key in add_model._known_inputs] == ["batch"]
    with pytest.raises(mlc.MLCFeatureTypeError, match="different leading sizes"):
        add_model.predict_batch({"x": np.ones((5, 2, 3), np.float32), "y": np.ones((4, 2, 3), np.float32)})
    with pytest.raises(mlc.MLCFeatureTypeError, match="rank mismatch"):  # predict does not take the batch's signature
        add_model.predict({"x": np.ones((5, 2, 3), np.float32), "y": np.ones((5, 2, 3), np.float32)})
