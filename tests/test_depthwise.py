"""Depthwise and 1x1 convolutions without XLA's convolution (mlc.kernels.depthwise), and the
rule that picks them (mlc.kernels.convolution.algorithm): against torch in float64, under vmap,
in fp16, the rule's choices, and whole models through mlc.load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.kernels import convolution, depthwise
from mlc.runtime import target
from mlc.runtime.hoist import HoistedFunction
from mlc.testing.convolutions import assert_close, pick, torch_conv

RNG = np.random.default_rng(2222)


def _rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


CASES = [
    # (c, multiplier, size, kernel, strides, padding, dilations)
    (8, 1, (9, 9), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1)),  # same, stride 1 (MobileNet)
    (8, 1, (9, 10), (3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1)),  # stride 2, odd/even sizes
    (8, 1, (9, 9), (3, 3), (2, 2), [(0, 1), (0, 1)], (1, 1)),  # TF-style same (asymmetric)
    (5, 1, (8, 7), (3, 3), (1, 1), [(0, 0), (0, 0)], (1, 1)),  # valid
    (6, 1, (11, 11), (3, 3), (1, 1), [(2, 2), (2, 2)], (2, 2)),  # dilated
    (4, 1, (10, 10), (5, 5), (2, 1), [(2, 2), (1, 3)], (1, 1)),  # 5x5 (EfficientNet), mixed strides
    (4, 2, (7, 7), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1)),  # channel multiplier 2
    (3, 3, (8, 6), (3, 2), (2, 1), [(1, 0), (0, 1)], (1, 2)),  # multiplier 3, rectangular kernel
    (4, 1, (9, 9), (3, 3), (1, 1), [(-1, 1), (1, -2)], (1, 1)),  # negative padding crops
]


@pytest.mark.parametrize("layout", depthwise.LAYOUTS)
@pytest.mark.parametrize("c, multiplier, size, kernel, strides, padding, dilations", CASES)
def test_depthwise_matches_torch(layout, c, multiplier, size, kernel, strides, padding, dilations):
    x, w = _rand(2, c, *size), _rand(c * multiplier, 1, *kernel, scale=0.3)
    expected = torch_conv(x, w, strides=strides, padding=padding, dilations=dilations, groups=c)
    out = jax.jit(lambda x, w: depthwise.conv(x, w, strides=strides, padding=padding, dilations=dilations, layout=layout))(x, w)
    assert out.shape == expected.shape and out.dtype == jnp.float32
    assert_close(out, expected)


@pytest.mark.parametrize("layout", depthwise.LAYOUTS)
@pytest.mark.parametrize("spatial", [1, 3])
def test_depthwise_other_ranks(layout, spatial):
    x, w = _rand(2, 4, *([7] * spatial)), _rand(8, 1, *([3] * spatial), scale=0.3)
    kw = dict(strides=(2,) * spatial, padding=[(1, 1)] * spatial, dilations=(1,) * spatial)
    assert_close(depthwise.conv(x, w, **kw, layout=layout), torch_conv(x, w, **kw, groups=4))


@pytest.mark.parametrize("layout", depthwise.LAYOUTS)
def test_depthwise_fp16(layout):
    """fp16 activations and weights: computed and returned in fp16, within fp16 rounding."""
    x, w = _rand(1, 16, 12, 12), _rand(16, 1, 3, 3, scale=0.3)
    kw = dict(strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1))
    out = depthwise.conv(jnp.asarray(x, jnp.float16), jnp.asarray(w, jnp.float16), **kw, layout=layout)
    assert out.dtype == jnp.float16
    expected = torch_conv(x.astype(np.float16).astype(np.float32), w.astype(np.float16).astype(np.float32), **kw, groups=16)
    assert_close(out, expected, dict(rtol=3e-3, atol=3e-3))
    # fp32 activations with fp16 weights (a weight-compressed model computed in fp32 on CPU)
    out32 = depthwise.conv(jnp.asarray(x), jnp.asarray(w, jnp.float16), **kw, layout=layout)
    assert out32.dtype == jnp.float32


@pytest.mark.parametrize("layout", depthwise.LAYOUTS)
def test_depthwise_under_vmap(layout):
    """predict_batch's form: one example of batch 1, vmapped over a leading axis."""
    xs, w = _rand(5, 1, 6, 9, 9), _rand(12, 1, 3, 3, scale=0.3)
    kw = dict(strides=(2, 2), padding=[(1, 1), (1, 1)], dilations=(1, 1))
    out = jax.jit(jax.vmap(lambda x: depthwise.conv(x, jnp.asarray(w), **kw, layout=layout)))(xs)
    for i in range(len(xs)):
        assert_close(out[i], torch_conv(xs[i], w, **kw, groups=6))


@pytest.mark.parametrize("layout", depthwise.LAYOUTS)
@pytest.mark.parametrize("n, spatial", [(1, (7, 7)), (3, (5, 6)), (2, (9,))])
def test_pointwise_matches_torch(layout, n, spatial):
    x, w = _rand(n, 16, *spatial), _rand(8, 16, *([1] * len(spatial)), scale=0.25)
    out = jax.jit(lambda x, w: depthwise.pointwise(x, w, layout=layout))(x, w)
    expected = torch_conv(x, w)
    assert out.shape == expected.shape
    assert_close(out, expected)
    xs = _rand(4, 1, 16, *spatial)
    batched = jax.vmap(lambda x: depthwise.pointwise(x, jnp.asarray(w), layout=layout))(xs)
    for i in range(len(xs)):
        assert_close(batched[i], torch_conv(xs[i], w))


def test_pointwise_fp16():
    x, w = _rand(1, 32, 6, 6), _rand(16, 32, 1, 1, scale=0.2)
    out = depthwise.pointwise(jnp.asarray(x, jnp.float16), jnp.asarray(w, jnp.float16), layout="nhwc")
    assert out.dtype == jnp.float16
    expected = torch_conv(x.astype(np.float16).astype(np.float32), w.astype(np.float16).astype(np.float32))
    assert_close(out, expected, dict(rtol=5e-3, atol=5e-3))


def test_gradients_match_xla_convolution():
    """Training differentiates through the depthwise loop and the product as through XLA's convolution."""
    x, wd, wp = jnp.asarray(_rand(2, 4, 7, 7)), jnp.asarray(_rand(8, 1, 3, 3)), jnp.asarray(_rand(5, 8, 1, 1))

    def ours(x, wd, wp):
        h = depthwise.conv(x, wd, strides=(2, 2), padding=[(1, 1), (1, 1)], dilations=(1, 1), layout="nhwc")
        return jnp.sum(jnp.sin(depthwise.pointwise(h, wp, layout="nhwc")))

    def xla(x, wd, wp):
        dn = ("NCHW", "OIHW", "NCHW")
        h = jax.lax.conv_general_dilated(x, wd, (2, 2), [(1, 1), (1, 1)], dimension_numbers=dn, feature_group_count=4)
        return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(h, wp, (1, 1), [(0, 0), (0, 0)], dimension_numbers=dn)))

    for a, b in zip(jax.grad(ours, argnums=(0, 1, 2))(x, wd, wp), jax.grad(xla, argnums=(0, 1, 2))(x, wd, wp)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- the rule -------------------------------------------------------------------------------------

# MobileNetV2 at 224x224: (channels, size, stride) of its 17 depthwise layers' distinct shapes,
# and (C_in, C_out, size) of some of its 1x1 layers
MOBILENETV2_DEPTHWISE = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (192, 28, 2), (576, 14, 1), (960, 7, 1)]
MOBILENETV2_POINTWISE = [(32, 16, 112), (16, 96, 112), (144, 24, 56), (96, 576, 14), (960, 320, 7), (320, 1280, 7)]


def test_rule_on_mobilenetv2(monkeypatch):
    """Every depthwise layer is the loop, every 1x1 layer a product, at batch 1 and under
    predict_batch's vmap of 32 alike (both measured faster at both batch sizes)."""
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    for batch in (1, 32):
        with target.lowering_for("cpu", vmapped_batch=batch):
            assert {pick(1, c, c, s, strides=(st, st), groups=c) for c, s, st in MOBILENETV2_DEPTHWISE} == {"depthwise"}
            assert {pick(1, ci, co, s, kernel=(1, 1)) for ci, co, s in MOBILENETV2_POINTWISE} == {"pointwise"}
            # the stem (3 channels in): a patch matrix at batch 1, too large for the cache at 32
            assert pick(1, 3, 32, 224, strides=(2, 2)) == ("patches" if batch == 1 else "direct")
    with target.lowering_for("cpu"):
        assert pick(32, 320, 1280, 7, kernel=(1, 1)) == "pointwise"  # a batch in the program itself


def test_depthwise_everywhere_and_in_every_mode(monkeypatch):
    for mode in ("auto", "direct", "winograd"):
        monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, mode)
        for platform in ("cpu", "gpu"):
            with target.lowering_for(platform):
                assert pick(1, 64, 64, 14, groups=64) == "depthwise"
                assert pick(1, 64, 128, 14, groups=64) == "depthwise"  # channel multiplier 2
                assert pick(1, 64, 64, 14, groups=64, dtype=jnp.float16) == "depthwise"
                assert pick(1, 64, 64, 14, groups=64, kernel=(5, 5), dilations=(2, 2)) == "depthwise"


def test_what_stays_xla_convolution(monkeypatch):
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    with target.lowering_for("cpu"):
        assert pick(1, 64, 64, 14, groups=32) == "direct"  # grouped, not depthwise
        assert pick(1, 64, 64, 14, groups=64, kernel=(9, 9)) == "direct"  # 81 taps > MAX_TAPS
        assert pick(1, 64, 64, 2, groups=64, padding=[(0, 0), (0, 0)]) == "direct"  # no output
        assert pick(1, 64, 128, 14, kernel=(1, 1), strides=(2, 2)) == "direct"  # strided 1x1 (ResNet downsample)
        assert pick(1, 64, 128, 14, kernel=(1, 1), padding=[(1, 1), (1, 1)]) == "direct"
        assert pick(1, 64, 128, 14, kernel=(1, 1), groups=2) == "direct"
        assert pick(1, 64, 128, 14, kernel=(1, 1), dtype=jnp.float16) == "direct"
        x1 = jax.ShapeDtypeStruct((1, 64, 14), jnp.float32)  # 1-D: not measured
        assert convolution.algorithm(x1, jax.ShapeDtypeStruct((32, 64, 1), jnp.float32), strides=(1,), padding=[(0, 0)], dilations=(1,), groups=1) == "direct"
    with target.lowering_for("gpu"):  # cuDNN chooses its own algorithm
        assert pick(1, 64, 128, 14, kernel=(1, 1)) == "direct"
    for mode in ("direct", "winograd"):
        monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, mode)
        with target.lowering_for("cpu"):
            assert pick(1, 64, 128, 14, kernel=(1, 1)) == "direct"


def test_conv_dispatches_to_the_chosen_kernel(monkeypatch):
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    x, wd, wp = _rand(1, 8, 9, 9), _rand(8, 1, 3, 3), _rand(4, 8, 1, 1)
    with target.lowering_for("cpu"):
        dw = jax.make_jaxpr(lambda x, w: convolution.conv(x, w, strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1), groups=8))(x, wd)
        pw = jax.make_jaxpr(lambda x, w: convolution.conv(x, w, strides=(1, 1), padding=[(0, 0), (0, 0)], dilations=(1, 1), groups=1))(x, wp)
    dw_names = {e.primitive.name for e in dw.jaxpr.eqns}
    assert "conv_general_dilated" not in dw_names and {"pad", "slice", "mul", "add"} <= dw_names
    pw_names = {e.primitive.name for e in pw.jaxpr.eqns}
    assert "conv_general_dilated" not in pw_names and "dot_general" in pw_names
    assert_close(convolution.conv(x, wd, strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1), groups=8), torch_conv(x, wd, padding=[(1, 1), (1, 1)], groups=8))
    with target.lowering_for("cpu"):
        assert_close(convolution.conv(x, wp, strides=(1, 1), padding=[(0, 0), (0, 0)], dilations=(1, 1), groups=1), torch_conv(x, wp))


def test_pointwise_weight_layout_is_hoisted(monkeypatch):
    """The (C_in, C_out) matrix is weight-only work: computed once, the per-call part never
    transposes the kernel."""
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)

    def fn(params, inputs):
        y = convolution.conv(inputs["x"], params["w"], strides=(1, 1), padding=[(0, 0), (0, 0)], dilations=(1, 1), groups=1)
        return {"y": y}

    w, x = _rand(6, 4, 1, 1), _rand(1, 4, 5, 5)
    f = HoistedFunction(fn, host_prepare=True)
    with target.lowering_for("cpu"):
        out = f({"w": jnp.asarray(w)}, {"x": x})["y"]
    assert_close(out, torch_conv(x, w))
    assert f.hoisted({"x": x})
    (split,) = [s for s in f._splits.values() if s]
    assert [v.aval.shape for v in split.known.jaxpr.outvars] == [(4, 6)]


# -- through mlc.load -----------------------------------------------------------------------------
WE, WD, BD, WP = _rand(24, 8, 1, 1, scale=0.3), _rand(24, 1, 3, 3, scale=0.3), _rand(24), _rand(8, 24, 1, 1, scale=0.2)


def _block(x):
    """MobileNetV2's inverted residual: 1x1 expand, relu6, 3x3 depthwise stride 2, relu6, 1x1 project."""
    from coremltools.converters.mil import Builder as mb

    h = mb.clip(x=mb.conv(x=x, weight=WE), alpha=0.0, beta=6.0)
    h = mb.clip(x=mb.conv(x=h, weight=WD, bias=BD, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], groups=24), alpha=0.0, beta=6.0)
    return mb.conv(x=h, weight=WP)


def _block_torch(x):
    h = np.clip(torch_conv(x, WE), 0, 6)
    h = np.clip(torch_conv(h, WD, strides=2, padding=[(1, 1), (1, 1)], groups=24) + BD.reshape(1, -1, 1, 1), 0, 6)
    return torch_conv(h, WP)


def test_mil_model_predict_and_predict_batch(monkeypatch, convolution_spy):
    monkeypatch.setenv("MLC_BATCH_SPLIT", "1")  # the whole batch in one vmapped call, as asserted below
    monkeypatch.setenv("MLC_BATCH_CHUNK", "0")  # not in chunks: no trace of one example for the chunk rule either
    from mlc.testing.mil_program import mil_model

    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    model = mil_model(_block, {"x": ((1, 8, 11, 10), "fp32")})
    x = _rand(1, 8, 11, 10)
    out = next(iter(model.predict({"x": x}).values()))
    assert_close(out, _block_torch(x))
    assert [s[0] for s in convolution_spy] == ["pointwise", "depthwise", "pointwise"]
    assert {s[2] for s in convolution_spy} == {"cpu"}
    convolution_spy.clear()
    xs = _rand(4, 1, 8, 11, 10)
    batched = next(iter(model.predict_batch({"x": xs}).values()))
    for i in range(len(xs)):
        assert_close(batched[i], _block_torch(xs[i]))
    assert [(s[0], s[3]) for s in convolution_spy] == [("pointwise", 4), ("depthwise", 4), ("pointwise", 4)]  # one example traced, vmapped over 4


def test_neuralnetwork_depthwise_layer(convolution_spy):
    from mlc.testing.nn_specs import network, predict

    w, b = _rand(12, 1, 3, 3, scale=0.3), _rand(12)  # channel multiplier 2
    builder = network({"x": (6, 9, 7)}, ["y"], exact=False)
    builder.add_convolution(
        "conv", kernel_channels=1, output_channels=12, height=3, width=3, stride_height=2, stride_width=1,
        border_mode="valid", groups=6, W=np.transpose(w, (2, 3, 1, 0)), b=b, has_bias=True, input_name="x", output_name="y",
    )  # fmt: skip
    x = _rand(6, 9, 7)
    out = predict(builder, {"x": x})["y"]
    ref = torch_conv(x[None], w, strides=(2, 1), groups=6)[0] + b.reshape(-1, 1, 1)
    assert_close(np.asarray(out).reshape(ref.shape), ref)
    assert [s[0] for s in convolution_spy] == ["depthwise"]
