"""Espresso shape and spatial layers (``concat``, ``split_nd``, ``expand_dims``, ``squeeze``,
``general_padding``, ``upsample``): small compiled folders written here, loaded with ``mlc.load``
and checked against numpy; each value mlc cannot map is refused naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
from test_compiled_espresso import layer, write_espresso

import mlc
from mlc.deploy.decompile import decompile
from mlc.io.compiled.espresso import load_espresso  # noqa: F401  (registers every family of espresso types)
from mlc.io.compiled.espresso_layers import supported_types

AXES = ("seq", "n", "k", "h", "w")


def nd(*shape: int) -> dict:
    """A rank-N ``model.espresso.shape`` entry: the last ``len(shape)`` of (seq, n, k, h, w)."""
    return {**dict(zip(AXES[5 - len(shape) :], shape)), "_rank": len(shape)}


def rank5(k: int, h: int, w: int) -> dict:
    """A rank-5 world entry (no ``_rank``): n, k, h, w."""
    return {"n": 1, "k": k, "h": h, "w": w}


def rank_n_layers() -> tuple[list, dict]:
    layers = [
        layer("expand_dims", "to5d", "x", "e", size_of_axes=2, axes_0=3, axes_1=4, nd_axis=0, hint_fallback_from_metal=1),
        layer("expand_dims", "unit1", "x", "f", size_of_axes=1, axes_0=1, nd_axis=0),
        layer("squeeze", "to3d", "e", "s", size_of_axes=2, axes_0=3, axes_1=4, nd_axis=0, version=1, hint_fallback_from_ane=1),
        layer("split_nd", "cut", "s", "a,b", nd_axis=-3, **{f"begin_{i}": 0 for i in range(128)}),
        layer("concat", "join", "b,a", "y"),
        layer("split_nd", "halves", "x", "p,q", nd_axis=2, begin_0=0, begin_1=0),
    ]
    shapes = {
        "x": nd(4, 3, 2), "e": nd(4, 3, 2, 1, 1), "f": nd(4, 1, 3, 2), "s": nd(4, 3, 2),
        "a": nd(1, 3, 2), "b": nd(3, 3, 2), "y": nd(4, 3, 2), "p": nd(4, 3, 1), "q": nd(4, 3, 1),
    }
    return layers, shapes


def test_rank_n_expand_squeeze_split_and_concat_against_numpy(tmp_path):
    layers, shapes = rank_n_layers()
    outputs = {"e": [4, 3, 2, 1, 1], "f": [4, 1, 3, 2], "y": [4, 3, 2], "p": [4, 3, 1], "q": [4, 3, 1]}
    folder = write_espresso(tmp_path / "S.mlmodelc", layers, {"x": [4, 3, 2]}, outputs, shapes=shapes, version=4)
    x = np.random.default_rng(7).standard_normal((4, 3, 2)).astype(np.float32)
    out = mlc.load(folder).predict({"x": x})
    np.testing.assert_array_equal(out["e"], x[:, :, :, None, None])
    np.testing.assert_array_equal(out["f"], x[:, None])
    np.testing.assert_array_equal(out["y"], np.concatenate([x[1:], x[:1]], axis=0))  # split 1 | 3 on axis 0, joined b, a
    np.testing.assert_array_equal(out["p"], x[..., :1])
    np.testing.assert_array_equal(out["q"], x[..., 1:])


def test_rank5_padding_upsample_and_channel_concat_against_numpy(tmp_path):
    layers = [
        layer("general_padding", "pad", "x", "p", pad_t=1, pad_b=0, pad_l=2, pad_r=1, pad_value=0.5, pad_fill_mode=0, pad_pad_mode=0),
        layer("upsample", "up", "x", "u", mode=0, scaling_factor_y=2, scaling_factor_x=3, align_corners=0, is_legacy_mode=0,
              use_fractional_scale_factors=0, fractional_scaling_factor_y=2, fractional_scaling_factor_x=1),
        layer("elementwise", "double", "x", "d", operation=3, alpha=2.0, beta=0),
        layer("concat", "join", "x,d,x", "c"),
    ]
    shapes = {"x": rank5(2, 3, 4), "p": rank5(2, 4, 7), "u": rank5(2, 6, 12), "d": rank5(2, 3, 4), "c": rank5(6, 3, 4)}
    outputs = {"p": [2, 4, 7], "u": [2, 6, 12], "c": [6, 3, 4]}
    folder = write_espresso(tmp_path / "P.mlmodelc", layers, {"x": [2, 3, 4]}, outputs, shapes=shapes)
    x = np.random.default_rng(8).standard_normal((2, 3, 4)).astype(np.float32)
    out = mlc.load(folder).predict({"x": x})
    np.testing.assert_array_equal(out["p"], np.pad(x, ((0, 0), (1, 0), (2, 1)), constant_values=0.5))
    np.testing.assert_array_equal(out["u"], x.repeat(2, axis=1).repeat(3, axis=2))
    np.testing.assert_allclose(out["c"], np.concatenate([x, 2 * x, x], axis=0), rtol=1e-6)


def test_the_rank_n_layers_decompile_to_an_mlmodel_that_predicts_the_same(tmp_path):
    layers, shapes = rank_n_layers()
    outputs = {"e": [4, 3, 2, 1, 1], "f": [4, 1, 3, 2], "y": [4, 3, 2], "p": [4, 3, 1], "q": [4, 3, 1]}
    folder = write_espresso(tmp_path / "S.mlmodelc", layers, {"x": [4, 3, 2]}, outputs, shapes=shapes, version=4)
    decompile(folder, tmp_path / "S.mlmodel")
    x = np.random.default_rng(9).standard_normal((4, 3, 2)).astype(np.float32)
    compiled, plain = mlc.load(folder).predict({"x": x}), mlc.load(tmp_path / "S.mlmodel").predict({"x": x})
    for name in outputs:
        np.testing.assert_array_equal(plain[name], compiled[name])


def test_the_same_layers_without_a_shape_file_in_the_rank5_world(tmp_path):
    """Padding, upsampling and concat need no shape file in the rank-5 world (nothing to check)."""
    layers = [
        layer("general_padding", "pad", "x", "p", pad_t=0, pad_b=2, pad_l=0, pad_r=0),
        layer("upsample", "up", "p", "u", mode=0, scaling_factor_y=1, scaling_factor_x=2),
        layer("concat", "join", "u,u", "y"),
    ]
    folder = write_espresso(tmp_path / "Q.mlmodelc", layers, {"x": [1, 2, 2]}, {"y": [2, 4, 4]})
    x = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    u = np.pad(x, ((0, 0), (0, 2), (0, 0))).repeat(2, axis=2)
    np.testing.assert_array_equal(mlc.load(folder).predict({"x": x})["y"], np.concatenate([u, u]))


# -- refusals: a value, key or size mlc cannot read is an mlc error naming the layer ---------------------


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("up", {"mode": 1}, r"'up'.*mode = 1 is not a value mlc can map"),
        ("up", {"align_corners": 1}, r"'up'.*align_corners = 1 is not a value"),
        ("up", {"use_fractional_scale_factors": 1}, r"'up'.*use_fractional_scale_factors = 1 is not a value"),
        ("up", {"fractional_scaling_factor_x": 1.5}, r"'up'.*fractional_scaling_factor_x = 1.5 is not a value"),
        ("pad", {"pad_pad_mode": 1}, r"'pad'.*pad_pad_mode = 1 is not a value mlc can map"),
        ("pad", {"pad_pad_mode": 2}, r"'pad'.*pad_pad_mode = 2 is not a value mlc can map"),
        ("pad", {"pad_fill_mode": 1}, r"'pad'.*pad_fill_mode = 1 is not a value"),
        ("join", {"axis": 1}, r"'join'.*parameter\(s\) axis are unknown to mlc's mapping of 'concat'"),
        ("up", {"type": "rnn_arch"}, r"'up'.*espresso layer type 'rnn_arch' is not supported"),
        ("pad", {"type": "reduce"}, r"'pad'.*espresso layer type 'reduce' is not supported"),
        ("up", {"scaling_factor_x": 3}, r"'up'.*gives shape \(1, 2, 6, 12\), but model.espresso.shape says \(1, 2, 6, 8\)"),
        ("pad", {"pad_t": 0, "pad_b": 0, "pad_l": 1, "pad_r": 0}, r"'pad'.*gives shape \(1, 2, 3, 5\), but model.espresso.shape says \(1, 2, 4, 4\)"),
    ],
)
def test_rank5_values_mlc_cannot_map_are_refused(tmp_path, name, change, message):
    layers = [
        layer("general_padding", "pad", "x", "p", pad_t=1, pad_b=0, pad_l=0, pad_r=0, pad_value=0, pad_fill_mode=0, pad_pad_mode=0),
        layer("upsample", "up", "x", "u", mode=0, scaling_factor_y=2, scaling_factor_x=2),
        layer("concat", "join", "x,x", "c"),
    ]
    layers = [{**spec, **change} if spec["name"] == name else spec for spec in layers]
    shapes = {"x": rank5(2, 3, 4), "p": rank5(2, 4, 4), "u": rank5(2, 6, 8), "c": rank5(4, 3, 4)}
    folder = write_espresso(tmp_path / "R.mlmodelc", layers, {"x": [2, 3, 4]}, {"p": [2, 4, 4], "u": [2, 6, 8], "c": [4, 3, 4]}, shapes=shapes)
    with pytest.raises(mlc.MLCUnsupportedError, match=message):
        mlc.load(folder)


@pytest.mark.parametrize(
    "name, change, shape_change, message",
    [
        ("to5d", {"nd_axis": 1}, {}, r"'to5d'.*nd_axis = 1 is not a value mlc can map"),
        ("to5d", {"axes_2": 0}, {}, r"'to5d'.*axes_2 set beyond size_of_axes 2"),
        ("to5d", {"axes_1": -1}, {}, r"'to5d'.*negative or larger axes"),
        ("to3d", {"version": 2}, {}, r"'to3d'.*version = 2 is not a value"),
        ("cut", {"begin_5": 2}, {}, r"'cut'.*begin_5 are not 0"),
        ("cut", {}, {"a": nd(1, 3, 2, 1)}, r"'cut'.*gives top 'a' size \(1, 3, 2, 1\), not a piece"),
        ("cut", {}, {"a": nd(2, 3, 2)}, r"'cut'.*sizes \[2, 3\] on axis 0 do not add up to the input's 4"),
        ("join", {}, {"y": nd(4, 3, 3)}, r"'join'.*not the bottoms joined on the channel axis"),
        ("unit1", {"axes_0": 2}, {}, r"'unit1'.*gives shape \(4, 3, 1, 2\), but model.espresso.shape says \(4, 1, 3, 2\)"),
    ],
)
def test_rank_n_values_mlc_cannot_map_are_refused(tmp_path, name, change, shape_change, message):
    layers, shapes = rank_n_layers()
    layers = [{**spec, **change} if spec["name"] == name else spec for spec in layers]
    outputs = {"e": [4, 3, 2, 1, 1], "f": [4, 1, 3, 2], "y": [4, 3, 2], "p": [4, 3, 1], "q": [4, 3, 1]}
    folder = write_espresso(tmp_path / "T.mlmodelc", layers, {"x": [4, 3, 2]}, outputs, shapes={**shapes, **shape_change}, version=4)
    with pytest.raises(mlc.MLCUnsupportedError, match=message):
        mlc.load(folder)


def test_rank_n_only_layers_are_refused_in_the_rank5_world(tmp_path):
    layers = [layer("expand_dims", "grow", "x", "y", size_of_axes=1, axes_0=0, nd_axis=0)]
    folder = write_espresso(tmp_path / "W.mlmodelc", layers, {"x": [2, 3, 4]}, {"y": [1, 2, 3, 4]})
    with pytest.raises(mlc.MLCUnsupportedError, match=r"'grow'.*'expand_dims' layers are mapped only in rank-N networks"):
        mlc.load(folder)


def test_the_new_types_are_listed_and_the_unmapped_ones_are_not():
    types = set(supported_types())
    assert {"concat", "split_nd", "expand_dims", "squeeze", "general_padding", "upsample"} <= types
    assert not types & {"rnn_arch", "reduce", "slice", "crop", "lrn", "deconvolution", "load_constant", "sequence_concat"}
