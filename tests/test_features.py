"""Inputs and outputs at the model boundary: checks, conversions and their error messages."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.testing.mil_program import mil_model


@pytest.fixture(scope="module")
def add_model():
    return mil_model(lambda x, y: mb.add(x=x, y=y), {"x": (2, 3), "y": (2, 3)})


@pytest.fixture(scope="module")
def int_model():
    return mil_model(lambda n: mb.add(x=n, y=np.int32(1)), {"n": ((4,), "int32")})


def test_predict_matches_numpy(add_model):
    x, y = np.random.rand(2, 3).astype(np.float32), np.random.rand(2, 3).astype(np.float32)
    (out,) = add_model.predict({"x": x, "y": y}).values()
    np.testing.assert_allclose(out, x + y, rtol=1e-7)
    assert out.dtype == np.float32 and out.shape == (2, 3)


def test_predict_list_in_list_out(add_model):
    feeds = [{"x": np.full((2, 3), i, np.float32), "y": np.ones((2, 3), np.float32)} for i in range(3)]
    outs = add_model.predict(feeds)
    assert isinstance(outs, list) and len(outs) == 3
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(next(iter(out.values())), np.full((2, 3), i + 1, np.float32))


def test_predict_batch_is_vmapped(add_model):
    x, y = np.random.rand(5, 2, 3).astype(np.float32), np.random.rand(5, 2, 3).astype(np.float32)
    (out,) = add_model.predict_batch({"x": x, "y": y}).values()
    np.testing.assert_allclose(out, x + y, rtol=1e-7)


def test_float64_and_lists_are_cast(add_model):
    out = add_model.predict({"x": np.ones((2, 3)), "y": [[1, 2, 3], [4, 5, 6]]})
    np.testing.assert_array_equal(next(iter(out.values())), np.array([[2, 3, 4], [5, 6, 7]], np.float32))


def test_int_input_and_output(int_model):
    (out,) = int_model.predict({"n": np.arange(4, dtype=np.int32)}).values()
    np.testing.assert_array_equal(out, np.arange(1, 5))
    assert out.dtype == np.int32


@pytest.mark.parametrize(
    "feeds, match",
    [
        ({"x": np.ones((2, 3), np.float32)}, "missing input 'y'"),
        ({"x": np.ones((2, 3)), "y": np.ones((2, 3)), "z": 1}, "unknown input 'z'"),
        ({"x": np.ones((3, 2)), "y": np.ones((2, 3))}, r"input 'x'.*shape mismatch.*\(3, 2\).*\(2, 3\)"),
        ({"x": np.ones((2, 3, 1)), "y": np.ones((2, 3))}, r"input 'x'.*rank mismatch"),
        ({"x": np.array([["a"] * 3] * 2), "y": np.ones((2, 3))}, r"input 'x'.*strings or objects"),
        ({"x": "hello", "y": np.ones((2, 3))}, r"input 'x'.*expected a multiarray"),
    ],
)
def test_bad_inputs_are_named(add_model, feeds, match):
    with pytest.raises(mlc.MLCFeatureTypeError, match=match) as info:
        add_model.predict(feeds)
    assert info.value.code == "featureType"


def test_fractional_float_into_int_input_is_refused(int_model):
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"input 'n'.*float64 cannot be converted to the declared int32"):
        int_model.predict({"n": np.full(4, 1.5)})
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"input 'n'.*float32 cannot be converted"):
        int_model.predict({"n": np.array([1, 2, np.nan, 4], np.float32)})


def test_whole_number_floats_into_int_input_are_converted(int_model):
    """Core ML converts them (coremltools' test harness feeds every input as float32)."""
    (out,) = int_model.predict({"n": np.arange(4, dtype=np.float32)}).values()
    np.testing.assert_array_equal(out, np.arange(1, 5))


def test_inputs_must_be_a_dict(add_model):
    with pytest.raises(mlc.MLCFeatureTypeError, match="inputs must be a dict"):
        add_model.predict(np.ones((2, 3)))


def test_nan_and_inf_pass_through(add_model):
    x = np.array([[np.nan, np.inf, -np.inf], [1, 2, 3]], np.float32)
    (out,) = add_model.predict({"x": x, "y": np.zeros((2, 3), np.float32)}).values()
    np.testing.assert_array_equal(out, x)


def test_predict_batch_needs_matching_batch_sizes(add_model):
    with pytest.raises(mlc.MLCFeatureTypeError, match="different leading sizes"):
        add_model.predict_batch({"x": np.ones((4, 2, 3)), "y": np.ones((5, 2, 3))})


def test_flexible_shape_range(ct):
    import torch

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2.0

    traced = torch.jit.trace(Double(), torch.rand(1, 4))
    shape = ct.Shape(shape=(1, ct.RangeDim(lower_bound=2, upper_bound=8, default=4)))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], minimum_deployment_target=ct.target.iOS15,
                         compute_precision=ct.precision.FLOAT32)
    model = mlc.load(mlmodel)
    for n in (2, 5, 8):
        x = np.random.rand(1, n).astype(np.float32)
        np.testing.assert_allclose(next(iter(model.predict({"x": x}).values())), 2 * x)
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"shape mismatch: got shape \(1, 9\).*\[2,8\]"):
        model.predict({"x": np.ones((1, 9), np.float32)})


def test_enumerated_shapes(ct):
    import torch

    class Neg(torch.nn.Module):
        def forward(self, x):
            return -x

    traced = torch.jit.trace(Neg(), torch.rand(1, 3))
    shape = ct.EnumeratedShapes(shapes=[(1, 3), (2, 3)], default=(1, 3))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], minimum_deployment_target=ct.target.iOS15,
                         compute_precision=ct.precision.FLOAT32)
    model = mlc.load(mlmodel)
    x = np.random.rand(2, 3).astype(np.float32)
    np.testing.assert_allclose(next(iter(model.predict({"x": x}).values())), -x)
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"shape mismatch: got shape \(3, 3\)"):
        model.predict({"x": np.ones((3, 3), np.float32)})


def test_descriptions(add_model):
    assert list(add_model.input_description) == ["x", "y"]
    assert "MultiArray (float32 2x3)" in repr(add_model.input_description)
    assert len(add_model.output_description) == 1
