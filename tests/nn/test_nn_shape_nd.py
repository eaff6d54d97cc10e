"""Rank-N shape and tensor layers (mlc/frontends/neuralnetwork/layers/shape_nd.py): getShape, loadConstantND, fill*,
broadcastTo*, squeeze, expandDims, flattenTo2D, reshape*, transpose, tile, stack, concatND,
splitND, slice*, slidingWindows, reverse, reverseSeq, constantPad, range*, copy. Expected values
come from numpy."""

import jax
import numpy as np
import pytest

import mlc
from mlc._errors import MLCError, MLCParametersError


from mlc.testing.nn_specs import network, predict as _predict  # noqa: E402

RNG = np.random.default_rng(0)


def _builder(inputs, outputs, exact=True):
    return network(inputs, outputs, exact=exact)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _check(out, expected):
    for name, value in expected.items():
        assert np.shape(out[name]) == np.shape(value), (name, np.shape(out[name]), np.shape(value))
        np.testing.assert_allclose(out[name], value, rtol=1e-6, atol=1e-6, err_msg=name)


def test_shape_fill_range_constant():
    b = _builder({"x": (2, 3, 4)}, ["shape", "like", "static", "dyn", "rs", "const", "copy"])
    b.add_get_shape("shape", "x", "shape")
    b.add_fill_like("like", "x", "like", value=2.5)
    b.add_fill_static("static", "static", output_shape=[3, 2], value=-1.0)
    b.add_fill_dynamic("dyn", "shape", "dyn", value=7.0)
    b.add_range_static("rs", "rs", end=5, start=-1.5, step=1.5)
    b.add_load_constant_nd("const", "const", constant_value=np.arange(6.0).reshape(2, 3), shape=[2, 3])
    b.add_copy("copy", "x", "copy")
    x = _rand(2, 3, 4)
    out = _predict(b, {"x": x})
    _check(out, {
        "shape": np.array([2, 3, 4], np.float32), "like": np.full((2, 3, 4), 2.5), "static": np.full((3, 2), -1.0),
        "dyn": np.full((2, 3, 4), 7.0), "rs": np.arange(-1.5, 5, 1.5), "const": np.arange(6.0).reshape(2, 3), "copy": x,
    })


@pytest.mark.parametrize("n", [1, 2, 3])
def test_range_dynamic(n):
    names = ["end", "start", "step"][:n]
    b = _builder({k: (1,) for k in names}, ["out"])
    b.add_range_dynamic("r", names, "out", start=1, step=2)
    vals = {"end": 10.0, "start": -3.0, "step": 0.75}
    out = _predict(b, {k: np.array([vals[k]], np.float32) for k in names})
    start = vals["start"] if n > 1 else 1
    step = vals["step"] if n > 2 else 2
    _check(out, {"out": np.arange(start, 10.0, step)})


def test_broadcast_reshape():
    b = _builder({"x": (3, 1), "like": (2, 3, 4), "shp": (3,)}, ["bl", "bs", "bd", "rl", "rs", "rd", "rp", "f2"])
    b.add_broadcast_to_like("bl", ["x", "like"], "bl")
    b.add_broadcast_to_static("bs", "x", "bs", [5, 3, 2])
    b.add_get_shape("ls", "like", "ls")
    b.add_broadcast_to_dynamic("bd", ["x", "ls"], "bd")
    b.add_reshape_static("rs", "like", "rs", [4, -1])
    b.add_reshape_like("rl", ["rs", "like"], "rl")
    b.add_reshape_dynamic("rd", ["like", "shp"], "rd")  # shape from an input: runs layer by layer
    b.add_rank_preserving_reshape("rp", "like", "rp", [0, 4, -1])
    b.add_flatten_to_2d("f2", "like", "f2", axis=-1)
    x, like = _rand(3, 1), _rand(2, 3, 4)
    out = _predict(b, {"x": x, "like": like, "shp": np.array([6, 2, 2], np.float32)})
    _check(out, {
        "bl": np.broadcast_to(x, (2, 3, 4)), "bs": np.broadcast_to(x, (5, 3, 2)), "bd": np.broadcast_to(x, (2, 3, 4)),
        "rs": like.reshape(4, 6), "rl": like, "rd": like.reshape(6, 2, 2), "rp": like.reshape(2, 4, 3),
        "f2": like.reshape(6, 4),
    })


def test_shape_arithmetic_folds_under_jit():
    """getShape -> reshapeDynamic / fillDynamic / tile reps: known at trace time, so the network jits."""
    b = _builder({"x": (2, 3, 4)}, ["r", "f", "t"])
    b.add_get_shape("s", "x", "s")
    b.add_slice_static("s2", "s", "s2", [1], [3], [1], [False], [False])
    b.add_range_static("two", "two", end=3, start=1)  # [1, 2]
    b.add_concat_nd("shape", ["two", "s2"], "shape", axis=0)  # [1, 2, 3, 4]
    b.add_reshape_dynamic("r", ["x", "shape"], "r")
    b.add_fill_dynamic("f", "s2", "f", value=3.0)
    b.add_tile("t", ["x", "two"], "t")
    model = mlc.load(b.spec)
    fn, params = model.jax_function()
    x = _rand(2, 3, 4)
    out = jax.jit(fn)(params, {"x": x})
    _check(out, {"r": x.reshape(1, 2, 3, 4), "f": np.full((3, 4), 3.0), "t": np.tile(x, [1, 2])})


def test_squeeze_expand_transpose():
    b = _builder({"x": (1, 3, 1, 4), "v": (1,)}, ["sq", "sa", "sv", "ed", "tr"])
    b.add_squeeze("sq", "x", "sq", axes=[0, -2])
    b.add_squeeze("sa", "x", "sa", squeeze_all=True)
    b.add_squeeze("sv", "v", "sv", squeeze_all=True)
    b.add_expand_dims("ed", "x", "ed", axes=[0, -1])
    b.add_transpose("tr", [3, -3, 0, 2], "x", "tr")
    x, v = _rand(1, 3, 1, 4), _rand(1)
    out = _predict(b, {"x": x, "v": v})
    _check(out, {
        "sq": x.reshape(3, 4), "sa": x.reshape(3, 4), "sv": v, "ed": x[None, ..., None],
        "tr": np.transpose(x, (3, 1, 0, 2)),
    })


def test_tile_stack_concat_split():
    b = _builder({"a": (2, 3), "b": (2, 3), "c": (2, 5), "reps": (2,)}, ["t", "td", "st", "cc", "ci", "s0", "s1", "s2", "u0", "u1"])
    b.add_tile("t", "a", "t", [3])
    b.add_tile("td", ["a", "reps"], "td")
    b.add_stack("st", ["a", "b", "a"], "st", axis=-2)
    b.add_concat_nd("cc", ["a", "c"], "cc", axis=-1)
    b.add_concat_nd("ci", ["a", "b"], "ci", axis=0, interleave=True)
    b.add_split_nd("sp", "c", ["s0", "s1", "s2"], axis=1, num_splits=3)
    b.add_split_nd("su", "c", ["u0", "u1"], axis=-1, split_sizes=[1, 4])
    a, bb, c = _rand(2, 3), _rand(2, 3), _rand(2, 5)
    out = _predict(b, {"a": a, "b": bb, "c": c, "reps": np.array([2, 2], np.float32)})
    inter = np.empty((4, 3), np.float32)
    inter[0::2], inter[1::2] = a, bb
    _check(out, {
        "t": np.tile(a, [1, 3]), "td": np.tile(a, [2, 2]), "st": np.stack([a, bb, a], axis=-2),
        "cc": np.concatenate([a, c], -1), "ci": inter, "s0": c[:, :2], "s1": c[:, 2:4], "s2": c[:, 4:],
        "u0": c[:, :1], "u1": c[:, 1:],
    })


def test_slice_static_and_dynamic():
    b = _builder({"x": (5, 6, 7), "begin": (3,), "end": (3,), "at": (1,)}, ["ss", "sq", "d2", "d3", "bs", "bn"])
    b.add_slice_static("ss", "x", "ss", begin_ids=[1, -1, 0], end_ids=[4, 0, -2], strides=[2, -2, 3],
                       begin_masks=[False, False, True], end_masks=[False, True, False])
    b.add_slice_static("sq", "x", "sq", begin_ids=[-2, 0, 1], end_ids=[0, 6, 5], strides=[1, 1, 1],
                       begin_masks=[False] * 3, end_masks=[False] * 3, squeeze_masks=[True, False, False])
    b.add_slice_dynamic("d2", ["x", "begin"], "d2", end_ids=[5, 1, 2], strides=[1, -1, 1],
                        begin_masks=[False, True, False], end_masks=[True, False, False])
    b.add_slice_dynamic("d3", ["x", "begin", "end"], "d3")
    b.add_slice_by_size("bs", ["x", "at"], "bs", axis=1, size=2)
    b.add_load_constant_nd("neg", "neg", constant_value=np.array([-3.0]), shape=[1])
    b.add_slice_by_size("bn", ["x", "neg"], "bn", axis=2, size=3)
    x = _rand(5, 6, 7)
    begin, end = np.array([1, 2, 0], np.float32), np.array([3, 5, 7], np.float32)
    out = _predict(b, {"x": x, "begin": begin, "end": end, "at": np.array([2.0], np.float32)})
    _check(out, {
        "ss": x[1:4:2, -1::-2, :-2:3], "sq": x[-2, :, 1:5], "d2": x[1:, :1:-1, 0:2], "d3": x[1:3, 2:5, 0:7],
        "bs": x[:, 2:4], "bn": x[:, :, 4:7],
    })


def test_slice_by_size_traced_begin_under_jit():
    b = _builder({"x": (4, 6), "begin": (1,)}, ["out"])
    b.add_slice_by_size("bs", ["x", "begin"], "out", axis=1, size=3)
    fn, params = mlc.load(b.spec).jax_function()
    x = _rand(4, 6)
    out = jax.jit(fn)(params, {"x": x, "begin": np.array([2.0], np.float32)})
    _check(out, {"out": x[:, 2:5]})


def test_windows_reverse_reverse_seq():
    b = _builder({"x": (3, 5, 2), "lens": (3,)}, ["sw", "rv", "rs"])
    b.add_sliding_windows("sw", "x", "sw", axis=1, window_size=2, step=2)
    b.add_reverse("rv", "x", "rv", reverse_dim=[True, False, True])
    b.add_reverse_sequence("rs", ["x", "lens"], "rs", batch_axis=0, seq_axis=1)
    x = _rand(3, 5, 2)
    lens = np.array([0, 3, 5])
    out = _predict(b, {"x": x, "lens": lens.astype(np.float32)})
    windows = np.stack([x[:, 0:2], x[:, 2:4]], axis=1)
    rs = x.copy()
    for i, n in enumerate(lens):
        rs[i, :n] = x[i, :n][::-1]
    _check(out, {"sw": windows, "rv": x[::-1, :, ::-1], "rs": rs})


def test_constant_pad():
    b = _builder({"x": (2, 3), "pads": (4,)}, ["p", "pd", "pg"])
    b.add_constant_pad("p", ["x"], "p", value=1.5, pad_amounts=[1, 0, 2, 3])
    b.add_constant_pad("pd", ["x", "pads"], "pd", value=-2.0)
    b.add_constant_pad("pg", ["x"], "pg", value=0.0, pad_amounts=[4, 0, 0, 5], pad_to_given_output_size_mode=True)
    x = _rand(2, 3)
    out = _predict(b, {"x": x, "pads": np.array([0, 2, 1, 1], np.float32)})
    _check(out, {
        "p": np.pad(x, [(1, 0), (2, 3)], constant_values=1.5), "pd": np.pad(x, [(0, 2), (1, 1)], constant_values=-2.0),
        "pg": np.pad(x, [(2, 0), (0, 2)]),
    })


def test_rank5_world():
    """Default (rank-5) mapping: a (C, H, W) input is [1, 1, C, H, W]; these layers see rank 5."""
    b = _builder({"x": (3, 4, 2)}, ["shape", "sq", "copy", "tr"], exact=False)
    b.add_get_shape("shape", "x", "shape")
    b.add_squeeze("sq", "x", "sq", squeeze_all=True)
    b.add_copy("copy", "x", "copy")
    b.add_transpose("tr", [0, 1, 2, 4, 3], "x", "tr")
    x = _rand(3, 4, 2)
    out = _predict(b, {"x": x})
    _check(out, {
        "shape": np.array([1, 1, 3, 4, 2], np.float32), "sq": x, "copy": x[None, None],
        "tr": np.transpose(x, (0, 2, 1))[None, None],
    })


@pytest.mark.parametrize("case", ["transpose", "reshape", "split", "pad", "squeeze", "slice_stride"])
def test_invalid_parameters(case):
    b = _builder({"x": (2, 3)}, ["out"] if case != "split" else ["o0", "o1"])
    if case == "transpose":
        b.add_transpose("bad", [0, 0], "x", "out")
    elif case == "reshape":
        b.add_reshape_static("bad", "x", "out", [4, 2])
    elif case == "split":
        b.add_split_nd("bad", "x", ["o0", "o1"], axis=1, split_sizes=[1, 1])
    elif case == "pad":
        b.add_constant_pad("bad", ["x"], "out", pad_amounts=[1, 1])
    elif case == "squeeze":
        b.add_squeeze("bad", "x", "out", axes=[0])
    else:
        b.add_slice_static("bad", "x", "out", [0, 0], [2, 3], [1, 0], [False] * 2, [False] * 2)
    with pytest.raises(MLCError) as err:
        _predict(b, {"x": _rand(2, 3)})
    assert isinstance(err.value, MLCParametersError)
    assert "bad" in str(err.value)
