"""Elementwise NeuralNetwork layers: legacy add/multiply/average/max/min, scale, bias, unary,
clip, rounding, trigonometric, erf, gelu, clampedReLU, comparisons, logical layers, the
broadcastable binary layers and whereBroadcastable, in both shape worlds. Expected values come
from numpy and scipy."""

import numpy as np
import pytest
import scipy.special

import mlc
from mlc._errors import MLCError, MLCParametersError

from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

RNG = np.random.default_rng(0)


def _predict(builder, inputs):
    return mlc.load(builder.spec).predict(inputs)


def _builder(inputs, outputs, exact):
    feats = [(name, datatypes.Array(*shape)) for name, shape in inputs.items()]
    outs = [(name, None) for name in outputs]
    return NeuralNetworkBuilder(feats, outs, disable_rank5_shape_mapping=exact)


# -- legacy add, multiply, average, max, min --------------------------------------------------
def test_legacy_elementwise_rank5_world():
    """(C, H, W) against (C,) -> [1, 1, C, 1, 1]: broadcast along H and W; one input uses alpha."""
    names = ["add", "mul", "max", "min", "ave", "add1", "mul1"]
    b = NeuralNetworkBuilder(
        [("a", datatypes.Array(3, 4, 5)), ("c", datatypes.Array(3))], [(n, datatypes.Array(3, 4, 5)) for n in names]
    )
    b.add_elementwise("add", ["a", "c"], "add", "ADD")
    b.add_elementwise("mul", ["a", "c"], "mul", "MULTIPLY")
    b.add_elementwise("max", ["a", "c"], "max", "MAX")
    b.add_elementwise("min", ["a", "c"], "min", "MIN")
    b.add_elementwise("ave", ["a", "c", "a"], "ave", "AVE")
    b.add_elementwise("add1", ["a"], "add1", "ADD", alpha=2.5)
    b.add_elementwise("mul1", ["a"], "mul1", "MULTIPLY", alpha=-3.0)
    a = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    c = RNG.standard_normal(3).astype(np.float32)
    cb = c[:, None, None]
    out = _predict(b, {"a": a, "c": c})
    expected = {
        "add": a + cb, "mul": a * cb, "max": np.maximum(a, cb), "min": np.minimum(a, cb),
        "ave": (2 * a + cb) / 3, "add1": a + 2.5, "mul1": -3.0 * a,
    }
    for name, value in expected.items():
        assert out[name].shape == (3, 4, 5), name
        np.testing.assert_allclose(out[name], value, rtol=1e-6, atol=1e-6, err_msg=name)


def test_legacy_elementwise_exact_world():
    """[B, C, H, W] against [B, 1, H, W] and [B, 1, 1, 1]."""
    shapes = {"a": (2, 3, 4, 5), "b": (2, 1, 4, 5), "s": (2, 1, 1, 1)}
    b = _builder(shapes, ["add", "mul", "max", "min", "ave"], exact=True)
    b.add_elementwise("add", ["a", "b", "s"], "add", "ADD")
    b.add_elementwise("mul", ["a", "s"], "mul", "MULTIPLY")
    b.add_elementwise("max", ["a", "b"], "max", "MAX")
    b.add_elementwise("min", ["a", "b", "s"], "min", "MIN")
    b.add_elementwise("ave", ["a", "b"], "ave", "AVE")
    x = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    a, bb, s = x["a"], x["b"], x["s"]
    out = _predict(b, x)
    np.testing.assert_allclose(out["add"], a + bb + s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["mul"], a * s, rtol=1e-6)
    np.testing.assert_array_equal(out["max"], np.maximum(a, bb))
    np.testing.assert_array_equal(out["min"], np.minimum(np.minimum(a, bb), s))
    np.testing.assert_allclose(out["ave"], (a + bb) / 2, rtol=1e-6, atol=1e-6)


# -- scale, bias ------------------------------------------------------------------------------
def _broadcastable_chw(v):
    """A scale/bias weight of shape [1], [C], [1, H, W] or [C, H, W] as numpy broadcasts it on [.., C, H, W]."""
    if v.shape == (1,):
        return v[0]
    return v.reshape(-1, 1, 1) if v.ndim == 1 else v


@pytest.mark.parametrize("exact", [False, True])
def test_scale_and_bias_shapes(exact):
    C, H, W = 3, 4, 5
    in_shape = (2, C, H, W) if exact else (C, H, W)
    shapes = {"one": (1,), "c": (C,), "hw": (1, H, W), "chw": (C, H, W)}
    vals = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    bias_of = {"one": "c", "c": "hw", "hw": "chw", "chw": "one"}  # scale and bias of different shapes
    b = _builder({"x": in_shape}, [f"scale_{k}" for k in shapes] + [f"bias_{k}" for k in shapes], exact)
    for k, shape in shapes.items():
        kb = bias_of[k]
        b.add_scale(f"scale_{k}", vals[k], vals[kb], True, "x", f"scale_{k}", list(shape), list(shapes[kb]))
        b.add_bias(f"bias_{k}", vals[k], "x", f"bias_{k}", shape_bias=list(shape))
    x = RNG.standard_normal(in_shape).astype(np.float32)
    out = _predict(b, {"x": x})
    for k in shapes:
        scale, bias = _broadcastable_chw(vals[k]), _broadcastable_chw(vals[bias_of[k]])
        got_scale, got_bias = out[f"scale_{k}"].reshape(x.shape), out[f"bias_{k}"].reshape(x.shape)
        np.testing.assert_allclose(got_scale, x * scale + bias, rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(got_bias, x + scale, rtol=1e-5, atol=1e-6, err_msg=k)


def test_scale_without_bias():
    b = _builder({"x": (2, 3, 4)}, ["y"], exact=True)
    b.add_scale("s", np.array([1.0, 2.0], np.float32), None, False, "x", "y", shape_scale=[2])
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(_predict(b, {"x": x})["y"], x * np.array([1.0, 2.0]).reshape(2, 1, 1), rtol=1e-6)


def test_scale_of_invalid_shape_is_refused():
    b = _builder({"x": (2, 3, 4)}, ["y"], exact=True)
    b.add_scale("s", np.ones(4, np.float32), None, False, "x", "y", shape_scale=[2, 2])  # must be rank 1 or 3
    with pytest.raises(MLCParametersError, match="shapeScale"):
        _predict(b, {"x": np.zeros((2, 3, 4), np.float32)})


def test_bias_that_does_not_match_the_input_is_refused():
    b = _builder({"x": (2, 3, 4)}, ["y"], exact=True)
    b.add_bias("b", np.ones(5, np.float32), "x", "y", shape_bias=[5])  # C is 2
    with pytest.raises(MLCParametersError, match="does not match"):
        _predict(b, {"x": np.zeros((2, 3, 4), np.float32)})


# -- unary and one-input math -----------------------------------------------------------------
def test_unary_functions_with_shift_scale_epsilon():
    x = RNG.uniform(0.5, 3.0, size=(2, 3, 4)).astype(np.float32)
    cases = {
        "sqrt": (dict(), np.sqrt(x)),
        "rsqrt": (dict(epsilon=1e-3), 1 / np.sqrt(x + 1e-3)),
        "inverse": (dict(epsilon=0.5, scale=2.0), 1 / (2 * x + 0.5)),
        "power": (dict(alpha=3.0, shift=-1.0), (x - 1.0) ** 3),
        "exp": (dict(scale=0.5, shift=1.0), np.exp(0.5 * x + 1.0)),
        "log": (dict(epsilon=1.0), np.log(x + 1.0)),  # log adds epsilon (MIL log on the NN backend)
        "abs": (dict(shift=-2.0), np.abs(x - 2.0)),
        "threshold": (dict(alpha=1.5), np.maximum(x, 1.5)),
    }
    b = _builder({"x": x.shape}, list(cases), exact=True)
    for mode, (kw, _) in cases.items():
        b.add_unary(mode, "x", mode, mode=mode, **kw)
    # scale = 0 means 1 (UnaryFunctionLayerParams.scale)
    b.spec.neuralNetwork.layers[-1].unary.scale = 0.0
    out = _predict(b, {"x": x})
    for mode, (_, expected) in cases.items():
        np.testing.assert_allclose(out[mode], expected, rtol=1e-5, atol=1e-6, err_msg=mode)


def test_unary_epsilon_defaults_to_1e_6():
    b = _builder({"x": (4,)}, ["y"], exact=True)
    b.add_unary("inv", "x", "y", mode="inverse", epsilon=0.0)
    x = np.array([1.0, 2.0, 4.0, 1e-6], np.float32)
    np.testing.assert_allclose(_predict(b, {"x": x})["y"], 1 / (x + 1e-6), rtol=1e-5)


def test_math_layers_rank5_world():
    x = RNG.uniform(-0.9, 0.9, size=(3, 2, 4)).astype(np.float32)
    x[1, 0, 0] = 0.0  # sign(0) = 0
    big = x * 10
    big[0, 0, :] = [0.5, -0.5, 1.5, -2.5]  # half-way cases round to even
    inputs = {"x": x, "big": big, "absbig": np.abs(big) + 1, "x3": x * 3}
    layers = {
        "ceil": (np.ceil, "big"), "floor": (np.floor, "big"), "round": (np.around, "big"), "sign": (np.sign, "x"),
        "exp2": (np.exp2, "big"), "sin": (np.sin, "big"), "cos": (np.cos, "big"), "tan": (np.tan, "x"),
        "asin": (np.arcsin, "x"), "acos": (np.arccos, "x"), "atan": (np.arctan, "big"), "sinh": (np.sinh, "big"),
        "cosh": (np.cosh, "big"), "tanh": (np.tanh, "big"), "asinh": (np.arcsinh, "big"),
        "acosh": (np.arccosh, "absbig"), "atanh": (np.arctanh, "x"), "erf": (scipy.special.erf, "x3"),
    }
    b = NeuralNetworkBuilder(
        [(k, datatypes.Array(*v.shape)) for k, v in inputs.items()], [(n, datatypes.Array(*x.shape)) for n in layers]
    )
    for name, (_, src) in layers.items():
        getattr(b, f"add_{name}")(name, src, name)
    out = _predict(b, inputs)
    for name, (fn, src) in layers.items():
        assert out[name].shape == x.shape
        np.testing.assert_allclose(out[name], fn(inputs[src]), rtol=2e-5, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(out["round"][0, 0], [0.0, -0.0, 2.0, -2.0])


def test_clip_gelu_clamped_relu():
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(2, 3, 4)
    modes = ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"]
    b = _builder({"x": x.shape}, ["clip", "crelu"] + modes, exact=True)
    b.add_clip("clip", "x", "clip", min_value=-1.0, max_value=2.0)
    b.add_clamped_relu("crelu", "x", "crelu", alpha=0.1, beta=2.5)
    for mode in modes:
        b.add_gelu(mode, "x", mode, mode=mode)
    out = _predict(b, {"x": x})
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(out["clip"], np.clip(x, -1.0, 2.0))
    np.testing.assert_allclose(out["crelu"], np.minimum(2.5, np.where(x >= 0, x, 0.1 * x)), rtol=1e-6)
    exact = 0.5 * x64 * (1 + scipy.special.erf(x64 / np.sqrt(2)))
    tanh = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    np.testing.assert_allclose(out["EXACT"], exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["TANH_APPROXIMATION"], tanh, rtol=1e-5, atol=1e-6)
    sigmoid = x64 * scipy.special.expit(1.702 * x64)
    np.testing.assert_allclose(out["SIGMOID_APPROXIMATION"], sigmoid, rtol=1e-5, atol=1e-6)


# -- comparisons, logical ---------------------------------------------------------------------
def test_comparisons_and_logical_broadcast():
    a = RNG.integers(-1, 2, size=(2, 3, 4)).astype(np.float32)
    c = RNG.integers(-1, 2, size=(3, 1)).astype(np.float32)
    names = ["gt", "ge", "lt", "le", "eq", "ne", "and", "or", "xor", "not"]
    b = _builder({"a": a.shape, "c": c.shape}, names, exact=True)
    b.add_greater_than("gt", ["a", "c"], "gt")
    b.add_greater_than("ge", ["a", "c"], "ge", use_greater_than_equal=True)
    b.add_less_than("lt", ["a", "c"], "lt")
    b.add_less_than("le", ["a", "c"], "le", use_less_than_equal=True)
    b.add_equal("eq", ["a", "c"], "eq")
    b.add_not_equal("ne", ["a", "c"], "ne")
    for mode in ("AND", "OR", "XOR"):
        b.add_logical(mode.lower(), ["a", "c"], mode.lower(), mode)
    b.add_logical("not", ["a"], "not", "NOT")
    out = _predict(b, {"a": a, "c": c})
    expected = {
        "gt": a > c, "ge": a >= c, "lt": a < c, "le": a <= c, "eq": a == c, "ne": a != c,
        "and": np.logical_and(a, c), "or": np.logical_or(a, c), "xor": np.logical_xor(a, c), "not": a == 0,
    }
    for name, value in expected.items():
        np.testing.assert_array_equal(out[name], value.astype(np.float32), err_msg=name)


def test_comparisons_with_alpha_rank5_world():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0], np.float32)
    names = ["gt", "ge", "lt", "le", "eq", "ne"]
    b = NeuralNetworkBuilder([("x", datatypes.Array(5))], [(n, datatypes.Array(5)) for n in names])
    b.add_greater_than("gt", ["x"], "gt", alpha=0.5)
    b.add_greater_than("ge", ["x"], "ge", use_greater_than_equal=True, alpha=0.5)
    b.add_less_than("lt", ["x"], "lt", alpha=1.0)
    b.add_less_than("le", ["x"], "le", use_less_than_equal=True, alpha=1.0)
    b.add_equal("eq", ["x"], "eq", alpha=0.0)
    b.add_not_equal("ne", ["x"], "ne", alpha=2.0)
    out = _predict(b, {"x": x})
    expected = {"gt": x > 0.5, "ge": x >= 0.5, "lt": x < 1, "le": x <= 1, "eq": x == 0, "ne": x != 2}
    for name, value in expected.items():
        np.testing.assert_array_equal(out[name].reshape(-1), value.astype(np.float32), err_msg=name)


# -- broadcastable binary layers, where -------------------------------------------------------
def test_broadcastable_layers_and_where():
    a = RNG.uniform(-3, 3, size=(2, 1, 4)).astype(np.float32)
    c = RNG.uniform(0.5, 2, size=(3, 1)).astype(np.float32) * np.sign(RNG.standard_normal((3, 1))).astype(np.float32)
    cond = (RNG.standard_normal((3, 4)) > 0).astype(np.float32)
    ops = {
        "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
        "floor_div": np.floor_divide, "mod": np.mod, "max": np.maximum, "min": np.minimum,
    }
    shapes = {"a": a.shape, "c": c.shape, "cond": cond.shape, "pa": a.shape}
    b = _builder(shapes, list(ops) + ["pow", "where"], exact=True)
    for name in ops:
        getattr(b, f"add_{name}_broadcastable")(name, ["a", "c"], name)
    b.add_pow_broadcastable("pow", ["pa", "c"], "pow")
    b.add_where_broadcastable("where", ["cond", "a", "c"], "where")
    pa = np.abs(a) + 0.1
    out = _predict(b, {"a": a, "c": c, "cond": cond, "pa": pa})
    for name, fn in ops.items():
        assert out[name].shape == (2, 3, 4), name
        np.testing.assert_allclose(out[name], fn(a, c), rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(out["pow"], np.power(pa, c), rtol=1e-5)
    np.testing.assert_array_equal(out["where"], np.where(cond != 0, a, c))


# -- invalid parameters -----------------------------------------------------------------------
def test_clip_with_min_above_max_is_refused():
    b = _builder({"x": (3,)}, ["y"], exact=True)
    b.add_clip("clip", "x", "y", min_value=2.0, max_value=1.0)
    with pytest.raises(MLCParametersError, match="minVal"):
        _predict(b, {"x": np.zeros(3, np.float32)})


def test_logical_and_with_one_input_is_refused():
    b = _builder({"x": (3,)}, ["y"], exact=True)
    b.add_logical("and", ["x", "x"], "y", "AND")
    del b.spec.neuralNetwork.layers[0].input[1]  # the builder refuses to write this
    with pytest.raises(MLCParametersError, match="2 inputs"):
        _predict(b, {"x": np.zeros(3, np.float32)})


def test_unknown_unary_and_gelu_modes_are_refused():
    for kind in ("unary", "gelu"):
        b = _builder({"x": (3,)}, ["y"], exact=True)
        if kind == "unary":
            b.add_unary("u", "x", "y", mode="abs")
            b.spec.neuralNetwork.layers[0].unary.type = 42
        else:
            b.add_gelu("g", "x", "y")
            b.spec.neuralNetwork.layers[0].gelu.mode = 42
        with pytest.raises(MLCError, match="unknown"):
            _predict(b, {"x": np.zeros(3, np.float32)})
