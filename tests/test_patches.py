"""Convolutions with few input channels as a patch matrix times the kernel (mlc.kernels.patches),
and the rule that picks them (mlc.kernels.convolution.patches_pay): against torch in float64,
under vmap, gradients, the rule's choices, the hoisted kernel layout, and models through mlc.load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.kernels import convolution, patches
from mlc.runtime import target, xla_options
from mlc.runtime.hoist import HoistedFunction
from mlc.testing.convolutions import assert_close, pick, torch_conv

RNG = np.random.default_rng(3333)


def _rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


CASES = [
    # (n, c_in, c_out, size, kernel, strides, padding, dilations)
    (1, 3, 16, (12, 12), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # a small CNN's first layer
    (2, 3, 8, (15, 16), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # MobileNet's stem, odd/even sizes
    (1, 3, 8, (15, 15), (3, 3), (2, 2), ((0, 1), (0, 1)), (1, 1)),  # TF-style same (EfficientNet)
    (1, 3, 4, (20, 20), (7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1)),  # ResNet's 7x7 stem
    (1, 1, 5, (9, 8), (3, 2), (1, 2), ((1, 0), (0, 1)), (2, 1)),  # one channel, rectangular, dilated
    (3, 4, 6, (8, 8), (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1)),  # strided 1x1
    (1, 2, 3, (10, 10), (3, 3), (1, 1), ((-1, 1), (1, -2)), (1, 1)),  # negative padding crops
    (1, 3, 2, (5, 5), (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),  # one output position
    (2, 3, 6, (32, 32), (8, 8), (8, 8), ((0, 0), (0, 0)), (1, 1)),  # non-overlapping tiles (a ViT's patch embedding)
    (1, 3, 5, (19, 17), (4, 3), (4, 3), ((0, 0), (0, 0)), (1, 1)),  # tiles, with rows and columns left over
    (2, 8, 12, (9, 10), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # more channels: the patch matrix channels-last
    (1, 6, 5, (11, 11), (3, 3), (2, 3), ((0, 1), (1, -1)), (1, 1)),  # channels-last, uneven strides, a crop
]


@pytest.mark.parametrize("n, c_in, c_out, size, kernel, strides, padding, dilations", CASES)
def test_patches_match_torch(n, c_in, c_out, size, kernel, strides, padding, dilations):
    x, w = _rand(n, c_in, *size), _rand(c_out, c_in, *kernel, scale=0.3)
    expected = torch_conv(x, w, strides=strides, padding=padding, dilations=dilations)
    out = jax.jit(lambda x, w: patches.conv(x, w, strides=strides, padding=padding, dilations=dilations))(x, w)
    assert out.shape == expected.shape and out.dtype == jnp.float32
    assert_close(out, expected)


def test_patches_under_vmap():
    """predict_batch's form: one example of batch 1, vmapped over a leading axis."""
    xs, w = _rand(5, 1, 3, 11, 11), _rand(8, 3, 3, 3, scale=0.3)
    kw = dict(strides=(2, 2), padding=((1, 1), (1, 1)), dilations=(1, 1))
    out = jax.jit(jax.vmap(lambda x: patches.conv(x, jnp.asarray(w), **kw)))(xs)
    for i in range(len(xs)):
        assert_close(out[i], torch_conv(xs[i], w, **kw))
    w16 = _rand(8, 16, 3, 3, scale=0.1)  # channels-last patch matrix
    xs16 = np.asarray(_rand(5, 1, 16, 11, 11))
    out = jax.jit(jax.vmap(lambda x: patches.conv(x, jnp.asarray(w16), **kw)))(xs16)
    for i in range(len(xs16)):
        assert_close(out[i], torch_conv(xs16[i], w16, **kw))
    tiles = dict(strides=(4, 4), padding=((0, 0), (0, 0)), dilations=(1, 1))  # non-overlapping
    w4 = _rand(8, 3, 4, 4, scale=0.2)
    out = jax.jit(jax.vmap(lambda x: patches.conv(x, jnp.asarray(w4), **tiles)))(xs)
    for i in range(len(xs)):
        assert_close(out[i], torch_conv(xs[i], w4, **tiles))


def test_patches_fp16_weights_on_fp32_activations():
    """A weight-compressed model computed in fp32 on CPU: the kernel is widened, the result fp32."""
    x, w = _rand(1, 3, 8, 8), _rand(4, 3, 3, 3, scale=0.3).astype(np.float16)
    kw = dict(strides=(1, 1), padding=((1, 1), (1, 1)), dilations=(1, 1))
    out = patches.conv(jnp.asarray(x), jnp.asarray(w), **kw)
    assert out.dtype == jnp.float32
    assert_close(out, torch_conv(x, w.astype(np.float32), **kw))


def test_gradients_match_xla_convolution():
    """Fine-tuning differentiates through the patch matrix as through XLA's convolution."""
    x, w = jnp.asarray(_rand(2, 3, 9, 9)), jnp.asarray(_rand(5, 3, 3, 3))
    kw = dict(strides=(2, 2), padding=((1, 1), (1, 1)), dilations=(1, 1))

    def ours(x, w):
        return jnp.sum(jnp.sin(patches.conv(x, w, **kw)))

    def xla(x, w):
        return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW"))))

    for a, b in zip(jax.grad(ours, argnums=(0, 1))(x, w), jax.grad(xla, argnums=(0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- the rule -------------------------------------------------------------------------------------
def test_rule(monkeypatch):
    """The measured cases (bench/experiments.md, "Few input channels"): a small CNN's first layer
    at batch 1 and 32 and MobileNetV2's stem at batch 1 are patches; ResNet-18's 7x7 stem, a
    MobileNetV2 stem at batch 32 and convolutions of more channels stay as they were."""
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    with target.lowering_for("cpu"):
        assert pick(1, 3, 16, 32) == "patches"  # scripts/bench.py's tiny CNN
        assert pick(1, 3, 32, 224, strides=(2, 2)) == "patches"  # 1.35 MB of patches
        assert pick(1, 3, 64, 224, kernel=(7, 7), strides=(2, 2)) == "direct"  # 7.4 MB
        assert pick(1, 1, 8, 28) == "patches"  # a grayscale digit
        assert pick(1, 8, 16, 32) == "direct"  # more channels than MAX_INPUT_CHANNELS
        assert pick(1, 4, 4, 32, groups=4) == "depthwise"
        assert pick(1, 3, 16, 32, dtype=jnp.float16) == "direct"
        assert pick(1, 3, 16, 8, kernel=(3, 1)) == "patches"
        assert pick(1, 3, 16, 8, kernel=(5, 5)) == "direct"  # more than MAX_TAPS kernel positions
        assert pick(1, 3, 16, 8, kernel=(4, 4), strides=(2, 2)) == "direct"  # overlapping and 16 positions
        # a ViT's patch embedding: non-overlapping tiles, the input rearranged whatever the kernel size
        assert pick(1, 3, 192, 224, kernel=(16, 16), strides=(16, 16), padding=[(0, 0), (0, 0)]) == "patches"
        assert pick(1, 8, 192, 224, kernel=(16, 16), strides=(16, 16), padding=[(0, 0), (0, 0)]) == "direct"
        assert pick(1, 3, 192, 224, kernel=(16, 16), strides=(16, 16)) == "direct"  # padded: overlapping rule, 256 positions
    with target.lowering_for("cpu", vmapped_batch=32):
        assert pick(1, 3, 16, 32) == "patches"  # 3.5 MB
        assert pick(1, 3, 32, 224, strides=(2, 2)) == "direct"
        assert pick(1, 3, 192, 224, kernel=(16, 16), strides=(16, 16), padding=[(0, 0), (0, 0)]) == "patches"
    with target.lowering_for("gpu"):
        assert pick(1, 3, 16, 32) == "direct"
        assert pick(1, 64, 128, 56, strides=(2, 2)) == "direct"
    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "direct")
    with target.lowering_for("cpu"):
        assert pick(1, 3, 16, 32) == "direct"
    monkeypatch.setenv(convolution.ALGORITHM_VARIABLE, "winograd")  # Winograd where eligible, else XLA's
    with target.lowering_for("cpu"):
        assert pick(1, 3, 16, 32) == "winograd"
        assert pick(1, 3, 32, 224, strides=(2, 2)) == "direct"


def test_strided_rule(monkeypatch):
    """bench/experiments.md, "Small outputs": ResNet-18's strided 3x3 layers at batch 1 are
    patches; fewer than 64 channels, stride 1, dilation, groups, or a patch matrix over
    MAX_PATCH_BYTES (predict_batch's vmapped batch counted) are not."""
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    with target.lowering_for("cpu"):
        assert pick(1, 64, 128, 56, strides=(2, 2)) == "patches"  # 1.8 MB of patches
        assert pick(1, 128, 256, 28, strides=(2, 2)) == "patches"
        assert pick(1, 256, 512, 14, strides=(2, 2)) == "patches"
        assert pick(1, 32, 64, 56, strides=(2, 2)) == "direct"  # too few channels: measured to lose
        assert pick(1, 64, 32, 56, strides=(2, 2)) == "direct"
        assert pick(1, 64, 128, 56, strides=(2, 2), dilations=(2, 2)) == "direct"
        assert pick(1, 64, 128, 56, strides=(2, 2), groups=2) == "direct"
        assert pick(1, 64, 128, 56, kernel=(5, 5), strides=(2, 2)) == "direct"
        assert pick(1, 64, 64, 56) == "winograd"  # stride 1: the Winograd rule
        assert pick(1, 64, 128, 56, strides=(2, 2), dtype=jnp.float16) == "direct"
    with target.lowering_for("cpu", vmapped_batch=16):
        assert pick(1, 64, 128, 56, strides=(2, 2)) == "direct"  # 29 MB
        assert pick(1, 256, 512, 14, strides=(2, 2)) == "direct"  # 7.2 MB
    with target.lowering_for("cpu", vmapped_batch=8):
        assert pick(1, 256, 512, 14, strides=(2, 2)) == "patches"  # 3.6 MB


def test_kernel_layout_is_hoisted_and_the_program_counts_as_convolutional(monkeypatch):
    """The (KH * KW * C_in, C_out) matrix is weight-only work, computed once; the per-call part
    has no XLA convolution left, and is still compiled with the options for convolutional
    programs (mlc.runtime.xla_options)."""
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    seen = []

    def options(jaxpr):
        seen.append(None if jaxpr is None else xla_options.has_convolution(jaxpr))
        return xla_options.compiler_options(jax.devices("cpu")[0], jaxpr)

    def fn(params, inputs):
        y = convolution.conv(inputs["x"], params["w"], strides=(1, 1), padding=[(1, 1), (1, 1)], dilations=(1, 1), groups=1)
        return {"y": y}

    w, x = _rand(6, 3, 3, 3), _rand(1, 3, 7, 7)
    f = HoistedFunction(fn, host_prepare=True, compiler_options=options)
    with target.lowering_for("cpu"):
        out = f({"w": jnp.asarray(w)}, {"x": x})["y"]
        per_call = jax.make_jaxpr(lambda x: fn({"w": jnp.asarray(w)}, {"x": x}))(x)
    assert_close(out, torch_conv(x, w, padding=((1, 1), (1, 1))))
    assert f.hoisted({"x": x})
    (split,) = [s for s in f._splits.values() if s]
    assert [v.aval.shape for v in split.known.jaxpr.outvars] == [(27, 6)]
    assert "conv_general_dilated" not in {e.primitive.name for e in per_call.jaxpr.eqns}
    assert seen[-1] is True


# -- through mlc.load -----------------------------------------------------------------------------
W1, B1, W2 = _rand(8, 3, 3, 3, scale=0.3), _rand(8), _rand(4, 8, 3, 3, scale=0.2)


def _stem(x):
    """A 3-channel stride-2 stem with bias and ReLU, then a 3x3 convolution of 8 channels."""
    from coremltools.converters.mil import Builder as mb

    h = mb.relu(x=mb.conv(x=x, weight=W1, bias=B1, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]))
    return mb.conv(x=h, weight=W2, pad_type="same")


def _stem_torch(x):
    h = np.maximum(torch_conv(x, W1, strides=(2, 2), padding=((1, 1), (1, 1))) + B1.reshape(1, -1, 1, 1), 0)
    return torch_conv(h, W2, padding=((1, 1), (1, 1)))


def test_mil_model_predict_and_predict_batch(monkeypatch, convolution_spy):
    monkeypatch.setenv("MLC_BATCH_SPLIT", "1")  # the whole batch in one vmapped call, as asserted below
    monkeypatch.setenv("MLC_BATCH_CHUNK", "0")  # not in chunks: no trace of one example for the chunk rule either
    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    from mlc.testing.mil_program import mil_model

    model = mil_model(_stem, {"x": ((1, 3, 17, 16), "fp32")})
    x = _rand(1, 3, 17, 16)
    assert_close(next(iter(model.predict({"x": x}).values())), _stem_torch(x))
    assert [s[0] for s in convolution_spy] == ["patches", "direct"]
    convolution_spy.clear()
    xs = _rand(4, 1, 3, 17, 16)
    batched = next(iter(model.predict_batch({"x": xs}).values()))
    for i in range(len(xs)):
        assert_close(batched[i], _stem_torch(xs[i]))
    assert [(s[0], s[3]) for s in convolution_spy] == [("patches", 4), ("direct", 4)]


def test_neuralnetwork_convolution_layer(convolution_spy):
    from mlc.testing.nn_specs import network, predict

    w, b = _rand(6, 3, 3, 3, scale=0.2), _rand(6)
    builder = network({"x": (3, 13, 11)}, ["y"], exact=False)
    builder.add_convolution(
        "conv", kernel_channels=3, output_channels=6, height=3, width=3, stride_height=2, stride_width=1,
        border_mode="valid", groups=1, W=np.transpose(w, (2, 3, 1, 0)), b=b, has_bias=True, input_name="x", output_name="y",
    )  # fmt: skip
    x = _rand(3, 13, 11)
    out = predict(builder, {"x": x})["y"]
    ref = torch_conv(x[None], w, strides=(2, 1))[0] + b.reshape(-1, 1, 1)
    assert_close(np.asarray(out).reshape(ref.shape), ref)
    assert [s[0] for s in convolution_spy] == ["patches"]


def test_strided_layer_of_many_channels_in_a_model(monkeypatch, convolution_spy):
    """A ResNet downsampling layer (64 -> 64, 3x3, stride 2) in an ML Program: patches at batch 1
    (the strided rule), against torch; predict_batch agrees with predict."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_model

    monkeypatch.delenv(convolution.ALGORITHM_VARIABLE, raising=False)
    w = _rand(64, 64, 3, 3, scale=0.05)
    model = mil_model(lambda x: mb.conv(x=x, weight=w, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]), {"x": ((1, 64, 15, 14), "fp32")})
    x = _rand(1, 64, 15, 14)
    out = next(iter(model.predict({"x": x}).values()))
    assert_close(out, torch_conv(x, w, strides=(2, 2), padding=((1, 1), (1, 1))))
    assert [s[0] for s in convolution_spy] == ["patches"]
    xs = _rand(3, 1, 64, 15, 14)
    batched = next(iter(model.predict_batch({"x": xs}).values()))
    for i in range(len(xs)):
        assert_close(batched[i], torch_conv(xs[i], w, strides=(2, 2), padding=((1, 1), (1, 1))))
