"""Activations against numpy / torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(2)


def _t(fn, x, **kw):
    return fn(torch.from_numpy(x), **kw).numpy()


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _references(x, a, b):
    """(name, builder call, reference); alpha/beta are scalars of the attribute dtype."""
    d = x.astype(np.float64)
    fa, fb = float(a), float(b)
    return [
        ("relu", lambda x: mb.relu(x=x), np.maximum(d, 0)),
        ("relu6", lambda x: mb.relu6(x=x), np.clip(d, 0, 6)),
        ("sigmoid", lambda x: mb.sigmoid(x=x), _sigmoid(d)),
        ("silu", lambda x: mb.silu(x=x), d * _sigmoid(d)),
        ("softplus", lambda x: mb.softplus(x=x), np.logaddexp(0, d)),
        ("softsign", lambda x: mb.softsign(x=x), d / (1 + np.abs(d))),
        ("clamped_relu", lambda x: mb.clamped_relu(x=x, alpha=a, beta=b), np.minimum(np.where(d >= 0, d, fa * d), fb)),
        ("elu", lambda x: mb.elu(x=x, alpha=a), np.where(d > 0, d, fa * np.expm1(d))),
        ("leaky_relu", lambda x: mb.leaky_relu(x=x, alpha=a), np.where(d >= 0, d, fa * d)),
        ("linear_activation", lambda x: mb.linear_activation(x=x, alpha=a, beta=b), fa * d + fb),
        ("scaled_tanh", lambda x: mb.scaled_tanh(x=x, alpha=a, beta=b), fa * np.tanh(fb * d)),
        ("sigmoid_hard", lambda x: mb.sigmoid_hard(x=x, alpha=a, beta=b), np.clip(fa * d + fb, 0, 1)),
        ("thresholded_relu", lambda x: mb.thresholded_relu(x=x, alpha=a), np.where(d >= fa, d, 0)),
        ("gelu", lambda x: mb.gelu(x=x), _t(F.gelu, d)),
        ("gelu_exact", lambda x: mb.gelu(x=x, mode="EXACT"), _t(F.gelu, d)),
        ("gelu_tanh", lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"), _t(F.gelu, d, approximate="tanh")),
        ("gelu_sigmoid", lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"), d * _sigmoid(1.702 * d)),
        ("softmax", lambda x: mb.softmax(x=x), _t(F.softmax, d, dim=-1)),
        ("softmax_axis1", lambda x: mb.softmax(x=x, axis=1), _t(F.softmax, d, dim=1)),
        ("softmax_axis-3", lambda x: mb.softmax(x=x, axis=-3), _t(F.softmax, d, dim=-3)),
    ]


@pytest.mark.parametrize(
    "target, shape, attr_dtype",
    [("iOS15", (2, 3, 4, 5), np.float32), ("iOS17", (3, 4, 5), np.float32), ("iOS17", (2, 3, 4, 5), np.float16)],
)
def test_scalar_parameter_activations(target, shape, attr_dtype):
    """Every activation with scalar attributes; iOS17 also with fp16 attributes on fp32 x."""
    x = (RNG.standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1)[:3] = [0.0, 0.75, 6.5]  # relu / thresholded_relu / relu6 edges
    a, b = attr_dtype(0.75), attr_dtype(2.5)
    cases = _references(x, a, b)
    outs = run_mil(lambda x: [call(x) for _, call, _ in cases], {"x": x}, target=target)
    refs = [ref.astype(np.float32) for _, _, ref in cases]
    _check(outs, refs, [name for name, _, _ in cases], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_per_channel_activations(target):
    """prelu and softplus_parametric: alpha/beta per channel (axis 1), ranks 3 and 4."""
    x4 = (RNG.standard_normal((2, 3, 4, 5)) * 3).astype(np.float32)
    x3 = (RNG.standard_normal((2, 3, 6)) * 3).astype(np.float32)
    alpha = np.array([0.1, -0.5, 2.0], np.float32)
    same = np.full(3, 0.25, np.float32)  # iOS15 rank-3 prelu requires one alpha value
    beta = np.array([1.0, 0.5, 3.0], np.float32)

    def body(x4, x3):
        return [
            mb.prelu(x=x4, alpha=alpha),
            mb.prelu(x=x3, alpha=same),
            mb.softplus_parametric(x=x4, alpha=alpha, beta=beta),
            mb.softplus_parametric(x=x3, alpha=alpha, beta=beta),
        ]

    outs = run_mil(body, {"x4": x4, "x3": x3}, target=target)
    ch = lambda v, nd: v.reshape((1, -1) + (1,) * (nd - 2)).astype(np.float64)  # noqa: E731
    refs = [
        np.where(x4 >= 0, x4, ch(alpha, 4) * x4),
        np.where(x3 >= 0, x3, ch(same, 3) * x3),
        ch(alpha, 4) * np.logaddexp(0, ch(beta, 4) * x4),
        ch(alpha, 3) * np.logaddexp(0, ch(beta, 3) * x3),
    ]
    names = ["prelu4", "prelu3", "softplus_parametric4", "softplus_parametric3"]
    _check(outs, [r.astype(np.float32) for r in refs], names, rtol=1e-6, atol=1e-6)


def test_large_inputs_stay_finite():
    """softplus / softplus_parametric / sigmoid / softmax for large magnitudes."""
    x = np.array([[[-100.0, -30.0, 0.0, 30.0, 100.0]]], np.float32)
    one = np.ones(1, np.float32)
    outs = run_mil(
        lambda x: [mb.softplus(x=x), mb.softplus_parametric(x=x, alpha=one, beta=one * 2), mb.sigmoid(x=x), mb.softmax(x=x)],
        {"x": x},
    )
    d = x.astype(np.float64)
    refs = [np.logaddexp(0, d), np.logaddexp(0, 2 * d), _sigmoid(d), _t(F.softmax, d, dim=-1)]
    names = ["softplus", "softplus_parametric", "sigmoid", "softmax"]
    _check(outs, [r.astype(np.float32) for r in refs], names, rtol=1e-6, atol=1e-6)


def test_fully_static():
    """All inputs const (a scalar): evaluated at trace time."""
    outs = run_mil(
        lambda z: [mb.add(x=z, y=mb.relu(x=np.float32(-2.0))), mb.add(x=z, y=mb.sigmoid(x=np.float32(0.5)))],
        {"z": np.zeros(2, np.float32)},
    )
    _check(outs, [np.zeros(2, np.float32), np.full(2, _sigmoid(0.5), np.float32)], ["relu", "sigmoid"], rtol=1e-6)


def test_fp16_inputs():
    """fp16 program (computed in fp32 on CPU, output rounded to fp16): rtol 1e-3 covers one fp16 rounding."""
    x = RNG.uniform(-4, 4, (2, 3, 2, 4)).astype(np.float16)
    alpha = np.array([0.1, 0.2, 0.3], np.float16)
    outs = run_mil(
        lambda x: [
            mb.gelu(x=x, mode="TANH_APPROXIMATION"),
            mb.softmax(x=x, axis=1),
            mb.sigmoid(x=x),
            mb.leaky_relu(x=x, alpha=np.float16(0.1)),
            mb.prelu(x=x, alpha=alpha),
        ],
        {"x": x},
        precision="fp16",
        target="iOS16",
    )
    d = x.astype(np.float64)
    refs = [
        _t(F.gelu, d, approximate="tanh"),
        _t(F.softmax, d, dim=1),
        _sigmoid(d),
        np.where(d >= 0, d, 0.1 * d),
        np.where(d >= 0, d, alpha.astype(np.float64).reshape(1, 3, 1, 1) * d),
    ]
    names = ["gelu", "softmax", "sigmoid", "leaky_relu", "prelu"]
    _check(outs, [r.astype(np.float16) for r in refs], names, rtol=1e-3, atol=1e-3)


def test_fp16_honoured_keeps_dtype():
    """compute_precision="float16": fp32 attributes (allowed on iOS17) must not promote the fp16 output."""
    x = RNG.uniform(-4, 4, (2, 3, 4)).astype(np.float16)
    outs = run_mil(
        lambda x: [mb.elu(x=x, alpha=np.float32(0.5)), mb.clamped_relu(x=x, alpha=np.float32(0.1), beta=np.float32(3))],
        {"x": x},
        precision="fp16",
        target="iOS17",
        compute_precision="float16",
    )
    d = x.astype(np.float64)
    refs = [np.where(d > 0, d, 0.5 * np.expm1(d)), np.minimum(np.where(d >= 0, d, 0.1 * d), 3)]
    _check(outs, [r.astype(np.float16) for r in refs], ["elu", "clamped_relu"], rtol=2e-3, atol=2e-3)
