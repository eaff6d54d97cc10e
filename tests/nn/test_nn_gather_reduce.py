"""Gather/scatter, index and reduction layers of the NeuralNetwork front end (mlc/frontends/neuralnetwork/layers/
gather_scatter.py, reduction.py). Specs are built with coremltools' NeuralNetworkBuilder; expected
values come from numpy."""

import numpy as np
import pytest

import mlc
from mlc._errors import MLCError

from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

RNG = np.random.default_rng(0)


def _builder(inputs, exact=True, outputs=("out",)):
    feats = [(name, datatypes.Array(*shape)) for name, shape in inputs]
    return NeuralNetworkBuilder(feats, [(o, None) for o in outputs], disable_rank5_shape_mapping=exact)


def _run(builder, feed):
    return mlc.load(builder.spec).predict({k: np.asarray(v, np.float32) for k, v in feed.items()})


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- gather / scatter ----------------------------------------------------------------------------
def test_gather_negative_indices_and_axis():
    b = _builder([("x", (3, 4, 5)), ("i", (2, 3))])
    b.add_gather("g", ["x", "i"], "out", axis=-2)
    x, i = _rand(3, 4, 5), np.array([[0, -1, 2], [3, -4, 1]])
    out = _run(b, {"x": x, "i": i})["out"]
    np.testing.assert_array_equal(out, np.take(x, i, axis=1))


@pytest.mark.parametrize("mode", ["UPDATE", "ADD", "SUB", "MUL", "DIV", "MAX", "MIN"])
def test_scatter_modes_with_repeated_indices(mode):
    b = _builder([("d", (4, 3)), ("i", (5,)), ("u", (5, 3))])
    b.add_scatter("s", ["d", "i", "u"], "out", axis=0, mode=mode)
    d, u = _rand(4, 3), _rand(5, 3) + 3.0
    i = np.array([1, -1, 1, 0, 3])
    ref = d.copy()
    ops = {
        "UPDATE": lambda a, v: v, "ADD": np.add, "SUB": np.subtract, "MUL": np.multiply,
        "DIV": np.divide, "MAX": np.maximum, "MIN": np.minimum,
    }
    for n, idx in enumerate(i):  # the proto's sequential pseudo-code: the last update wins
        ref[idx] = ops[mode](ref[idx], u[n])
    np.testing.assert_allclose(_run(b, {"d": d, "i": i, "u": u})["out"], ref, rtol=1e-6)


def test_scatter_along_inner_axis():
    b = _builder([("d", (2, 5, 3)), ("i", (4,)), ("u", (2, 4, 3))])
    b.add_scatter("s", ["d", "i", "u"], "out", axis=-2, mode="ADD")
    d, u, i = _rand(2, 5, 3), _rand(2, 4, 3), np.array([4, 0, 4, 2])
    ref = d.copy()
    np.add.at(ref, (slice(None), i), u)
    np.testing.assert_allclose(_run(b, {"d": d, "i": i, "u": u})["out"], ref, rtol=1e-6)


def test_gather_nd_and_scatter_nd():
    b = _builder([("x", (4, 3, 2)), ("i", (5, 2))])
    b.add_gather_nd("g", ["x", "i"], "out")
    x = _rand(4, 3, 2)
    i = np.array([[0, 0], [3, 2], [1, -1], [2, 1], [0, 2]])
    ref = x[i[:, 0], i[:, 1]]
    np.testing.assert_array_equal(_run(b, {"x": x, "i": i})["out"], ref)

    b = _builder([("d", (4, 3)), ("i", (3, 2)), ("u", (3,))])
    b.add_scatter_nd("s", ["d", "i", "u"], "out", mode="ADD")
    d, u = _rand(4, 3), _rand(3)
    i = np.array([[1, 2], [3, 0], [1, 2]])
    ref = d.copy()
    np.add.at(ref, (i[:, 0], i[:, 1]), u)
    np.testing.assert_allclose(_run(b, {"d": d, "i": i, "u": u})["out"], ref, rtol=1e-6)


def test_gather_and_scatter_along_axis():
    b = _builder([("x", (3, 4)), ("i", (3, 2))])
    b.add_gather_along_axis("g", ["x", "i"], "out", axis=1)
    x, i = _rand(3, 4), np.array([[0, 3], [-1, 1], [2, 2]])
    np.testing.assert_array_equal(_run(b, {"x": x, "i": i})["out"], np.take_along_axis(x, i % 4, axis=1))

    b = _builder([("d", (3, 4)), ("i", (2, 4)), ("u", (2, 4))])
    b.add_scatter_along_axis("s", ["d", "i", "u"], "out", axis=0, mode="UPDATE")
    d, u, i = _rand(3, 4), _rand(2, 4), np.array([[0, 1, 2, -1], [1, 2, 0, 0]])
    ref = d.copy()
    np.put_along_axis(ref, i % 3, u, axis=0)
    np.testing.assert_array_equal(_run(b, {"d": d, "i": i, "u": u})["out"], ref)


# -- index layers --------------------------------------------------------------------------------
def test_where_nonzero_runs_eagerly():
    b = _builder([("x", (3, 4))])
    b.add_where_nonzero("w", "x", "out")
    x = RNG.integers(0, 3, (3, 4))
    out = _run(b, {"x": x})["out"]
    np.testing.assert_array_equal(out, np.argwhere(x))
    assert out.shape == (np.count_nonzero(x), 2)


def test_band_part_and_triangles():
    x = _rand(2, 4, 5)
    for add, ref in [
        (lambda b: b.add_matrix_band_part("m", "x", "out", num_lower=1, num_upper=-1), np.triu(x, -1)),
        (lambda b: b.add_lower_triangular("m", "x", "out", k=1), np.tril(x, 1)),
        (lambda b: b.add_upper_triangular("m", "x", "out", k=-2), np.triu(x, -2)),
    ]:
        b = _builder([("x", (2, 4, 5))])
        add(b)
        np.testing.assert_array_equal(_run(b, {"x": x})["out"], ref)


def test_one_hot_axis_values_and_out_of_range():
    b = _builder([("i", (2, 3))])
    b.add_one_hot("o", ["i"], "out", one_hot_vector_size=4, axis=1, on_value=5.0, off_value=-1.0)
    i = np.array([[2, 0, -1], [3, 4, 1]])
    ref = np.where(i[:, None, :] == np.arange(4)[None, :, None], 5.0, -1.0)
    np.testing.assert_array_equal(_run(b, {"i": i})["out"], ref)


def test_one_hot_size_from_second_input():
    b = _builder([("i", (3,)), ("n", (1,))])
    b.add_one_hot("o", ["i", "n"], "out", axis=-1)
    out = _run(b, {"i": [0, 2, 1], "n": [3]})["out"]
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[0, 2, 1]])


@pytest.mark.parametrize("bottom", [False, True])
def test_topk_values_and_float_indices(bottom):
    b = _builder([("x", (3, 6))], outputs=("v", "i"))
    b.add_topk("t", ["x"], ["v", "i"], k=2, axis=-1, use_bottom_k=bottom)
    x = np.array([[1, 5, 5, 0, 2, 9], [3, 3, 3, 3, 3, 3], [0, -1, 4, 4, 8, -2]], np.float32)
    idx = np.argsort(x if bottom else -x, axis=-1, kind="stable")[:, :2]
    out = _run(b, {"x": x})
    np.testing.assert_array_equal(out["i"], idx.astype(np.float32))
    np.testing.assert_array_equal(out["v"], np.take_along_axis(x, idx, axis=-1))


def test_topk_k_from_second_input():
    b = _builder([("x", (7,)), ("k", (1,))], outputs=("v", "i"))
    b.add_topk("t", ["x", "k"], ["v", "i"], axis=0)
    x = _rand(7)
    out = _run(b, {"x": x, "k": [3]})
    np.testing.assert_array_equal(out["v"], np.sort(x)[::-1][:3])


@pytest.mark.parametrize("keep", [True, False])
def test_argmax_argmin(keep):
    x = _rand(3, 4, 5)
    for add, fn in [(NeuralNetworkBuilder.add_argmax, np.argmax), (NeuralNetworkBuilder.add_argmin, np.argmin)]:
        b = _builder([("x", (3, 4, 5))])
        add(b, "a", "x", "out", axis=-2, keepdims=keep)
        ref = fn(x, axis=1, keepdims=keep).astype(np.float32)
        np.testing.assert_array_equal(_run(b, {"x": x})["out"], ref)
    b = _builder([("x", (5,))])  # rank 1 keeps its axis even with removeDim
    b.add_argmax("a", "x", "out", axis=0, keepdims=False)
    assert _run(b, {"x": x[0, 0]})["out"].shape == (1,)


def test_argsort_stable_both_directions():
    x = np.array([[3, 1, 3, 2], [0, 0, 5, -1]], np.float32)
    for desc in [False, True]:
        b = _builder([("x", (2, 4))])
        b.add_argsort("a", "x", "out", axis=1, descending=desc)
        ref = np.argsort(-x if desc else x, axis=1, kind="stable")
        np.testing.assert_array_equal(_run(b, {"x": x})["out"], ref)


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum(exclusive, reverse):
    x = np.array([[4, 6, 7], [1, 2, 3]], np.float32)
    b = _builder([("x", (2, 3))])
    b.add_cumsum("c", ["x"], "out", axis=-1, reverse=reverse, exclusive=exclusive)
    y = x[:, ::-1] if reverse else x
    ref = np.cumsum(y, axis=1) - (y if exclusive else 0)
    ref = ref[:, ::-1] if reverse else ref
    np.testing.assert_allclose(_run(b, {"x": x})["out"], ref)


def test_cumsum_axis_from_second_input():
    x = _rand(2, 3)
    b = _builder([("x", (2, 3)), ("a", (1,))])
    b.add_cumsum("c", ["x", "a"], "out")
    np.testing.assert_allclose(_run(b, {"x": x, "a": [0]})["out"], np.cumsum(x, axis=0), rtol=1e-6)


# -- reductions ----------------------------------------------------------------------------------
ND = {
    "sum": (NeuralNetworkBuilder.add_reduce_sum, lambda x, a, k: np.sum(x, a, keepdims=k)),
    "mean": (NeuralNetworkBuilder.add_reduce_mean, lambda x, a, k: np.mean(x, a, keepdims=k)),
    "prod": (NeuralNetworkBuilder.add_reduce_prod, lambda x, a, k: np.prod(x, a, keepdims=k)),
    "max": (NeuralNetworkBuilder.add_reduce_max, lambda x, a, k: np.max(x, a, keepdims=k)),
    "min": (NeuralNetworkBuilder.add_reduce_min, lambda x, a, k: np.min(x, a, keepdims=k)),
    "l1": (NeuralNetworkBuilder.add_reduce_l1, lambda x, a, k: np.sum(np.abs(x), a, keepdims=k)),
    "l2": (NeuralNetworkBuilder.add_reduce_l2, lambda x, a, k: np.sqrt(np.sum(x * x, a, keepdims=k))),
    "sumsquare": (NeuralNetworkBuilder.add_reduce_sumsquare, lambda x, a, k: np.sum(x * x, a, keepdims=k)),
    "logsum": (NeuralNetworkBuilder.add_reduce_logsum, lambda x, a, k: np.log(np.sum(x, a, keepdims=k))),
    "logsumexp": (NeuralNetworkBuilder.add_reduce_logsumexp, lambda x, a, k: np.log(np.sum(np.exp(x), a, keepdims=k))),
}


def test_nd_reductions():
    """Every ND reduction over some axes (keepDims), one axis (squeezed) and all axes (shape (1,))."""
    x = RNG.uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)
    configs = [((0, -1), True), ((1,), False), (None, False)]
    cases = {f"{name}_{n}": (name, axes, keep) for name in ND for n, (axes, keep) in enumerate(configs)}
    b = _builder([("x", (2, 3, 4))], outputs=tuple(cases))
    for out, (name, axes, keep) in cases.items():
        ND[name][0](b, out, "x", out, axes=axes, keepdims=keep, reduce_all=axes is None)
    got = _run(b, {"x": x})
    for out, (name, axes, keep) in cases.items():
        expected = np.asarray(ND[name][1](x.astype(np.float64), axes, keep), np.float32)
        if axes is None:
            assert got[out].shape == (1,), out
            expected = expected.reshape(1)
        np.testing.assert_allclose(got[out], expected, rtol=1e-5, err_msg=out)


LEGACY = {
    "sum": lambda x, a: np.sum(x, a, keepdims=True),
    "avg": lambda x, a: np.mean(x, a, keepdims=True),
    "prod": lambda x, a: np.prod(x, a, keepdims=True),
    "logsum": lambda x, a: np.sum(np.log(x + 1e-6), a, keepdims=True),
    "sumsquare": lambda x, a: np.sum(x * x, a, keepdims=True),
    "L1": lambda x, a: np.sum(np.abs(x), a, keepdims=True),
    "L2": lambda x, a: np.sqrt(np.sum(x * x, a, keepdims=True)),
    "max": lambda x, a: np.max(x, a, keepdims=True),
    "min": lambda x, a: np.min(x, a, keepdims=True),
    "argmax": lambda x, a: np.argmax(x, a[0], keepdims=True).astype(np.float32),
}
LEGACY_AXES = {"CHW": (-3, -2, -1), "HW": (-2, -1), "C": (-3,), "H": (-2,), "W": (-1,)}


@pytest.mark.parametrize("exact", [False, True])
def test_legacy_reduce_in_both_worlds(exact):
    """Every mode over every axis choice, in one network per shape world."""
    x = RNG.uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    cases = {
        f"{mode}_{axis}": (mode, axis) for mode in LEGACY for axis in LEGACY_AXES
        if not (mode == "argmax" and len(LEGACY_AXES[axis]) > 1)
    }
    b = _builder([("x", (2, 3, 4))], exact=exact, outputs=tuple(cases))
    for out, (mode, axis) in cases.items():
        b.add_reduce(out, "x", out, axis=axis, mode=mode)
    got = _run(b, {"x": x})
    for out, (mode, axis) in cases.items():
        expected = np.asarray(LEGACY[mode](x.astype(np.float64), LEGACY_AXES[axis]), np.float32)
        if not exact:
            assert got[out].shape == (1, 1) + expected.shape, out  # [Seq, Batch, C, H, W]
        np.testing.assert_allclose(got[out].reshape(expected.shape), expected, rtol=1e-5, err_msg=out)


def test_legacy_reduce_on_a_rank5_sequence_input():
    b = _builder([("x", (3, 2, 2))], exact=False)
    b.add_reduce("r", "x", "out", axis="HW", mode="max")
    x = _rand(4, 1, 3, 2, 2)  # [Seq, Batch, C, H, W] passed whole
    np.testing.assert_array_equal(_run(b, {"x": x})["out"], x.max(axis=(-2, -1), keepdims=True))


# -- bad parameters ------------------------------------------------------------------------------
def _expect_error(builder, feed, match):
    with pytest.raises(MLCError, match=match):
        _run(builder, feed)


def test_bad_parameters_raise_mlc_errors():
    b = _builder([("x", (3, 4)), ("i", (2,))])
    b.add_gather("g", ["x", "i"], "out", axis=2)
    _expect_error(b, {"x": _rand(3, 4), "i": [0, 1]}, "axis 2 is out of range")

    b = _builder([("x", (5,))], outputs=("v", "i"))
    b.add_topk("t", ["x"], ["v", "i"], k=6, axis=0)
    _expect_error(b, {"x": _rand(5)}, r"K = 6")

    b = _builder([("x", (2, 3))])
    b.add_argsort("a", "x", "out", axis=2)
    _expect_error(b, {"x": _rand(2, 3)}, "axis 2 must lie")

    b = _builder([("x", (4,))])
    b.add_lower_triangular("t", "x", "out")
    _expect_error(b, {"x": _rand(4)}, "rank at least 2")

    b = _builder([("x", (2, 3))])
    b.add_reduce_sum("r", "x", "out", axes=(0, 3))
    _expect_error(b, {"x": _rand(2, 3)}, "axis 3 is out of range")

    b = _builder([("x", (2, 3, 4))], exact=True)
    b.add_reduce("r", "x", "out", axis="CHW", mode="argmax")
    _expect_error(b, {"x": _rand(2, 3, 4)}, "ARGMAX")

    b = _builder([("x", (4,))], exact=True)
    b.add_reduce("r", "x", "out", axis="HW", mode="sum")
    _expect_error(b, {"x": _rand(4)}, "rank 2 at least")
