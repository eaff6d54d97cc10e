"""Linear and normalization layers of the NeuralNetwork front end (mlc/frontends/neuralnetwork/layers/linear.py,
normalization.py). Specs are built with coremltools' NeuralNetworkBuilder, in the exact world and
the rank-5 world; expected values come from numpy."""

import numpy as np
import pytest

import mlc
from mlc._errors import MLCError

from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder
from coremltools.models.neural_network.quantization_utils import _convert_array_to_nbit_quantized_bytes

RNG = np.random.default_rng(0)


def _builder(inputs, exact=True, outputs=("out",)):
    feats = [(name, datatypes.Array(*shape)) for name, shape in inputs]
    return NeuralNetworkBuilder(feats, [(o, None) for o in outputs], disable_rank5_shape_mapping=exact)


def _run(builder, feed, name="out"):
    out = mlc.load(builder.spec).predict({k: np.asarray(v, np.float32) for k, v in feed.items()})
    return np.asarray(out[name])


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# -- innerProduct ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, matrix, out_shape",
    [
        ((6,), (1, 6), (4,)),
        ((3, 6), (3, 6), (3, 4)),
        ((2, 3, 6), (6, 6), (2, 3, 4)),
        ((2, 1, 2, 3), (2, 6), (2, 4, 1, 1)),
        ((2, 3, 3, 2, 1), (6, 6), (2, 3, 4, 1, 1)),
    ],
)
def test_inner_product_ranks(shape, matrix, out_shape):
    w, bias, x = _rand(4, 6), _rand(4), _rand(*shape)
    b = _builder([("x", shape)])
    b.add_inner_product("ip", w, bias, 6, 4, True, "x", "out")
    ref = (x.reshape(matrix) @ w.T + bias).reshape(out_shape)
    _close(_run(b, {"x": x}), ref)


def test_inner_product_rank5_world():
    w, x = _rand(4, 12), _rand(3, 2, 2)
    b = _builder([("x", (3, 2, 2))], exact=False)
    b.add_inner_product("ip", w, None, 12, 4, False, "x", "out")
    _close(_run(b, {"x": x}).reshape(-1), w @ x.reshape(-1))


def test_inner_product_4bit_per_channel_quantized():
    q = RNG.integers(0, 16, size=(3, 5)).astype(np.uint8)
    scale, qbias = np.array([0.5, -1.0, 2.0], np.float32), np.array([1.0, 0.0, -3.0], np.float32)
    b = _builder([("x", (5,))])
    b.add_inner_product(
        "ip", _convert_array_to_nbit_quantized_bytes(q.flatten(), 4).tobytes(), None, 5, 3, False, "x", "out",
        is_quantized_weight=True, quantization_type="linear", nbits=4, quant_scale=scale, quant_bias=qbias,
    )
    x = _rand(5)
    w = q * scale[:, None] + qbias[:, None]
    _close(_run(b, {"x": x}), w @ x, 1e-4)


def test_inner_product_int8_dynamic_quantize():
    q = RNG.integers(-127, 128, size=(8, 16)).astype(np.int8)
    scale = 0.02
    b = _builder([("x", (4, 16))])
    b.add_inner_product(
        "ip", q.tobytes(), None, 16, 8, False, "x", "out", int_8_dynamic_quantize=True,
        is_quantized_weight=True, quantization_type="linear", nbits=8, quant_scale=np.array([scale]),
    )
    x = _rand(4, 16)
    sx = np.abs(x).max() / 127.0
    ref = (np.round(x / sx) * sx) @ (q.astype(np.float32) * scale).T  # the input on the int8 grid
    out = _run(b, {"x": x})
    _close(out, ref, 1e-4)
    assert np.abs(out - x @ (q.astype(np.float32) * scale).T).max() > 0  # it did quantize the input


def test_inner_product_wrong_input_size_fails():
    b = _builder([("x", (5,))])
    b.add_inner_product("ip", _rand(3, 6), None, 6, 3, False, "x", "out")
    with pytest.raises(MLCError, match="inputChannels"):
        _run(b, {"x": _rand(5)})


# -- batchedMatmul ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a_shape, b_shape, out_shape",
    [((5,), (5,), (1, 1)), ((3, 5), (5,), (3, 1)), ((5,), (2, 5, 3), (2, 1, 3)), ((2, 1, 3, 4), (5, 4, 2), (2, 5, 3, 2))],
)
def test_batched_matmul_two_inputs_keeps_promoted_axes(a_shape, b_shape, out_shape):
    a, c = _rand(*a_shape), _rand(*b_shape)
    b = _builder([("a", a_shape), ("b", b_shape)])
    b.add_batched_mat_mul("bmm", ["a", "b"], "out")
    out = _run(b, {"a": a, "b": c})
    assert out.shape == out_shape
    _close(out.reshape(-1), np.matmul(a, c).reshape(-1), 1e-4)


@pytest.mark.parametrize("ta, tb", [(True, False), (False, True), (True, True)])
def test_batched_matmul_transposes(ta, tb):
    a, c = _rand(2, 4, 3), _rand(2, 3, 5)
    a_in = np.swapaxes(a, -1, -2) if ta else a
    c_in = np.swapaxes(c, -1, -2) if tb else c
    b = _builder([("a", a_in.shape), ("b", c_in.shape)])
    b.add_batched_mat_mul("bmm", ["a", "b"], "out", transpose_a=ta, transpose_b=tb)
    _close(_run(b, {"a": a_in, "b": c_in}), a @ c, 1e-4)


@pytest.mark.parametrize("shape", [(6,), (2, 3, 6)])
def test_batched_matmul_weights_and_bias(shape):
    w, bias, x = _rand(6, 4), _rand(4), _rand(*shape)
    b = _builder([("x", shape)])
    b.add_batched_mat_mul("bmm", ["x"], "out", weight_matrix_rows=6, weight_matrix_columns=4, W=w, bias=bias)
    _close(_run(b, {"x": x}), x @ w + bias, 1e-4)


def test_batched_matmul_lut_quantized_weights():
    q = RNG.integers(0, 4, size=(3, 2)).astype(np.uint8)
    lut = np.array([-1.0, 0.5, 2.0, 3.0], np.float32)
    b = _builder([("x", (2, 3))])
    b.add_batched_mat_mul(
        "bmm", ["x"], "out", weight_matrix_rows=3, weight_matrix_columns=2,
        W=_convert_array_to_nbit_quantized_bytes(q.flatten(), 2).tobytes(),
        is_quantized_weight=True, quantization_type="lut", nbits=2, quant_lut=lut,
    )
    x = _rand(2, 3)
    _close(_run(b, {"x": x}), x @ lut[q], 1e-5)


def test_batched_matmul_int8_dynamic_quantize():
    q = RNG.integers(-127, 128, size=(16, 8)).astype(np.int8)
    scale = 0.05
    b = _builder([("x", (3, 16))])
    b.add_batched_mat_mul(
        "bmm", ["x"], "out", weight_matrix_rows=16, weight_matrix_columns=8, W=q.tobytes(),
        int_8_dynamic_quantize=True, is_quantized_weight=True, quantization_type="linear", nbits=8,
        quant_scale=np.array([scale]),
    )
    x = _rand(3, 16)
    sx = np.abs(x).max() / 127.0
    _close(_run(b, {"x": x}), (np.round(x / sx) * sx) @ (q.astype(np.float32) * scale), 1e-4)


def test_batched_matmul_mismatched_inputs_fail():
    b = _builder([("a", (3, 4)), ("b", (5, 2))])
    b.add_batched_mat_mul("bmm", ["a", "b"], "out")
    with pytest.raises(MLCError):
        _run(b, {"a": _rand(3, 4), "b": _rand(5, 2)})


# -- embedding / embeddingND -----------------------------------------------------------------------
def test_embedding_rank5_indices_with_bias():
    w, bias = _rand(3, 7), _rand(3)
    idx = np.array([[6, 0, 2], [1, 1, 5]], np.float32)
    b = _builder([("x", (2, 3, 1, 1, 1))])
    b.add_embedding("emb", w, bias, 7, 3, True, "x", "out")
    out = _run(b, {"x": idx.reshape(2, 3, 1, 1, 1)})
    ref = (w.T[idx.astype(int)] + bias)[..., None, None]
    assert out.shape == (2, 3, 3, 1, 1)
    _close(out, ref)


def test_embedding_nd_bias_and_negative_index():
    w, bias = _rand(4, 6), _rand(4)
    idx = np.array([[0], [5], [-1], [2]], np.float32)
    b = _builder([("x", (4, 1))])
    b.add_embedding_nd("emb", "x", "out", vocab_size=6, embedding_size=4, W=w, b=bias)
    _close(_run(b, {"x": idx}), w.T[idx[:, 0].astype(int)] + bias)


# -- dot -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["DOT", "COS"])
def test_dot_and_cosine(mode):
    x, y = _rand(4, 1, 1), _rand(4, 1, 1)
    b = _builder([("x", (4, 1, 1)), ("y", (4, 1, 1))], exact=False)
    b.add_elementwise("dot", ["x", "y"], "out", mode=mode)
    ref = float((x * y).sum())
    if mode == "COS":
        ref /= np.linalg.norm(x) * np.linalg.norm(y)
    _close(_run(b, {"x": x, "y": y}).reshape(-1), [ref])


# -- batchnorm ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("exact", [True, False])
def test_batchnorm_given_statistics(exact):
    c = 3
    gamma, beta, mean, var = _rand(c), _rand(c), _rand(c), np.abs(_rand(c)) + 0.5
    shape = (2, c, 4, 5) if exact else (c, 4, 5)
    x = _rand(*shape)
    b = _builder([("x", shape)], exact=exact)
    b.add_batchnorm("bn", c, gamma, beta, mean, var, "x", "out", epsilon=1e-3)
    r = lambda v: v.reshape(c, 1, 1)  # noqa: E731
    ref = r(gamma) * (x - r(mean)) / np.sqrt(r(var) + 1e-3) + r(beta)
    _close(_run(b, {"x": x}).reshape(ref.shape), ref, 1e-4)


def test_batchnorm_instance_normalization():
    c, x = 3, _rand(2, 3, 4, 5)
    gamma, beta = _rand(c), _rand(c)
    b = _builder([("x", x.shape)])
    b.add_batchnorm("bn", c, gamma, beta, input_name="x", output_name="out", compute_mean_var=True, instance_normalization=True)
    m, v = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    ref = gamma.reshape(c, 1, 1) * (x - m) / np.sqrt(v + 1e-5) + beta.reshape(c, 1, 1)
    _close(_run(b, {"x": x}), ref, 1e-4)


def test_batchnorm_batch_statistics_and_default_epsilon():
    c, x = 3, _rand(2, 3, 4, 5)
    b = _builder([("x", x.shape)])
    b.add_batchnorm(
        "bn", c, np.ones(c), np.zeros(c), input_name="x", output_name="out", compute_mean_var=True, instance_normalization=True
    )
    params = b.spec.neuralNetwork.layers[0].batchnorm
    params.instanceNormalization = False  # the builder refuses batch statistics; the proto allows them
    params.epsilon = 0.0  # 0 means 1e-5
    m, v = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    _close(_run(b, {"x": x}), (x - m) / np.sqrt(v + 1e-5), 1e-4)


def test_batchnorm_wrong_channels_fails():
    b = _builder([("x", (2, 4, 3))])
    b.add_batchnorm("bn", 3, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), "x", "out")
    with pytest.raises(MLCError, match="channels"):
        _run(b, {"x": _rand(2, 4, 3)})


# -- mvn / l2normalize / lrn ---------------------------------------------------------------------------
@pytest.mark.parametrize("across, norm", [(True, True), (False, True), (False, False)])
def test_mvn(across, norm):
    x = _rand(2, 3, 4, 5)
    b = _builder([("x", x.shape)])
    b.add_mvn("mvn", "x", "out", across_channels=across, normalize_variance=norm, epsilon=1e-4)
    axes = (1, 2, 3) if across else (2, 3)
    ref = x - x.mean(axis=axes, keepdims=True)
    if norm:
        ref = ref / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-4)
    _close(_run(b, {"x": x}), ref, 1e-4)


def test_l2_normalize_per_batch_item():
    x = _rand(2, 3, 2, 2)
    b = _builder([("x", x.shape)])
    b.add_l2_normalize("l2", "x", "out", epsilon=1e-6)
    ref = x / np.sqrt((x**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6)
    _close(_run(b, {"x": x}), ref)


@pytest.mark.parametrize("size", [1, 3, 4])
def test_lrn_window(size):
    x = _rand(6, 2, 3)
    b = _builder([("x", x.shape)], exact=False)
    b.add_lrn("lrn", "x", "out", alpha=0.7, beta=0.75, local_size=size, k=2.0)
    ref = np.empty_like(x)
    before = (size - 1) // 2
    for c in range(6):
        window = x[max(0, c - before): c - before + size]
        ref[c] = x[c] / (2.0 + 0.7 / size * (window**2).sum(axis=0)) ** 0.75
    _close(_run(b, {"x": x}).reshape(ref.shape), ref)


def test_lrn_zero_local_size_fails():
    b = _builder([("x", (3, 2, 2))], exact=False)
    b.add_lrn("lrn", "x", "out", alpha=1.0, beta=0.5, local_size=0)
    with pytest.raises(MLCError, match="localSize"):
        _run(b, {"x": _rand(3, 2, 2)})


# -- layerNormalization --------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_shape", [(5,), (4, 5)])
def test_layer_normalization(norm_shape):
    x = _rand(2, 3, 4, 5)
    gamma, beta = _rand(*norm_shape), _rand(*norm_shape)
    b = _builder([("x", x.shape)])
    b.add_layer_normalization("ln", "x", "out", list(norm_shape), gamma, beta, eps=1e-5)
    axes = tuple(range(-len(norm_shape), 0))
    ref = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5) * gamma + beta
    _close(_run(b, {"x": x}), ref, 1e-4)


def test_layer_normalization_bad_shape_fails():
    b = _builder([("x", (3, 4))])
    b.add_layer_normalization("ln", "x", "out", [3], np.ones(3), np.zeros(3))
    with pytest.raises(MLCError, match="normalizedShape"):
        _run(b, {"x": _rand(3, 4)})


# -- softmax / softmaxND ---------------------------------------------------------------------------------
def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("exact", [True, False])
def test_softmax_over_channels(exact):
    x = _rand(4, 2, 3)
    b = _builder([("x", x.shape)], exact=exact)
    b.add_softmax("sm", "x", "out")
    _close(_run(b, {"x": x}).reshape(x.shape), _softmax(x, 0))


@pytest.mark.parametrize("axis", [0, -1, 1])
def test_softmax_nd(axis):
    x = _rand(3, 4, 5) * 50
    b = _builder([("x", x.shape)])
    b.add_softmax_nd("sm", "x", "out", axis=axis)
    _close(_run(b, {"x": x}), _softmax(x, axis))


def test_softmax_nd_axis_out_of_range_fails():
    b = _builder([("x", (3, 4))])
    b.add_softmax_nd("sm", "x", "out", axis=2)
    with pytest.raises(MLCError, match="axis"):
        _run(b, {"x": _rand(3, 4)})
