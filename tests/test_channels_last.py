"""mlc.kernels.channels_last: a spatial pad or pooling of (N, C, H, W) computed channels-last on
CPU gives jnp.pad's and lax.reduce_window's values bit for bit, and a padding layer
(NeuralNetwork) or pad op (ML Program) in front of a depthwise convolution, or a max pool
after a convolution, still computes what torch does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

import mlc
from jax import lax

from mlc.kernels.channels_last import spatial_pad, spatial_reduce_window
from mlc.runtime import target
from mlc.testing.mil_program import mil_model
from mlc.testing.nn_specs import network

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pairs", [((0, 0), (0, 0), (0, 1), (0, 1)), ((0, 0), (0, 0), (2, 1), (1, 3))])
def test_channels_last_pad_is_jnp_pad_bit_for_bit(mode, pairs):
    x = RNG.standard_normal((2, 5, 6, 7)).astype(np.float32)
    args = {"constant_values": np.float32(-1.5)} if mode == "constant" else {}
    with target.lowering_for("cpu"):
        got = jax.jit(lambda v: spatial_pad(v, pairs, mode=mode, **args))(x)
    np.testing.assert_array_equal(np.asarray(got), np.pad(x, pairs, mode=mode, **args))


def _primitives(fn, x) -> list[str]:
    return [e.primitive.name for e in jax.make_jaxpr(fn)(x).jaxpr.eqns]


def test_only_a_cpu_rank_4_spatial_pad_moves_the_channels_last():
    x4, x3 = jnp.zeros((1, 3, 4, 4)), jnp.zeros((3, 4, 4))
    spatial = ((0, 0), (0, 0), (1, 1), (1, 1))
    with target.lowering_for("cpu"):
        steps = _primitives(lambda v: spatial_pad(v, spatial), x4)
        assert steps[0] == steps[-1] == "transpose" and steps.count("transpose") == 2  # jnp.pad's own jit between
        assert "transpose" not in _primitives(lambda v: spatial_pad(v, ((0, 0), (1, 0), (1, 1), (1, 1))), x4)  # pads C too
        assert "transpose" not in _primitives(lambda v: spatial_pad(v, ((0, 0), (1, 1), (1, 1))), x3)
    with target.lowering_for("gpu"):
        assert "transpose" not in _primitives(lambda v: spatial_pad(v, spatial), x4)


def _depthwise_reference(x, w, pads, stride):
    top, bottom, left, right = pads
    xp = F.pad(torch.from_numpy(x), (left, right, top, bottom))
    return F.conv2d(xp, torch.from_numpy(w), stride=stride, groups=x.shape[1]).numpy()


@pytest.mark.parametrize("stride", [1, 2])
def test_padding_layer_then_depthwise_against_torch(stride):
    """EfficientNet-Lite's pattern (TensorFlow's asymmetric "SAME"): a padding layer, then a
    depthwise convolution without padding, then a 1x1 convolution."""
    c = 24
    x = RNG.standard_normal((1, c, 15, 15)).astype(np.float32)
    w = RNG.standard_normal((c, 1, 3, 3)).astype(np.float32)
    w1 = RNG.standard_normal((8, c, 1, 1)).astype(np.float32)
    pads = (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)
    b = network({"x": x.shape}, ["out"], exact=True)
    b.add_padding("pad", top=pads[0], bottom=pads[1], left=pads[2], right=pads[3], value=0.0, input_name="x", output_name="padded")
    b.add_convolution(name="dw", kernel_channels=1, output_channels=c, height=3, width=3, stride_height=stride, stride_width=stride,
                      border_mode="valid", groups=c, W=w.transpose(2, 3, 1, 0), b=None, has_bias=False, input_name="padded", output_name="dw")
    b.add_convolution(name="pw", kernel_channels=c, output_channels=8, height=1, width=1, stride_height=1, stride_width=1,
                      border_mode="valid", groups=1, W=w1.transpose(2, 3, 1, 0), b=None, has_bias=False, input_name="dw", output_name="out")
    want = F.conv2d(torch.from_numpy(_depthwise_reference(x, w, pads, stride)), torch.from_numpy(w1)).numpy()
    model = mlc.load(b.spec)
    np.testing.assert_allclose(model.predict({"x": x})["out"], want, rtol=1e-5, atol=1e-5)
    batch = np.stack([x, 2 * x])
    got = model.predict_batch({"x": batch})["out"]
    np.testing.assert_allclose(got[1], 2 * want, rtol=1e-5, atol=2e-5)


def test_mil_pad_then_depthwise_against_torch():
    c = 16
    x = RNG.standard_normal((1, c, 9, 9)).astype(np.float32)
    w = RNG.standard_normal((c, 1, 3, 3)).astype(np.float32)

    def build(x):
        padded = mb.pad(x=x, pad=np.array([0, 1, 0, 1], np.int32), mode="constant", constant_val=0.0)
        return mb.conv(x=padded, weight=w, strides=[2, 2], pad_type="valid", groups=c, name="out")

    model = mil_model(build, {"x": x.shape})
    np.testing.assert_allclose(model.predict({"x": x})["out"], _depthwise_reference(x, w, (0, 1, 0, 1), 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reducer,init", [(lax.max, -np.inf), (lax.add, 0.0)])
@pytest.mark.parametrize("window,strides,padding", [((3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 3), (1, 2), ((0, 1), (2, 0)))])
def test_channels_last_pooling_is_reduce_window_bit_for_bit(reducer, init, window, strides, padding):
    x = RNG.standard_normal((2, 5, 9, 8)).astype(np.float32)
    args = (np.float32(init), reducer, (1, 1) + window, (1, 1) + strides, ((0, 0), (0, 0)) + padding)
    with target.lowering_for("cpu"):
        got = jax.jit(lambda v: spatial_reduce_window(v, *args))(x)
        assert _primitives(lambda v: spatial_reduce_window(v, *args), jnp.asarray(x)).count("transpose") == 2
    np.testing.assert_array_equal(np.asarray(got), np.asarray(lax.reduce_window(x, *args)))
    with target.lowering_for("gpu"):  # elsewhere: the op as written
        assert "transpose" not in _primitives(lambda v: spatial_reduce_window(v, *args), jnp.asarray(x))
    over_channels = (np.float32(init), reducer, (1, 2, 1, 1), (1, 1, 1, 1), ((0, 0),) * 4)
    with target.lowering_for("cpu"):
        assert "transpose" not in _primitives(lambda v: spatial_reduce_window(v, *over_channels), jnp.asarray(x))


def test_convolution_relu_max_pool_against_torch():
    """ResNet's stem: a strided convolution, ReLU, a 3x3 stride-2 max pool."""
    x = RNG.standard_normal((1, 3, 20, 20)).astype(np.float32)
    w = RNG.standard_normal((8, 3, 7, 7)).astype(np.float32) * 0.2

    def build(x):
        y = mb.relu(x=mb.conv(x=x, weight=w, strides=[2, 2], pad_type="custom", pad=[3, 3, 3, 3]))
        return mb.max_pool(x=y, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], name="out")

    model = mil_model(build, {"x": x.shape})
    t = torch.from_numpy
    want = F.max_pool2d(F.relu(F.conv2d(t(x), t(w), stride=2, padding=3)), 3, stride=2, padding=1).numpy()
    np.testing.assert_allclose(model.predict({"x": x})["out"], want, rtol=1e-5, atol=1e-5)
    got = model.predict_batch({"x": np.stack([x, -x])})["out"]
    want_neg = F.max_pool2d(F.relu(F.conv2d(t(-x), t(w), stride=2, padding=3)), 3, stride=2, padding=1).numpy()
    np.testing.assert_allclose(got[1], want_neg, rtol=1e-5, atol=1e-5)
