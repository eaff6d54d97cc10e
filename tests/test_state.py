"""Stateful (iOS18) models: make_state, read/write, updates across predictions."""

import numpy as np
import pytest
import torch

import mlc


class Accumulator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(1, 3))

    def forward(self, x):
        self.acc.add_(x)
        return self.acc * 2.0


@pytest.fixture(scope="module")
def model(ct):
    traced = torch.jit.trace(Accumulator().eval(), torch.rand(1, 3), check_trace=False)  # it mutates its buffer
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=(1, 3))],
        states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 3), dtype=np.float16), name="acc")],
        minimum_deployment_target=ct.target.iOS18,
    )  # Core ML states are fp16 only
    return mlc.load(mlmodel)


def test_state_accumulates_like_torch(model):
    reference = Accumulator()
    state = model.make_state()
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((1, 3)).astype(np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        (out,) = model.predict({"x": x}, state=state).values()
        # fp16 state and fp16 program: values of a few units, so fp16's spacing (~2e-3) bounds the error
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-2)
    np.testing.assert_allclose(state.read_state("acc"), reference.acc.numpy(), rtol=0, atol=5e-3)
    assert model._plans == {}  # a call with a state always takes the full path (mlc.call_plan)


def test_states_are_independent_and_writable(model):
    a, b = model.make_state(), model.make_state()
    a.write_state("acc", np.ones((1, 3)))
    one = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(next(iter(model.predict({"x": one}, state=a).values())), 4 * one)
    np.testing.assert_array_equal(next(iter(model.predict({"x": one}, state=b).values())), 2 * one)


def test_state_errors(model):
    with pytest.raises(mlc.MLCParametersError, match="needs state=model.make_state"):
        model.predict({"x": np.ones((1, 3), np.float32)})
    with pytest.raises(mlc.MLCParametersError, match="no state 'nope'"):
        model.make_state().read_state("nope")
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"state 'acc' has shape \(1, 3\)"):
        model.make_state().write_state("acc", np.ones(4))
