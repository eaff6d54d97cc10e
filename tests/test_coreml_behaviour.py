"""Cases where mlc must behave exactly as Core ML does (each oracle is numpy, torch or coremltools'
own expectation, never mlc): scalar outputs come back as shape (1,), optional inputs left out
are fed their default, every unbound custom layer class is named, errors through the
coremltools drop-in are the ones coremltools raises on macOS, and a NeuralNetwork stack whose
inputs differ at the flexible inputs' default shapes is refused at load."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import mlc
from mlc._errors import MLCFeatureTypeError, raised_as

ROOT = Path(__file__).resolve().parent.parent
TURI = ROOT.parent / "shared" / "testdata" / "realworld" / "TuriActivityClassifier" / "activity_classifier_model.mlmodel"


def _nn_builder(inputs, outputs):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    return NeuralNetworkBuilder(
        [(n, datatypes.Array(*s)) for n, s in inputs], [(n, None) for n in outputs], disable_rank5_shape_mapping=True
    )


# -- 1. scalar outputs: Core ML has no rank-0 multiarray ---------------------------------------
# coremltools' testing_utils.compare_shapes: "Core ML does not support scalar as output", and it
# expects shape (1,) where the reference is a scalar.


def test_all_axes_reduction_of_an_ml_program_is_shape_1():
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_mlmodel

    model = mlc.load(mil_mlmodel(lambda x: mb.reduce_sum(x=x, keep_dims=False), {"x": (2, 3)}))
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    (out,) = model.predict({"x": x}).values()
    assert out.shape == (1,)
    np.testing.assert_allclose(out, [x.sum()], rtol=1e-6)

    batch = np.stack([x, 2 * x, -x])
    (outs,) = model.predict_batch({"x": batch}).values()
    assert outs.shape == (3, 1)  # each example as predict returns it
    np.testing.assert_allclose(outs, batch.sum(axis=(1, 2))[:, None], rtol=1e-5)


def test_torch_module_returning_a_0d_tensor_is_shape_1():
    import torch

    from mlc.testing.torch_models import convert

    class Sum(torch.nn.Module):
        def forward(self, x):
            return x.sum()

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    expected = Sum()(x)
    assert expected.shape == ()
    model = mlc.load(convert(Sum(), (x,)))
    out = model.predict({"x": x.numpy()})["y"]
    assert out.shape == (1,)
    np.testing.assert_allclose(out, [expected.item()], rtol=1e-5)


def test_neuralnetwork_all_axes_reduction_is_shape_1():
    """A NeuralNetwork's reduceSum over every axis without keepDims (NeuralNetwork.proto
    ``ReduceSumLayerParams``) gives a rank-1 (1,) blob, as Core ML returns it."""
    b = _nn_builder([("x", (2, 3))], ["y"])
    b.add_reduce_sum("r", "x", "y", reduce_all=True, keepdims=False)
    model = mlc.load(b.spec)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = model.predict({"x": x})["y"]
    assert out.shape == (1,) and out[0] == 15.0
    assert model.predict_batch({"x": np.stack([x, x])})["y"].shape == (2, 1)


# -- 2. optional inputs left out --------------------------------------------------------------


@pytest.fixture(scope="module")
def turi():
    if not TURI.exists():
        pytest.skip(f"{TURI} is absent: the real-world test files live in ../shared/testdata (see its SOURCES.md)")
    return mlc.load(TURI)


def test_turi_activity_classifier_runs_without_its_optional_lstm_state(turi):
    assert turi.input_description["hiddenIn"].optional and turi.input_description["cellIn"].optional
    x = np.random.default_rng(2).standard_normal((1, 50, 6))
    left_out = turi.predict({"features": x})
    zeros = turi.predict({"features": x, "hiddenIn": np.zeros(200), "cellIn": np.zeros(200)})
    assert left_out["Activity"] == zeros["Activity"]
    assert left_out["ActivityProbability"] == zeros["ActivityProbability"]
    for name in ("hiddenOut", "cellOut"):
        assert left_out[name].shape == (200,) and np.all(np.isfinite(left_out[name]))
        np.testing.assert_array_equal(left_out[name], zeros[name])
    assert abs(sum(left_out["ActivityProbability"].values()) - 1) < 1e-5


def test_turi_activity_classifier_batch_without_its_optional_lstm_state(turi):
    x = np.random.default_rng(3).standard_normal((2, 1, 50, 6))
    left_out = turi.predict_batch({"features": x})
    zeros = turi.predict_batch({"features": x, "hiddenIn": np.zeros((2, 200)), "cellIn": np.zeros((2, 200))})
    assert left_out["Activity"] == zeros["Activity"]
    np.testing.assert_allclose(left_out["hiddenOut"], zeros["hiddenOut"], rtol=1e-6, atol=1e-7)


def test_neuralnetwork_optional_input_left_out_is_zeros():
    b = _nn_builder([("x", (3,)), ("h", (3,))], ["y"])
    b.add_elementwise("add", ["x", "h"], "y", mode="ADD")
    b.spec.description.input[1].type.isOptional = True
    model = mlc.load(b.spec)
    x = np.array([1.0, -2.0, 3.5], np.float32)
    np.testing.assert_allclose(model.predict({"x": x})["y"], x + np.zeros(3))
    h = np.array([0.5, 0.5, 0.5], np.float32)
    np.testing.assert_allclose(model.predict({"x": x, "h": h})["y"], x + h)


def test_neuralnetwork_optional_input_left_out_is_its_default_value():
    """``NeuralNetworkBuilder.set_optional_input`` writes ``floatDefaultValue``: Core ML feeds it."""
    b = _nn_builder([("x", (3,)), ("h", (3,))], ["y"])
    b.add_elementwise("mul", ["x", "h"], "y", mode="MULTIPLY")
    b.set_optional_input(1, value=2.5, format="float")
    x = np.array([1.0, -2.0, 3.5], np.float32)
    np.testing.assert_allclose(mlc.load(b.spec).predict({"x": x})["y"], x * np.full(3, 2.5))


def test_ml_program_optional_input_left_out_is_its_default_value():
    """coremltools' backend/mil/test_load.py ``test_mil_default_value_runtime``: x has
    ``default_value`` 1.0; predict({"y": 2.0}) gives 3.0."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=[1]), mb.TensorSpec(shape=[1])])
    def basic_network(x, y):
        return mb.add(x=x, y=y, name="output")

    inputs = [ct.TensorType(name="x", shape=[1], default_value=np.array([1.0], np.float32)), ct.TensorType(name="y", shape=[1])]
    model = mlc.load(ct.convert(basic_network, convert_to="mlprogram", inputs=inputs))
    assert model.predict({"x": np.array([3.0]), "y": np.array([2.0])})["output"][0] == 5.0
    assert model.predict({"y": np.array([2.0])})["output"][0] == 3.0
    np.testing.assert_array_equal(model.predict_batch({"y": np.array([[2.0], [4.0]])})["output"], [[3.0], [5.0]])


# -- 3. every unbound custom layer class is named ----------------------------------------------


def _two_custom_classes_spec():
    from coremltools.proto import NeuralNetwork_pb2

    b = _nn_builder([("data", (3,))], ["out"])
    for name, cls, src, dst in (("a", "UnboundAlpha", "data", "mid"), ("b", "UnboundBeta", "mid", "out")):
        params = NeuralNetwork_pb2.CustomLayerParams()
        params.className = cls
        b.add_custom(name, [src], [dst], custom_proto_spec=params)
    return b.spec


def test_every_unbound_custom_layer_class_is_named():
    with pytest.raises(mlc.MLCUnsupportedError) as info:
        mlc.load(_two_custom_classes_spec())
    message = str(info.value)
    assert "UnboundAlpha" in message and "UnboundBeta" in message
    assert "mlc.register_custom_layer(" in message


def test_a_bound_class_is_not_named_among_the_unbound():
    mlc.register_custom_layer("UnboundAlpha", lambda x, *, parameters, weights: x)
    try:
        with pytest.raises(mlc.MLCUnsupportedError, match="'UnboundBeta'.*register_custom_layer") as info:
            mlc.load(_two_custom_classes_spec())
    finally:
        mlc.unregister_custom_layer("UnboundAlpha")
    assert "UnboundAlpha" not in str(info.value)


# -- 4. errors through the coremltools drop-in are coremltools' ------------------------------


@pytest.fixture
def coremltools_dense(tmp_path):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    import mlc.deploy.coremltools_backend as backend
    from mlc.testing.mil_program import mil_mlmodel

    path = tmp_path / "relu.mlpackage"
    mil_mlmodel(lambda x: mb.relu(x=x), {"x": (2, 3)}).save(str(path))
    backend.install()
    try:
        yield ct.models.MLModel(str(path))
    finally:
        backend.uninstall()


def test_failed_prediction_through_coremltools_is_a_runtime_error_and_an_mlc_error(coremltools_dense):
    for bad in ({"x": np.ones((3, 3), np.float32)}, {}):  # a wrong shape; a missing input
        with pytest.raises(RuntimeError) as info:
            coremltools_dense.predict(bad)
        e = info.value
        assert isinstance(e, RuntimeError) and isinstance(e, mlc.MLCError)
        assert isinstance(e, mlc.MLCFeatureTypeError) and e.code == "featureType"
        assert "'x'" in e.message and str(e) == e.message
    out = coremltools_dense.predict({"x": -np.ones((2, 3), np.float32)})  # a good input still runs
    np.testing.assert_array_equal(next(iter(out.values())), np.zeros((2, 3)))


def test_coremltools_python_checks_raise_coremltools_types(coremltools_dense):
    """coremltools' MLModel.predict: ``_verify_input_name_exists`` raises KeyError,
    ``_check_predict_data`` TypeError, before Core ML is called."""
    with pytest.raises(KeyError) as info:
        coremltools_dense.predict({"x": np.ones((2, 3), np.float32), "nope": 1})
    assert isinstance(info.value, mlc.MLCError) and "nope" in info.value.message
    with pytest.raises(TypeError):
        coremltools_dense.predict([np.ones((2, 3))])
    with pytest.raises(TypeError):
        coremltools_dense.predict(("x",))


def test_make_state_of_a_stateless_model_through_coremltools_is_a_runtime_error(coremltools_dense):
    with pytest.raises(RuntimeError) as info:
        coremltools_dense.make_state()
    assert isinstance(info.value, mlc.MLCError)


def test_raised_as_keeps_class_code_message_and_pickles():
    e = raised_as(MLCFeatureTypeError("m: input 'x': bad"), RuntimeError)
    assert isinstance(e, MLCFeatureTypeError) and isinstance(e, ValueError) and isinstance(e, RuntimeError)
    assert type(e).__name__ == "MLCFeatureTypeError" and e.code == "featureType" and e.message == "m: input 'x': bad"
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is type(e) and again.message == e.message
    plain = mlc.MLCUnsupportedError("x")  # NotImplementedError is a RuntimeError already
    assert raised_as(plain, RuntimeError) is plain


# -- 5. a NeuralNetwork stack is built at the flexible inputs' default shapes -------------------
# coremltools' torch-frontend TestStack::test_stack_dynamic_range_dim, NeuralNetwork backend:
# stacking two (2, 3, 4) inputs with a (2, 3, RangeDim(upper_bound=10, default=2)) one must fail
# (RuntimeError from predict, which a failed load becomes in coremltools) although every
# prediction feeds (2, 3, 4); with default=4 it runs.


def _nn_from_torch(module, shapes):
    import coremltools as ct
    import torch

    traced = torch.jit.trace(module.eval(), [torch.rand(2, 3, 4) for _ in shapes])
    inputs = [ct.TensorType(name=n, shape=s) for n, s in zip("abc", shapes)]
    return ct.convert(traced, inputs=inputs, convert_to="neuralnetwork", skip_model_load=True).get_spec()


def _stack_module():
    import torch

    class Stack(torch.nn.Module):
        def forward(self, a, b, c):
            return torch.stack((a, b, c), dim=1)

    return Stack()


def _range(default):
    import coremltools as ct

    return (2, 3, ct.RangeDim(upper_bound=10, default=default))


def test_neuralnetwork_stack_refused_at_load_when_flexible_default_shapes_differ():
    spec = _nn_from_torch(_stack_module(), [(2, 3, 4), (2, 3, 4), _range(2)])
    assert [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers] == ["stack"]
    with pytest.raises(mlc.MLCParametersError, match=r"layer '.*' \(stack\).*\(2, 3, 2\).*default shapes"):
        mlc.load(spec)


def test_neuralnetwork_stack_of_flexible_input_with_agreeing_default_runs():
    import torch

    model = mlc.load(_nn_from_torch(_stack_module(), [(2, 3, 4), (2, 3, 4), _range(4)]))
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal((2, 3, 4)).astype(np.float32) for n in "abc"}
    (out,) = model.predict(x).values()
    expected = _stack_module()(*(torch.from_numpy(x[n]) for n in "abc")).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(mlc.MLCParametersError, match=r"\(stack\).*\(2, 3, 5\)"):  # shapes differ at run time
        model.predict({**x, "c": np.ones((2, 3, 5), np.float32)})


def test_neuralnetwork_concat_of_flexible_input_is_not_refused():
    """Concatenation along the flexible axis: the default sizes differ there, which is valid."""
    import torch

    class Cat(torch.nn.Module):
        def forward(self, a, b):
            return torch.cat((a, b), dim=2)

    model = mlc.load(_nn_from_torch(Cat(), [(2, 3, 4), _range(2)]))
    a = np.ones((2, 3, 4), np.float32)
    b = np.full((2, 3, 5), 2.0, np.float32)
    (out,) = model.predict({"a": a, "b": b}).values()
    np.testing.assert_array_equal(out, np.concatenate([a, b], axis=2))
