"""Elementwise binary ops against numpy (and coremltools' own value inference for integers)."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)
TARGETS = ["iOS15", "iOS17"]

ARITH = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "maximum": np.maximum,
    "minimum": np.minimum,
}
COMPARE = {
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}
LOGICAL = {"logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor}


def _nonzero(shape):
    """Values away from zero, of both signs."""
    return (RNG.uniform(0.5, 2.0, shape) * RNG.choice([-1, 1], shape)).astype(np.float32)


@pytest.mark.parametrize("target", TARGETS)
def test_float_arithmetic_broadcast(target):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32) * 3
    y = _nonzero((3, 1))
    base = np.abs(x) + 0.5
    outs = run_mil(
        lambda x, y, base: [getattr(mb, n)(x=x, y=y) for n in ARITH] + [mb.pow(x=base, y=y)],
        {"x": x, "y": y, "base": base},
        target=target,
    )
    refs = [f(x, y) for f in ARITH.values()] + [np.power(base, y)]
    _check(outs, refs, list(ARITH) + ["pow"], rtol=1e-6, atol=1e-6)


def test_float_with_const_operands():
    """A scalar const and a traced (param) const on either side."""
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    w = _nonzero((4,))
    outs = run_mil(
        lambda x: [mb.sub(x=np.float32(1.5), y=x), mb.real_div(x=w, y=x), mb.mul(x=x, y=w), mb.pow(x=x, y=np.float32(2))],
        {"x": x},
    )
    _check(outs, [1.5 - x, w / x, x * w, x**2], ["sub", "real_div", "mul", "pow"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_comparisons_and_logical(target):
    x = RNG.integers(-3, 4, (2, 5)).astype(np.float32)
    y = RNG.integers(-3, 4, (5,)).astype(np.float32)
    a = RNG.random((2, 5)) > 0.5
    b = RNG.random((1, 5)) > 0.5

    def body(x, y, a, b):
        bools = [getattr(mb, n)(x=x, y=y) for n in COMPARE] + [getattr(mb, n)(x=a, y=b) for n in LOGICAL]
        return [mb.cast(x=v, dtype="int32") for v in bools]

    outs = run_mil(body, {"x": x, "y": y, "a": a, "b": b}, target=target)
    refs = [f(x, y).astype(np.int32) for f in COMPARE.values()] + [f(a, b).astype(np.int32) for f in LOGICAL.values()]
    _check(outs, refs, list(COMPARE) + list(LOGICAL))


def test_int32_semantics():
    """floor_div rounds toward -inf, mod takes the divisor's sign, real_div truncates toward zero."""
    x = np.array([[-7, -6, -1, 0, 1, 6, 7, 9]], np.int32)
    y = np.array([[2], [-2], [3], [-4]], np.int32)
    names = ["add", "sub", "mul", "floor_div", "mod", "real_div", "maximum", "minimum", "pow"]
    outs = run_mil(
        lambda x, y: [getattr(mb, n)(x=x, y=y) for n in names[:-1]] + [mb.pow(x=x, y=np.int32(3))],
        {"x": x, "y": y},
    )
    trunc = (np.sign(x) * np.sign(y) * (np.abs(x) // np.abs(y))).astype(np.int32)
    refs = [x + y, x - y, x * y, np.floor_divide(x, y), np.mod(x, y), trunc, np.maximum(x, y), np.minimum(x, y), x**3]
    _check(outs, refs, names)
    assert outs[names.index("mod")][0, 0] == 1 and outs[names.index("mod")][1, 0] == -1  # -7 % 2, -7 % -2
    assert outs[names.index("real_div")][0, 0] == -3  # -7 / 2 -> -3, not -4


def test_fully_static_int_matches_value_inference():
    """All inputs const (shape arithmetic): folded at trace time; the oracle is coremltools' value inference."""
    cx = np.array([-7, -5, 0, 5, 7, 12], np.int32)
    cy = np.array([2, -3, 4, 3, -2, 5], np.int32)
    names = ["floor_div", "mod", "real_div", "sub", "greater"]
    inferred = []

    def body(z):
        outs = []
        for name in names:
            v = getattr(mb, name)(x=cx, y=cy)
            if name == "greater":
                v = mb.cast(x=v, dtype="int32")
            inferred.append(np.asarray(v.val).astype(np.int32))
            outs.append(mb.add(x=z, y=v))
        return outs

    outs = run_mil(body, {"z": np.zeros(6, np.int32)})
    _check(outs, inferred, names)


def test_fp16_inputs():
    """fp16 program (computed in fp32 on CPU, output rounded to fp16): rtol 1e-3 covers one fp16 rounding."""
    x = RNG.standard_normal((4, 5)).astype(np.float16)
    y = _nonzero((5,)).astype(np.float16)
    names = ["add", "mul", "real_div", "maximum"]
    outs = run_mil(lambda x, y: [getattr(mb, n)(x=x, y=y) for n in names], {"x": x, "y": y}, precision="fp16")
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    refs = [(xf + yf), (xf * yf), (xf / yf), np.maximum(xf, yf)]
    _check(outs, [r.astype(np.float16) for r in refs], names, rtol=1e-3, atol=1e-3)


def test_fp16_honoured():
    """compute_precision="float16" keeps fp16 inside; scalar consts must not promote to fp32."""
    x = RNG.standard_normal((3, 4)).astype(np.float16)
    y = _nonzero((4,)).astype(np.float16)
    outs = run_mil(
        lambda x, y: [mb.add(x=x, y=y), mb.real_div(x=x, y=np.float16(4))],
        {"x": x, "y": y},
        precision="fp16",
        compute_precision="float16",
    )
    _check(outs, [x + y, x / np.float16(4)], ["add", "real_div"], rtol=1e-3, atol=1e-3)
