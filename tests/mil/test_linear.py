"""linear, matmul and einsum against numpy."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(4)


def _rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _f32(a):
    return np.asarray(a).astype(np.float32)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_linear(target):
    w, bias = _rand(5, 4), _rand(5)
    x1, x2, x3 = _rand(4), _rand(3, 4), _rand(2, 3, 4)
    outs = run_mil(
        lambda x1, x2, x3: [
            mb.linear(x=x1, weight=w, bias=bias),
            mb.linear(x=x2, weight=w),
            mb.linear(x=x3, weight=w, bias=bias),
        ],
        {"x1": x1, "x2": x2, "x3": x3},
        target=target,
    )
    d = w.astype(np.float64)
    refs = [x1 @ d.T + bias, x2 @ d.T, x3 @ d.T + bias]
    _check(outs, [_f32(r) for r in refs], ["rank1", "rank2_nobias", "rank3"], rtol=1e-5, atol=1e-6)


# (x shape, y shape, transpose_x, transpose_y)
MATMUL_CASES = [
    ((2, 3), (3, 4), False, False),
    ((5, 2, 3), (3, 4), False, False),
    ((3, 2), (4, 3), True, True),
    ((2, 1, 3, 4), (5, 2, 4), False, True),  # batch broadcast, y transposed
    ((6, 4, 3), (6, 4, 2), True, False),
    ((4,), (2, 4, 3), False, False),  # rank-1 x: prepended 1 dropped
    ((4,), (3, 4), False, True),
]  # coremltools' type inference rejects a rank-1 y


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_matmul(target):
    feeds, calls, refs = {}, [], []
    for k, (xs, ys, tx, ty) in enumerate(MATMUL_CASES):
        x, y = _rand(*xs), _rand(*ys)
        feeds[f"x{k}"], feeds[f"y{k}"] = x, y
        calls.append((k, tx, ty))
        xm = np.swapaxes(x, -1, -2) if tx and x.ndim > 1 else x
        ym = np.swapaxes(y, -1, -2) if ty and y.ndim > 1 else y
        refs.append(_f32(np.matmul(xm.astype(np.float64), ym)))

    def body(**v):
        return [mb.matmul(x=v[f"x{k}"], y=v[f"y{k}"], transpose_x=tx, transpose_y=ty) for k, tx, ty in calls]

    outs = run_mil(body, feeds, target=target)
    _check(outs, refs, [str(c) for c in MATMUL_CASES], rtol=1e-5, atol=1e-6)


def test_matmul_const_operands():
    """A weight (traced param) on either side, a scalar-like const, and default flags."""
    x = _rand(3, 4)
    w_right, w_left = _rand(4, 5), _rand(2, 3)
    outs = run_mil(
        lambda x: [mb.matmul(x=x, y=w_right), mb.matmul(x=w_left, y=x), mb.matmul(x=x, y=w_right.T, transpose_y=True)],
        {"x": x},
    )
    refs = [x @ w_right.astype(np.float64), w_left.astype(np.float64) @ x, x @ w_right.astype(np.float64)]
    _check(outs, [_f32(r) for r in refs], ["right", "left", "transposed"], rtol=1e-5, atol=1e-6)


def test_int32_matmul_and_linear():
    x = RNG.integers(-5, 5, (2, 3)).astype(np.int32)
    y = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    w = RNG.integers(-5, 5, (2, 3)).astype(np.int32)
    outs = run_mil(lambda x, y: [mb.matmul(x=x, y=y), mb.linear(x=x, weight=w)], {"x": x, "y": y})
    _check(outs, [x @ y, x @ w.T], ["matmul", "linear"])


def test_ios17_mixed_dtypes():
    """iOS17: fp16 weights on fp32 activations; the output keeps the non-const operand's dtype."""
    x = _rand(3, 4)
    w16, b16, y16 = _rand(5, 4, dtype=np.float16), _rand(5, dtype=np.float16), _rand(4, 2, dtype=np.float16)
    outs = run_mil(
        lambda x: [mb.linear(x=x, weight=w16, bias=b16), mb.matmul(x=x, y=y16)],
        {"x": x},
        target="iOS17",
    )
    refs = [x @ w16.astype(np.float64).T + b16, x @ y16.astype(np.float64)]
    _check(outs, [_f32(r) for r in refs], ["linear", "matmul"], rtol=1e-5, atol=1e-6)


def test_einsum():
    """The two supported equation families, another spelling, and size-1 broadcasting of B and H."""
    a4, b4 = _rand(2, 3, 4, 5), _rand(1, 5, 4, 6)
    a3, b3 = _rand(3, 1, 5), _rand(5, 4, 2)
    outs = run_mil(
        lambda a4, b4, a3, b3: [
            mb.einsum(values=(a4, b4), equation="nchw,nwhu->nchu"),
            mb.einsum(values=(a4, b4), equation="abcd,adce->abce"),
            mb.einsum(values=(a3, b3), equation="chw,whr->chr"),
        ],
        {"a4": a4, "b4": b4, "a3": a3, "b3": b3},
    )
    b4x = np.broadcast_to(b4, (2, 5, 4, 6)).astype(np.float64)
    a3x = np.broadcast_to(a3, (3, 4, 5)).astype(np.float64)
    refs = [np.einsum("nchw,nwhu->nchu", a4, b4x), np.einsum("nchw,nwhu->nchu", a4, b4x), np.einsum("chw,whr->chr", a3x, b3)]
    _check(outs, [_f32(r) for r in refs], ["rank4", "rank4_respelled", "rank3"], rtol=1e-5, atol=1e-6)


def test_fully_static():
    """All inputs const int32 (as in shape arithmetic): evaluated at trace time."""
    a = np.array([5, -6], np.int32)
    b = np.array([[1, 2, 0], [3, 4, -1]], np.int32)
    out, = run_mil(lambda z: mb.add(x=z, y=mb.matmul(x=a, y=b)), {"z": np.zeros(3, np.int32)})
    _check([out], [a @ b], ["matmul"])


def test_fp16_inputs():
    """fp16 program (computed in fp32 on CPU, output rounded to fp16): rtol 2e-3 covers the fp16
    rounding of results that are sums of 8 products."""
    x, y = _rand(2, 3, 8, dtype=np.float16), _rand(8, 4, dtype=np.float16)
    w, bias = _rand(5, 8, dtype=np.float16), _rand(5, dtype=np.float16)
    outs = run_mil(
        lambda x, y: [mb.matmul(x=x, y=y), mb.linear(x=x, weight=w, bias=bias)], {"x": x, "y": y}, precision="fp16"
    )
    xd = x.astype(np.float64)
    refs = [xd @ y.astype(np.float64), xd @ w.astype(np.float64).T + bias]
    _check(outs, [r.astype(np.float16) for r in refs], ["matmul", "linear"], rtol=2e-3, atol=2e-3)
