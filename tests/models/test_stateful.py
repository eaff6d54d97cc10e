"""Stateful (iOS18) models from torch: an attention layer with a KV cache held in registered
buffers, converted with coremltools ``states=`` and run step by step with mlc; torch, mutating
its buffers the same way, is the oracle for every step's output and for the state arrays.

Core ML states are fp16 only, so the torch buffers are fp16 too: each step writes its keys and
values rounded to fp16 and attends over the cache read back as fp32, exactly what the converted
program does (cast, ``slice_update``, ``write_state``, ``read_state``, cast back).
"""

import warnings

import jax
import numpy as np
import pytest
import torch

import mlc
import mlc.model
from mlc.runtime.interpreter import STATES

D, HEADS, MAX = 16, 2, 8
HD = D // HEADS
CACHE = (1, HEADS, MAX, HD)

# One fp16 rounding step (half an ulp) is at most 2**-11 relative; two computations of the same
# fp32 value that differ in their last bits can round to neighbouring fp16 values: one ulp, 2**-10.
FP16_ULP = 2.0**-10


class KVAttention(torch.nn.Module):
    """One attention layer; ``k_cache``/``v_cache`` hold the keys and values of past positions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv = torch.nn.Linear(D, 3 * D)
        self.out = torch.nn.Linear(D, D)
        self.register_buffer("k_cache", torch.zeros(CACHE, dtype=torch.float16))
        self.register_buffer("v_cache", torch.zeros(CACHE, dtype=torch.float16))

    def attend(self, x, start, end, mask, seen):
        """Write this step's k/v at [start, end), attend over the first ``seen`` cache positions."""
        length = x.shape[1]
        q, k, v = self.qkv(x).view(1, length, 3, HEADS, HD).permute(2, 0, 3, 1, 4).unbind(0)
        self.k_cache[:, :, start:end] = k.half()
        self.v_cache[:, :, start:end] = v.half()
        keys = self.k_cache[:, :, :seen].float()
        values = self.v_cache[:, :, :seen].float()
        weights = torch.softmax(q @ keys.transpose(-1, -2) / HD**0.5 + mask, dim=-1)
        return self.out((weights @ values).transpose(1, 2).reshape(1, length, D))


class ShapePositions(KVAttention):
    """Positions from the input shapes (coremltools' stateful-LLM recipe): x holds the L new
    tokens and the mask (1, 1, L, end) covers the end = past + L positions attended."""

    def forward(self, x, mask):
        end = mask.shape[-1]
        return self.attend(x, end - x.shape[1], end, mask, end)


class TensorPosition(KVAttention):
    """One token per step at position ``pos`` (an int tensor input), attending over the whole
    cache with a mask that hides the positions not written yet."""

    def forward(self, x, pos, mask):
        return self.attend(x, pos, pos + 1, mask, MAX)


def causal_mask(past, length, end=None):
    """(1, 1, length, end) additive mask: query i (at position past + i) sees positions <= past + i."""
    end = past + length if end is None else end
    rows = past + np.arange(length)[:, None]
    return np.where(np.arange(end)[None, :] <= rows, 0.0, -1e4).astype(np.float32)[None, None]


def convert(ct, module, example, inputs):
    traced = torch.jit.trace(module.eval(), example, check_trace=False)  # it mutates its buffers
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=CACHE, dtype=np.float16), name=n) for n in ("k_cache", "v_cache")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ct.convert(
            traced,
            inputs=inputs,
            outputs=[ct.TensorType(name="y")],
            states=states,
            minimum_deployment_target=ct.target.iOS18,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
        )


@pytest.fixture(scope="module")
def shape_positions(ct):
    length, end = ct.RangeDim(1, MAX, default=2), ct.RangeDim(1, MAX, default=2)
    example = (torch.rand(1, 2, D), torch.zeros(1, 1, 2, 2))
    inputs = [ct.TensorType(name="x", shape=(1, length, D)), ct.TensorType(name="mask", shape=(1, 1, length, end))]
    return convert(ct, ShapePositions(), example, inputs)


@pytest.fixture(scope="module")
def tensor_position(ct):
    example = (torch.rand(1, 1, D), torch.tensor(1, dtype=torch.int32), torch.zeros(1, 1, 1, MAX))
    inputs = [
        ct.TensorType(name="x", shape=(1, 1, D)),
        ct.TensorType(name="pos", shape=(1,), dtype=np.int32),
        ct.TensorType(name="mask", shape=(1, 1, 1, MAX)),
    ]
    return convert(ct, TensorPosition(), example, inputs)


def reference(module, *args):
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in args)).numpy()


def assert_close(actual, expected, rtol):
    """Within ``rtol`` of the output's scale."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected))))


def assert_states(state, module):
    for name in ("k_cache", "v_cache"):
        ours, theirs = state.read_state(name), getattr(module, name).numpy()
        assert ours.dtype == np.float16 and ours.shape == CACHE
        np.testing.assert_allclose(ours.astype(np.float32), theirs.astype(np.float32), rtol=FP16_ULP, atol=2.0**-24)


# Both precisions round what a step writes into the fp16 state before it attends over it, as
# torch's fp16 buffer does ("auto" computes in fp32 on CPU but stores states as fp16, as Core ML
# does): what remains is fp32 summation order (worst seen: 3e-7 of the scale).
PRECISIONS = {"float16": 2e-6, "auto": 2e-6}


@pytest.mark.parametrize("compute_precision", list(PRECISIONS))
def test_kv_cache_steps_match_torch(shape_positions, compute_precision):
    """Prefill 3 tokens then decode one by one, with two independent states interleaved."""
    model = mlc.load(shape_positions, compute_precision=compute_precision)
    rng = np.random.default_rng(0)
    refs, states, past = [ShapePositions().eval() for _ in range(2)], [model.make_state() for _ in range(2)], 0
    for length in (3, 1, 2, 1):
        for ref, state in zip(refs, states):
            x = rng.standard_normal((1, length, D)).astype(np.float32)
            mask = causal_mask(past, length)
            out = model.predict({"x": x, "mask": mask}, state=state)
            assert list(out) == ["y"] and out["y"].shape == (1, length, D) and out["y"].dtype == np.float32
            assert_close(out["y"], reference(ref, x, mask), PRECISIONS[compute_precision])
            assert_states(state, ref)
        past += length
    # the unwritten tail of the cache is still zero
    assert not states[0].read_state("k_cache")[:, :, past:].any()


def test_write_state_then_predict(shape_positions):
    """A cache written from outside (a restored session) is what the next step attends over."""
    model = mlc.load(shape_positions, compute_precision="float16")
    rng = np.random.default_rng(1)
    ref, state, past = ShapePositions().eval(), model.make_state(), 5
    for name in ("k_cache", "v_cache"):
        cache = np.zeros(CACHE, np.float16)
        cache[:, :, :past] = rng.standard_normal((1, HEADS, past, HD))
        state.write_state(name, cache)
        getattr(ref, name).copy_(torch.from_numpy(cache))
    x = rng.standard_normal((1, 2, D)).astype(np.float32)
    mask = causal_mask(past, 2)
    out = model.predict({"x": x, "mask": mask}, state=state)["y"]
    assert_close(out, reference(ref, x, mask), PRECISIONS["float16"])
    assert_states(state, ref)
    # an fp32 array written to the fp16 state is rounded to it
    state.write_state("k_cache", np.full(CACHE, 1 / 3, np.float32))
    np.testing.assert_array_equal(state.read_state("k_cache"), np.full(CACHE, 1 / 3, np.float16))


def test_program_uses_state_ops_and_slice_update(shape_positions, tensor_position):
    for mlmodel in (shape_positions, tensor_position):
        exe = mlc.describe(mlmodel)
        assert exe.unsupported == {}
        for op in ("read_state", "write_state", "slice_update"):  # coreml_update_state is saved as write_state + read_state
            assert exe.op_histogram.get(op, 0) >= 2, (op, exe.op_histogram)  # one per cache, at least


def test_position_input_matches_torch(tensor_position):
    """The write position is a model input, so ``slice_update``'s begin is computed at run time."""
    model = mlc.load(tensor_position, compute_precision="float16")
    rng = np.random.default_rng(2)
    ref, state = TensorPosition().eval(), model.make_state()
    for pos in range(4):
        x = rng.standard_normal((1, 1, D)).astype(np.float32)
        mask = causal_mask(pos, 1, end=MAX)
        out = model.predict({"x": x, "pos": np.array([pos], np.int32), "mask": mask}, state=state)["y"]
        with torch.no_grad():
            expected = ref(torch.from_numpy(x), torch.tensor(pos, dtype=torch.int32), torch.from_numpy(mask)).numpy()
        assert_close(out, expected, PRECISIONS["float16"])
        assert_states(state, ref)


def test_jax_function_threads_states(shape_positions):
    """The pure function takes the states as inputs and returns their new values under STATES."""
    model = mlc.load(shape_positions, compute_precision="float16")
    fn, params = model.jax_function()
    step = jax.jit(fn)
    rng = np.random.default_rng(3)
    ref, past = ShapePositions().eval(), 0
    states = {n: np.zeros(CACHE, np.float16) for n in ("k_cache", "v_cache")}
    for length in (2, 1):
        x = rng.standard_normal((1, length, D)).astype(np.float32)
        mask = causal_mask(past, length)
        out = step(params, {"x": x, "mask": mask, **states})
        states = {n: np.asarray(v) for n, v in out[STATES].items()}
        assert_close(np.asarray(out["y"]), reference(ref, x, mask), PRECISIONS["float16"])
        for name, value in states.items():
            np.testing.assert_allclose(value.astype(np.float32), getattr(ref, name).numpy().astype(np.float32), rtol=FP16_ULP, atol=2.0**-24)
        past += length
