"""Winograd F(2x2, 3x3) convolutions (mlc.kernels.winograd) and the rule that picks them
(mlc.kernels.convolution.algorithm): against torch in float64, the rule's choices, the weight
transform hoisted, and whole models through mlc.load with the rule forced on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.kernels import convolution, winograd
from mlc.runtime import host_jaxpr, target
from mlc.runtime.hoist import HoistedFunction
from mlc.testing.convolutions import TOL, pick, torch_conv

RNG = np.random.default_rng(22)


def _rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _winograd(x, w, padding, m=2):
    return np.asarray(winograd.conv(jnp.asarray(x), winograd.transform_weight(jnp.asarray(w), m), padding=padding, m=m))


@pytest.mark.parametrize(
    "n, c_in, c_out, h, w, padding",
    [
        (1, 3, 5, 8, 8, [(1, 1), (1, 1)]),  # same, even
        (2, 4, 6, 9, 7, [(1, 1), (1, 1)]),  # same, odd sizes: the last tiles are padded
        (1, 4, 4, 9, 10, [(0, 0), (0, 0)]),  # valid
        (3, 2, 3, 5, 6, [(0, 2), (2, 1)]),  # custom, asymmetric
        (1, 3, 2, 3, 3, [(0, 0), (0, 0)]),  # one output pixel
        (1, 2, 2, 1, 1, [(1, 1), (1, 1)]),  # one input pixel, all padding
        (1, 3, 4, 8, 9, [(-1, 1), (1, -2)]),  # negative padding crops
        (2, 64, 32, 13, 14, [(2, 2), (0, 3)]),  # more padding than 'same'
    ],
)
def test_winograd_matches_torch(n, c_in, c_out, h, w, padding):
    x, k = _rand(n, c_in, h, w), _rand(c_out, c_in, 3, 3, scale=1 / np.sqrt(9 * c_in))  # outputs of order 1
    ref = torch_conv(x, k, padding=padding)
    out = _winograd(x, k, padding)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, **TOL)


@pytest.mark.parametrize("c, size", [(64, 56), (128, 28), (256, 14), (512, 7)])
def test_winograd_error_on_resnet_layers(c, size):
    """ResNet-18's 3x3 layers (He-scaled weights): F(2x2, 3x3) stays within 1e-6 of the largest
    output (measured 3.6e-7 to 5.7e-7; float32 torch itself is off by up to 2.4e-6 there)."""
    x, k = _rand(1, c, size, size), _rand(c, c, 3, 3, scale=np.sqrt(2 / (9 * c)))
    ref = torch_conv(x, k, padding=[(1, 1), (1, 1)])
    out = _winograd(x, k, [(1, 1), (1, 1)])
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-6
    np.testing.assert_allclose(out, ref, **TOL)


def test_f4x4_is_correct_but_less_precise():
    """F(4x4, 3x3) (kept in the module, not used): right up to float rounding, which is 10-20x
    larger than F(2x2, 3x3)'s and breaks the float32 tolerance at 256 channels."""
    x, k = _rand(1, 8, 11, 10), _rand(6, 8, 3, 3)
    np.testing.assert_allclose(_winograd(x, k, [(1, 1), (0, 1)], m=4), torch_conv(x, k, padding=[(1, 1), (0, 1)]), rtol=1e-4, atol=1e-4)


def test_weight_transform_is_numpy_evaluable():
    """Slices, scalar products and adds only: the hoisted part runs in numpy (host_jaxpr)."""
    closed = jax.make_jaxpr(winograd.transform_weight)(jnp.ones((4, 3, 3, 3)))
    assert host_jaxpr.supported(closed.jaxpr)
    w = _rand(4, 3, 3, 3)
    host = host_jaxpr.evaluate(closed.jaxpr, list(closed.consts), [w])[0]
    np.testing.assert_allclose(host, np.asarray(winograd.transform_weight(jnp.asarray(w))), rtol=1e-6, atol=1e-7)
    assert host.shape == (16, 3, 4)


def test_gradients_match_the_direct_convolution():
    """Training (mlc.update, finetune) differentiates through whichever algorithm was picked."""
    x, k = jnp.asarray(_rand(2, 4, 6, 7)), jnp.asarray(_rand(5, 4, 3, 3))

    def loss(algorithm, x, k):
        def f(x, k):
            y = convolution.conv(x, k, strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1), groups=1)
            return jnp.sum(jnp.sin(y))

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(convolution.ALGORITHM_VARIABLE, algorithm)
            return jax.grad(f, argnums=(0, 1))(x, k)

    for a, b in zip(loss("winograd", x, k), loss("direct", x, k)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- the rule -------------------------------------------------------------------------------------
RESNET18 = [(64, 56), (128, 28), (256, 14), (512, 7)]


def test_rule_on_resnet18_at_batch_1_and_32(monkeypatch):
    """As documented in winograd_pays and bench/experiments.md: at batch 1 every 3x3 stride-1
    layer, the 7x7 ones' 16 tiles included; at batch 32 (predict_batch: one example traced under
    a vmap of 32) the 14x14 and 7x7 ones."""
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    with target.lowering_for("cpu"):
        assert [pick(1, c, c, s) for c, s in RESNET18] == ["winograd", "winograd", "winograd", "winograd"]
        assert [pick(32, c, c, s) for c, s in RESNET18] == ["direct", "direct", "winograd", "winograd"]
    with target.lowering_for("cpu", vmapped_batch=32):
        assert [pick(1, c, c, s) for c, s in RESNET18] == ["direct", "direct", "winograd", "winograd"]


def test_rule_thresholds():
    assert not convolution.winograd_pays(1, 32, 64, 28, 28)  # too few channels
    assert not convolution.winograd_pays(1, 64, 64, 5, 5)  # 9 tiles: the weights dominate (not measured to pay)
    assert convolution.winograd_pays(1, 512, 512, 7, 7)  # 16 tiles
    assert convolution.winograd_pays(2, 512, 512, 7, 7)  # 32 tiles
    assert convolution.winograd_pays(1, 128, 128, 80, 80)  # 1,600 tiles
    assert not convolution.winograd_pays(1, 128, 128, 81, 81)  # more: the transformed input leaves the cache
    assert convolution.winograd_pays(1, 64, 64, 55, 57)  # odd sizes count their padded tiles


def test_ineligible_convolutions_stay_direct(monkeypatch):
    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")
    with target.lowering_for("cpu"):
        assert pick(1, 64, 64, 14) == "winograd"
        assert pick(1, 64, 64, 14, strides=(2, 2)) == "direct"
        assert pick(1, 64, 64, 14, dilations=(2, 2)) == "direct"
        assert pick(1, 64, 64, 14, groups=2) == "direct"
        assert pick(1, 64, 64, 14, kernel=(5, 5), padding=((1, 1), (1, 1))) == "direct"
        assert pick(1, 64, 64, 14, kernel=(1, 1), padding=((0, 0), (0, 0))) == "direct"
        assert pick(1, 64, 64, 14, dtype=jnp.float16) == "direct"  # fp16 compute keeps XLA's convolution
        assert pick(1, 64, 64, 2, padding=((0, 0), (0, 0))) == "direct"  # no output
        x1 = jax.ShapeDtypeStruct((1, 8, 14), jnp.float32)
        assert convolution.algorithm(x1, jax.ShapeDtypeStruct((8, 8, 3), jnp.float32), strides=(1,), padding=[(1, 1)], dilations=(1,), groups=1) == "direct"


def test_gpu_keeps_xla_convolution_unless_forced(monkeypatch):
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    with target.lowering_for("gpu"):
        assert pick(1, 256, 256, 14) == "direct"
        monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")
        assert pick(1, 256, 256, 14) == "winograd"


def test_the_variable_switches_the_rule_off_and_is_checked(monkeypatch):
    with target.lowering_for("cpu"):
        monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "direct")
        assert pick(1, 256, 256, 14) == "direct"
        monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, " AUTO ")
        assert pick(1, 256, 256, 14) == "winograd"
        monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "fft")
        with pytest.raises(ValueError, match="MLC_CONV_ALGORITHM"):
            pick(1, 256, 256, 14)


def test_target_defaults_outside_a_runner():
    assert target.platform() == jax.default_backend()
    assert target.vmapped_batch() == 1
    with target.lowering_for("gpu", vmapped_batch=8):
        assert (target.platform(), target.vmapped_batch()) == ("gpu", 8)
    assert (target.platform(), target.vmapped_batch()) == (jax.default_backend(), 1)


# -- hoisting -------------------------------------------------------------------------------------
def test_weight_transform_is_hoisted(monkeypatch):
    """The weight-only part computes U = G g G^T (16, C_in, C_out) once; the per-call part
    takes U as it is and never reads the kernel."""
    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")

    def fn(params, inputs):
        y = convolution.conv(inputs["x"], params["w"], strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1), groups=1)
        return {"y": y}

    w, x = _rand(6, 4, 3, 3), _rand(1, 4, 8, 8)
    f = HoistedFunction(fn, host_prepare=True)
    out = f({"w": jnp.asarray(w)}, {"x": x})["y"]
    np.testing.assert_allclose(out, torch_conv(x, w, padding=[(1, 1), (1, 1)]), **TOL)
    assert f.hoisted({"x": x})
    (split,) = [s for s in f._splits.values() if s]
    shapes = [v.aval.shape for v in split.known.jaxpr.outvars]
    assert (16, 4, 6) in shapes and (6, 4, 3, 3) not in shapes
    assert all(np.prod(s) <= 4 for s in shapes if s != (16, 4, 6))  # besides: the transforms' coefficient columns
    assert host_jaxpr.supported(split.known.jaxpr)  # computed in numpy: no XLA compile at load
    names = {e.primitive.name for e in split.known.jaxpr.eqns}
    assert {"slice", "mul", "add"} <= names


def test_coefficient_constants_are_shared_between_convolutions(monkeypatch):
    """However many convolutions a program has, it holds the transforms' constants once."""
    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")

    def fn(params, x):
        for w in params:
            x = convolution.conv(x, w, strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1), groups=1)
        return x

    one = jax.make_jaxpr(fn)([jnp.ones((4, 4, 3, 3))], jnp.ones((1, 4, 8, 8)))
    three = jax.make_jaxpr(fn)([jnp.ones((4, 4, 3, 3))] * 3, jnp.ones((1, 4, 8, 8)))
    assert len(three.consts) == len(one.consts) <= 16  # a column of B^T or G per transform step


# -- through mlc.load -----------------------------------------------------------------------------
def _two_convs(x):
    from coremltools.converters.mil import Builder as mb

    h = mb.conv(x=x, weight=W1, bias=B1, pad_type="same")
    h = mb.relu(x=h)
    return mb.conv(x=h, weight=W2, pad_type="custom", pad=[0, 1, 2, 0])


W1, B1, W2 = _rand(8, 3, 3, 3, scale=0.2), _rand(8), _rand(5, 8, 3, 3, scale=0.1)


def _two_convs_torch(x):
    h = torch_conv(x, W1, padding=[(1, 1), (1, 1)]) + B1.reshape(1, -1, 1, 1)
    return torch_conv(np.maximum(h, 0).astype(np.float32), W2, padding=[(0, 1), (2, 0)])


def test_mil_model_with_the_rule_forced_on(monkeypatch, convolution_spy):
    monkeypatch.setenv("MLC_BATCH_SPLIT", "1")  # the whole batch in one vmapped call, as asserted below
    monkeypatch.setenv("MLC_BATCH_CHUNK", "0")  # not in chunks: no trace of one example for the chunk rule either
    from mlc.testing.mil_program import mil_model

    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")
    model = mil_model(_two_convs, {"x": ((1, 3, 11, 10), "fp32")})
    x = _rand(1, 3, 11, 10)
    out = next(iter(model.predict({"x": x}).values()))
    np.testing.assert_allclose(out, _two_convs_torch(x), **TOL)
    assert [s[0] for s in convolution_spy] == ["winograd", "winograd"]
    assert {s[2] for s in convolution_spy} == {"cpu"}  # the runner traces for its device
    convolution_spy.clear()
    xs = _rand(4, 1, 3, 11, 10)
    batched = next(iter(model.predict_batch({"x": xs}).values()))
    np.testing.assert_allclose(batched, np.stack([_two_convs_torch(v) for v in xs]), **TOL)
    assert [(s[0], s[3]) for s in convolution_spy] == [("winograd", 4), ("winograd", 4)]  # one example traced, vmapped over 4


def test_predict_batch_tells_the_rule_its_batch(monkeypatch, convolution_spy):
    """Default rule: a 5x5x64 convolution has 9 tiles per example (direct); predict_batch of
    4 examples gives it 36 (Winograd)."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_model

    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    monkeypatch.setenv("MLC_BATCH_CHUNK", "0")  # no trace of one example for the chunk rule
    w = _rand(64, 64, 3, 3, scale=0.05)
    model = mil_model(lambda x: mb.conv(x=x, weight=w, pad_type="same"), {"x": ((1, 64, 5, 5), "fp32")})
    x = _rand(4, 1, 64, 5, 5)
    single = next(iter(model.predict({"x": x[0]}).values()))
    assert [s[0] for s in convolution_spy] == ["direct"]
    batched = next(iter(model.predict_batch({"x": x}).values()))
    assert [s[0] for s in convolution_spy] == ["direct", "winograd"]
    np.testing.assert_allclose(batched[0], single, **TOL)
    np.testing.assert_allclose(batched[0], torch_conv(x[0], w, padding=[(1, 1), (1, 1)]), **TOL)


def test_neuralnetwork_model_with_the_rule_forced_on(monkeypatch, convolution_spy):
    from mlc.testing.nn_specs import network, predict

    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")
    w, b = _rand(6, 4, 3, 3, scale=0.15), _rand(6)
    builder = network({"x": (4, 9, 7)}, ["y"], exact=False)
    builder.add_convolution(
        "conv", kernel_channels=4, output_channels=6, height=3, width=3, stride_height=1, stride_width=1,
        border_mode="same", groups=1, W=np.transpose(w, (2, 3, 1, 0)), b=b, has_bias=True, input_name="x", output_name="y",
    )  # fmt: skip
    x = _rand(4, 9, 7)
    out = predict(builder, {"x": x})["y"]
    ref = torch_conv(x[None], w, padding=[(1, 1), (1, 1)])[0] + b.reshape(-1, 1, 1)
    np.testing.assert_allclose(np.asarray(out).reshape(ref.shape), ref, **TOL)
    assert [s[0] for s in convolution_spy] == ["winograd"]
