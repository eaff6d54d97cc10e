"""Reductions and arg-reductions against numpy (value-inference semantics for int32)."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(3)

REDUCTIONS = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda x, axis, keepdims: np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims)),
}


@pytest.mark.parametrize(
    "target, shape, axes, keep_dims",
    [
        ("iOS15", (2, 3, 4), None, False),
        ("iOS15", (2, 3, 4), [1], True),
        ("iOS17", (2, 3, 4), [-1, 0], False),
        ("iOS17", (2, 3, 4, 2), [0, 2, 3], True),
        ("iOS17", (5,), [0], False),
    ],
)
def test_float_reductions(target, shape, axes, keep_dims):
    x = RNG.uniform(-2, 2, shape).astype(np.float32)
    p = RNG.uniform(0.5, 1.5, shape).astype(np.float32)  # positive (log_sum), products near 1
    kw = {} if axes is None else {"axes": np.array(axes, np.int32)}
    if keep_dims:
        kw["keep_dims"] = True
    positive = {"reduce_log_sum", "reduce_prod"}
    outs = run_mil(
        lambda x, p: [getattr(mb, n)(x=p if n in positive else x, **kw) for n in REDUCTIONS], {"x": x, "p": p}, target=target
    )
    ax = None if axes is None else tuple(axes)
    # Core ML returns a scalar output as shape (1,) (coremltools' testing_utils.compare_shapes).
    refs = [
        np.atleast_1d(f((p if n in positive else x).astype(np.float64), axis=ax, keepdims=keep_dims)).astype(np.float32)
        for n, f in REDUCTIONS.items()
    ]
    _check(outs, refs, list(REDUCTIONS), rtol=2e-6, atol=1e-6)


def test_log_sum_exp_large_values():
    x = np.array([[1000.0, 1000.0, -5.0], [-1000.0, -1001.0, -1002.0]], np.float32)
    out, = run_mil(lambda x: mb.reduce_log_sum_exp(x=x, axes=[1]), {"x": x})
    d = x.astype(np.float64)
    m = d.max(axis=1)
    np.testing.assert_allclose(out, (m + np.log(np.exp(d - m[:, None]).sum(axis=1))).astype(np.float32), rtol=1e-6)


def test_int32_reductions_cast_back():
    """Value inference casts results to x's dtype: int mean / norms truncate toward zero."""
    x = np.array([[-1, -2, 4, 7], [3, -8, 0, -2], [5, 5, -3, 1]], np.int32)
    names = [n for n in REDUCTIONS if n not in ("reduce_log_sum", "reduce_log_sum_exp")]
    outs = run_mil(lambda x: [getattr(mb, n)(x=x, axes=[1]) for n in names], {"x": x})
    refs = [np.asarray(REDUCTIONS[n](x.astype(np.float64), axis=(1,), keepdims=False)).astype(np.int32) for n in names]
    _check(outs, refs, names)
    np.testing.assert_array_equal(outs[1], [2, -1, 2])  # means 2.0, -1.75 (truncated, not floored), 2.0


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_arg_reductions(target):
    x = RNG.permutation(60).reshape(3, 4, 5).astype(np.float32)  # no ties
    i = RNG.permutation(12).reshape(3, 4).astype(np.int32) - 6

    def body(x, i):
        return [
            mb.reduce_argmax(x=x),
            mb.reduce_argmin(x=x),
            mb.reduce_argmax(x=x, axis=0, keep_dims=True),
            mb.reduce_argmin(x=x, axis=-2),
            mb.reduce_argmax(x=i, axis=1, keep_dims=True),
        ]

    outs = run_mil(body, {"x": x, "i": i}, target=target)
    refs = [
        np.argmax(x, -1),
        np.argmin(x, -1),
        np.argmax(x, 0)[None],
        np.argmin(x, -2),
        np.argmax(i, 1)[:, None],
    ]
    _check(outs, [r.astype(np.int32) for r in refs], ["argmax", "argmin", "argmax0_keep", "argmin-2", "argmax_int"])


def test_arg_reductions_uint16_output_ios17():
    x = RNG.permutation(24).reshape(2, 12).astype(np.float32)

    def body(x):
        return [
            mb.cast(x=mb.reduce_argmax(x=x, output_dtype="uint16"), dtype="int32"),
            mb.cast(x=mb.reduce_argmin(x=x, axis=0, output_dtype="uint16"), dtype="int32"),
            mb.reduce_argmin(x=x, output_dtype="int32"),
        ]

    outs = run_mil(body, {"x": x}, target="iOS17")
    refs = [np.argmax(x, -1), np.argmin(x, 0), np.argmin(x, -1)]
    _check(outs, [r.astype(np.int32) for r in refs], ["argmax_u16", "argmin_u16", "argmin_i32"])


def test_fully_static():
    """All inputs const (shape arithmetic): number of elements and last-dim argmax at trace time."""
    shape = np.array([2, 3, 7], np.int32)

    def body(z):
        return [mb.add(x=z, y=mb.reduce_prod(x=shape)), mb.add(x=z, y=mb.reduce_argmax(x=shape))]

    outs = run_mil(body, {"z": np.zeros(1, np.int32)})
    _check(outs, [np.array([42], np.int32), np.array([2], np.int32)], ["reduce_prod", "reduce_argmax"])


def test_fp16_inputs():
    """fp16 program (computed in fp32 on CPU, output rounded to fp16): rtol 1e-3 covers one fp16 rounding."""
    x = RNG.uniform(-2, 2, (3, 16)).astype(np.float16)
    names = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_l2_norm", "reduce_log_sum_exp"]
    outs = run_mil(lambda x: [getattr(mb, n)(x=x, axes=[-1]) for n in names], {"x": x}, precision="fp16")
    refs = [REDUCTIONS[n](x.astype(np.float64), axis=(1,), keepdims=False).astype(np.float16) for n in names]
    _check(outs, refs, names, rtol=1e-3, atol=2e-3)
