"""Elementwise unary ops and cast against numpy (fp32 references computed in float64)."""

import math

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(1)

# name -> (numpy reference, which input: "x" in (-0.9, 0.9), "p" positive, "q" with exact halves)
FLOAT_OPS = {
    "abs": (np.abs, "q"),
    "acos": (np.arccos, "x"),
    "asin": (np.arcsin, "x"),
    "atan": (np.arctan, "q"),
    "atanh": (np.arctanh, "x"),
    "ceil": (np.ceil, "q"),
    "cos": (np.cos, "q"),
    "cosh": (np.cosh, "q"),
    "erf": (np.vectorize(math.erf), "q"),
    "exp": (np.exp, "q"),
    "exp2": (np.exp2, "q"),
    "floor": (np.floor, "q"),
    "round": (np.round, "q"),
    "sign": (np.sign, "q"),
    "sin": (np.sin, "q"),
    "sinh": (np.sinh, "q"),
    "sqrt": (np.sqrt, "p"),
    "square": (np.square, "q"),
    "tan": (np.tan, "x"),
    "tanh": (np.tanh, "q"),
}


def _inputs(shape):
    x = RNG.uniform(-0.9, 0.9, shape).astype(np.float32)
    p = RNG.uniform(0.1, 3.0, shape).astype(np.float32)
    q = (RNG.standard_normal(shape) * 2).astype(np.float32)
    q.reshape(-1)[:6] = [0.5, 1.5, 2.5, -0.5, -2.5, 0.0]  # round half to even; sign(0) = 0
    return {"x": x, "p": p, "q": q}


@pytest.mark.parametrize("target, shape", [("iOS15", (3, 4)), ("iOS17", (2, 3, 4)), ("iOS17", (7,))])
def test_float_ops(target, shape):
    feeds = _inputs(shape)
    outs = run_mil(
        lambda **v: [getattr(mb, n)(x=v[src]) for n, (_, src) in FLOAT_OPS.items()],
        feeds,
        target=target,
    )
    refs = [f(feeds[src].astype(np.float64)).astype(np.float32) for f, src in FLOAT_OPS.values()]
    _check(outs, refs, list(FLOAT_OPS), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_epsilon_and_bounds_ops(target):
    """inverse / log / rsqrt with default and explicit epsilon; clip; threshold; logical_not."""
    # iOS17 lets epsilon have another dtype than x.
    eps = np.float16(0.25) if target == "iOS17" else np.float32(0.25)
    p = RNG.uniform(0.1, 3.0, (3, 5)).astype(np.float32)
    b = RNG.random((3, 5)) > 0.5

    def body(p, b):
        return [
            mb.inverse(x=p),
            mb.inverse(x=p, epsilon=eps),
            mb.log(x=p),
            mb.log(x=p, epsilon=eps),
            mb.rsqrt(x=p),
            mb.rsqrt(x=p, epsilon=eps),
            mb.clip(x=p, alpha=np.float32(0.5), beta=np.float32(2.0)),
            mb.threshold(x=p, alpha=np.float32(1.0)),
            mb.cast(x=mb.logical_not(x=b), dtype="int32"),
        ]

    outs = run_mil(body, {"p": p, "b": b}, target=target)
    d, e = p.astype(np.float64), float(eps)
    refs = [1 / (d + 1e-4), 1 / (d + e), np.log(d + 1e-45), np.log(d + e), 1 / np.sqrt(d + 1e-12), 1 / np.sqrt(d + e)]
    refs = [r.astype(np.float32) for r in refs] + [np.clip(p, 0.5, 2.0), np.maximum(p, 1.0), (~b).astype(np.int32)]
    names = ["inverse", "inverse_eps", "log", "log_eps", "rsqrt", "rsqrt_eps", "clip", "threshold", "logical_not"]
    _check(outs, refs, names, rtol=1e-6, atol=1e-6)


def test_log_of_zero_matches_value_inference():
    """log(0) with the default epsilon 1e-45 (subnormal) is log(1e-45), not -inf."""
    x = np.array([0.0, 1.0, 1e-30], np.float32)
    out, = run_mil(lambda x: mb.log(x=x), {"x": x})
    ref = np.log(x.astype(np.float64) + np.float64(np.float32(1e-45))).astype(np.float32)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert np.isfinite(out).all()


def test_int32_ops():
    x = np.array([[-5, -2, -1, 0, 1, 3, 7]], np.int32)
    outs = run_mil(
        lambda x: [mb.abs(x=x), mb.sign(x=x), mb.square(x=x), mb.exp2(x=x), mb.threshold(x=x, alpha=np.int32(0))],
        {"x": x},
    )
    refs = [np.abs(x), np.sign(x), np.square(x), np.exp2(x).astype(np.int32), np.maximum(x, 0)]
    _check(outs, refs, ["abs", "sign", "square", "exp2", "threshold"])


def test_cast_ios15():
    x = np.array([-2.75, -1.5, -0.25, 0.0, 0.625, 1.5, 3.875], np.float32)  # exact in fp16
    i = np.array([-3, 0, 1, 2, 100000, -7, 5], np.int32)

    def body(x, i):
        return [
            mb.cast(x=x, dtype="int32"),
            mb.cast(x=mb.cast(x=x, dtype="bool"), dtype="int32"),
            mb.cast(x=i, dtype="fp32"),
            mb.cast(x=mb.cast(x=i, dtype="bool"), dtype="fp32"),
            mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"),
            mb.cast(x=x, dtype="fp32"),
        ]

    outs = run_mil(body, {"x": x, "i": i}, target="iOS15")
    refs = [
        np.trunc(x).astype(np.int32),
        (x != 0).astype(np.int32),
        i.astype(np.float32),
        (i != 0).astype(np.float32),
        x,
        x,
    ]
    _check(outs, refs, ["fp32->int32", "fp32->bool", "int32->fp32", "int32->bool", "fp32->fp16", "fp32->fp32"])


def test_cast_ios17_small_ints():
    """iOS17 adds int8/uint8/int16/uint16: int32 -> narrower ints wraps like numpy's astype."""
    i = np.array([-129, -128, -1, 0, 127, 128, 255, 300, 70000], np.int32)
    f = np.array([-3.7, -0.5, 0.0, 0.5, 1.9, 100.2, 120.0, 126.9, 2.0], np.float32)
    small = ["int8", "uint8", "int16", "uint16"]

    def body(i, f):
        outs = [mb.cast(x=mb.cast(x=i, dtype=d), dtype="int32") for d in small]
        outs.append(mb.cast(x=mb.cast(x=f, dtype="int8"), dtype="fp32"))
        outs.append(mb.cast(x=mb.cast(x=mb.abs(x=f), dtype="uint8"), dtype="int32"))
        return outs

    outs = run_mil(body, {"i": i, "f": f}, target="iOS17")
    refs = [i.astype(d).astype(np.int32) for d in (np.int8, np.uint8, np.int16, np.uint16)]
    refs += [np.trunc(f).astype(np.int8).astype(np.float32), np.trunc(np.abs(f)).astype(np.uint8).astype(np.int32)]
    _check(outs, refs, small + ["fp32->int8", "fp32->uint8"])


def test_cast_to_fp16_rounds_when_fp16_is_honoured():
    x = np.array([0.1, 1 / 3, 1000.7], np.float32)
    out, = run_mil(
        lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"), {"x": x}, target="iOS16", compute_precision="float16"
    )
    np.testing.assert_array_equal(out, x.astype(np.float16).astype(np.float32))


def test_fully_static():
    """All inputs const: cast / sqrt / abs run at trace time (size-1 and int consts stay numpy)."""
    ci = np.array([4, -9, 16], np.int32)

    def body(z):
        f = mb.cast(x=mb.abs(x=ci), dtype="fp32")
        return [mb.add(x=z, y=mb.sqrt(x=f)), mb.add(x=z, y=mb.exp(x=np.float32(1.0)))]

    outs = run_mil(body, {"z": np.zeros(3, np.float32)})
    _check(outs, [np.array([2, 3, 4], np.float32), np.full(3, np.e, np.float32)], ["sqrt", "exp"], rtol=1e-6)


def test_fp16_inputs():
    """fp16 program (computed in fp32 on CPU, output rounded to fp16): rtol 1e-3 covers one fp16 rounding."""
    x = RNG.uniform(-2, 2, (4, 6)).astype(np.float16)
    p = RNG.uniform(0.1, 3, (4, 6)).astype(np.float16)
    outs = run_mil(
        lambda x, p: [
            mb.exp(x=x),
            mb.tanh(x=x),
            mb.sqrt(x=p),
            mb.rsqrt(x=p),
            mb.clip(x=x, alpha=np.float16(-1), beta=np.float16(1)),
        ],
        {"x": x, "p": p},
        precision="fp16",
    )
    xd, pd = x.astype(np.float64), p.astype(np.float64)
    refs = [np.exp(xd), np.tanh(xd), np.sqrt(pd), 1 / np.sqrt(pd + 1e-12), np.clip(xd, -1, 1)]
    _check(outs, [r.astype(np.float16) for r in refs], ["exp", "tanh", "sqrt", "rsqrt", "clip"], rtol=1e-3, atol=1e-3)
