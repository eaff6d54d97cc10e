"""Legacy (rank-5 era) tensor and resizing layers (mlc/frontends/neuralnetwork/layers/tensor_legacy.py, resize.py):
reshape, flatten, permute, concat, split, sequenceRepeat, reorganizeData, slice, loadConstant,
crop, padding, upsample, resizeBilinear, cropResize, in the rank-5 world ([Seq, B, C, H, W]) and
the exact world. Expected values come from numpy and torch."""

import numpy as np
import pytest
import torch

from mlc._errors import MLCParametersError, MLCUnsupportedError


from mlc.testing.nn_specs import network, predict as _predict  # noqa: E402

RNG = np.random.default_rng(0)


def _builder(inputs, outputs, exact=False):
    return network(inputs, outputs, exact=exact)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _check(out, expected, atol=1e-5):
    for name, value in expected.items():
        assert np.shape(out[name]) == np.shape(value), (name, np.shape(out[name]), np.shape(value))
        np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=atol, err_msg=name)


def _chw_last(x):
    """[..., C, H, W] read in H, W, C order."""
    return np.moveaxis(x, -3, -1)


# -- reshape / flatten / permute ---------------------------------------------------------------
def test_reshape_flatten_rank5_world_with_sequence():
    b = _builder({"x": (4, 3, 2)}, ["r3", "r3last", "r4", "r4last", "flat", "flatlast"])
    b.add_reshape("r3", "x", "r3", target_shape=(2, 6, 2), mode=0)
    b.add_reshape("r3last", "x", "r3last", target_shape=(2, 6, 2), mode=1)
    b.add_reshape("r4", "x", "r4", target_shape=(9, 2, 2, 2), mode=0)
    b.add_reshape("r4last", "x", "r4last", target_shape=(9, 2, 2, 2), mode=1)
    b.add_flatten("flat", 0, "x", "flat")
    b.add_flatten("flatlast", 1, "x", "flatlast")
    x = _rand(3, 1, 4, 3, 2)  # [Seq=3, B=1, C, H, W]
    out = _predict(b, {"x": x})
    r3last = np.moveaxis(_chw_last(x).reshape(3, 1, 6, 2, 2), -1, -3)
    r4last = np.moveaxis(_chw_last(x).reshape(9, 1, 2, 2, 2), -1, -3)
    _check(out, {
        "r3": x.reshape(3, 1, 2, 6, 2), "r3last": r3last,
        "r4": x.reshape(9, 1, 2, 2, 2), "r4last": r4last,
        "flat": x.reshape(3, 1, 24, 1, 1), "flatlast": _chw_last(x).reshape(3, 1, 24, 1, 1),
    })


def test_reshape_batch_items_keep_their_sequence():
    b = _builder({"x": (2, 1, 3)}, ["y"])
    b.add_reshape("r", "x", "y", target_shape=(1, 18, 1, 1), mode=0)
    x = _rand(3, 2, 2, 1, 3)  # [Seq=3, B=2, ...] -> [Seq=1, B=2, C=18]
    y = _predict(b, {"x": x})["y"]
    _check({"y": y}, {"y": np.swapaxes(np.swapaxes(x, 0, 1).reshape(2, 1, 18, 1, 1), 0, 1)})


def test_reshape_flatten_permute_exact_world():
    b = _builder({"x": (2, 3, 4)}, ["r3", "r4", "r4last", "flat", "perm"], exact=True)
    b.add_reshape("r3", "x", "r3", target_shape=(4, 3, 2), mode=0)
    b.add_reshape("r4", "x", "r4", target_shape=(2, 2, 3, 2), mode=0)
    b.add_reshape("r4last", "x", "r4last", target_shape=(2, 2, 3, 2), mode=1)
    b.add_flatten("flat", 1, "x", "flat")
    b.add_reshape("x4", "x", "x4", target_shape=(1, 2, 3, 4), mode=0)
    b.add_permute("perm", (3, 1, 2, 0), "x4", "perm")
    x = _rand(2, 3, 4)
    out = _predict(b, {"x": x})
    _check(out, {
        "r3": x.reshape(4, 3, 2), "r4": x.reshape(2, 2, 3, 2),
        "r4last": np.moveaxis(_chw_last(x).reshape(2, 3, 2, 2), -1, -3),
        "flat": _chw_last(x).reshape(24, 1, 1), "perm": np.transpose(x[None], (3, 1, 2, 0)),
    })


@pytest.mark.parametrize("axis", [(0, 3, 1, 2), (3, 1, 2, 0), (0, 3, 2, 1), (0, 1, 2, 3)])
def test_permute_rank5_world_keeps_batch(axis):
    b = _builder({"x": (2, 3, 4)}, ["y"])
    b.add_permute("p", axis, "x", "y")
    x = _rand(5, 2, 2, 3, 4)  # [Seq, B, C, H, W]
    perm = [0, 2, 3, 4]
    full = [perm[a] for a in axis]
    expected = np.transpose(x, (full[0], 1, full[1], full[2], full[3]))
    _check(_predict(b, {"x": x}), {"y": expected})


# -- concat / split / sequenceRepeat -----------------------------------------------------------
def test_concat_split_sequence_repeat_rank5_world():
    b = _builder({"a": (2, 3, 4), "c": (1, 3, 4)}, ["cat", "seqcat", "s0", "s1", "s2", "rep"])
    b.add_elementwise("cat", ["a", "c"], "cat", mode="CONCAT")
    b.add_elementwise("seqcat", ["a", "a"], "seqcat", mode="SEQUENCE_CONCAT")
    b.add_split("split", "cat", ["s0", "s1", "s2"])
    b.add_sequence_repeat("rep", 3, "a", "rep")
    a, c = _rand(2, 1, 2, 3, 4), _rand(2, 1, 1, 3, 4)
    out = _predict(b, {"a": a, "c": c})
    cat = np.concatenate([a, c], axis=2)
    _check(out, {
        "cat": cat, "seqcat": np.concatenate([a, a], axis=0),
        "s0": cat[:, :, 0:1], "s1": cat[:, :, 1:2], "s2": cat[:, :, 2:3], "rep": np.tile(a, (3, 1, 1, 1, 1)),
    })


def test_concat_split_exact_world():
    b = _builder({"a": (2, 4, 3, 2), "c": (2, 2, 3, 2)}, ["cat", "s0", "s1"], exact=True)
    b.add_elementwise("cat", ["a", "c"], "cat", mode="CONCAT")
    b.add_split("split", "cat", ["s0", "s1"])
    a, c = _rand(2, 4, 3, 2), _rand(2, 2, 3, 2)
    cat = np.concatenate([a, c], axis=1)
    _check(_predict(b, {"a": a, "c": c}), {"cat": cat, "s0": cat[:, :3], "s1": cat[:, 3:]})


# -- reorganizeData ----------------------------------------------------------------------------
def test_reorganize_data_proto_example():
    b = _builder({"x": (8, 1, 2)}, ["d2s", "ps", "back"])
    b.add_reorganize_data("d2s", "x", "d2s", mode="DEPTH_TO_SPACE", block_size=2)
    b.add_reorganize_data("ps", "x", "ps", mode="PIXEL_SHUFFLE", block_size=2)
    b.add_reorganize_data("back", "d2s", "back", mode="SPACE_TO_DEPTH", block_size=2)
    x = np.arange(1, 17, dtype=np.float32).reshape(8, 1, 2)
    out = _predict(b, {"x": x})
    d2s = [[[1, 5, 2, 6], [9, 13, 10, 14]], [[3, 7, 4, 8], [11, 15, 12, 16]]]
    ps = [[[1, 3, 2, 4], [5, 7, 6, 8]], [[9, 11, 10, 12], [13, 15, 14, 16]]]
    _check(out, {"d2s": np.reshape(d2s, (1, 1, 2, 2, 4)), "ps": np.reshape(ps, (1, 1, 2, 2, 4)),
                 "back": x.reshape(1, 1, 8, 1, 2)})


def test_reorganize_data_exact_world_against_torch():
    b = _builder({"x": (2, 18, 2, 3)}, ["ps", "s2d"], exact=True)
    b.add_reorganize_data("ps", "x", "ps", mode="PIXEL_SHUFFLE", block_size=3)
    b.add_reorganize_data("s2d", "ps", "s2d", mode="SPACE_TO_DEPTH", block_size=3)
    x = _rand(2, 18, 2, 3)
    ps = torch.pixel_shuffle(torch.from_numpy(x), 3).numpy()
    # TF space_to_depth in NCHW terms: channel (bi * b + bj) * C + c
    s2d = ps.reshape(2, 2, 2, 3, 3, 3).transpose(0, 3, 5, 1, 2, 4).reshape(2, 18, 2, 3)
    _check(_predict(b, {"x": x}), {"ps": ps, "s2d": s2d})


# -- slice / loadConstant / crop / padding -----------------------------------------------------
def test_slice_load_constant_crop():
    b = _builder({"x": (5, 6, 7), "ref": (5, 2, 3)}, ["sc", "sh", "sw", "plus", "crop1", "crop2"])
    b.add_slice("sc", "x", "sc", axis="channel", start_index=1, end_index=-1, stride=2)
    b.add_slice("sh", "x", "sh", axis="height", start_index=2, end_index=100, stride=1)
    b.add_slice("sw", "x", "sw", axis="width", start_index=0, end_index=-2, stride=3)
    const = _rand(5, 6, 7)
    b.add_load_constant("const", "const", constant_value=const, shape=[5, 6, 7])
    b.add_elementwise("plus", ["x", "const"], "plus", mode="ADD")
    b.add_crop("crop1", left=1, right=2, top=3, bottom=0, offset=0, input_names=["x"], output_name="crop1")
    b.add_crop("crop2", left=0, right=0, top=0, bottom=0, offset=[1, 4], input_names=["x", "ref"], output_name="crop2")
    x = _rand(5, 6, 7)
    out = _predict(b, {"x": x, "ref": _rand(5, 2, 3)})
    r5 = lambda a: a[None, None]  # noqa: E731
    _check(out, {
        "sc": r5(x[1:-1:2]), "sh": r5(x[:, 2:]), "sw": r5(x[:, :, 0:-2:3]), "plus": r5(x + const),
        "crop1": r5(x[:, 3:, 1:5]), "crop2": r5(x[:, 1:3, 4:7]),
    })


def test_padding_all_types_proto_example():
    x = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4)
    b = _builder({"x": (1, 3, 4)}, ["const", "refl", "repl"])
    b.add_padding("const", top=2, left=2, value=-1.5, input_name="x", output_name="const")
    b.add_padding("refl", top=2, left=2, input_name="x", output_name="refl", padding_type="reflection")
    b.add_padding("repl", top=2, left=2, bottom=1, right=3, input_name="x", output_name="repl",
                  padding_type="replication")
    out = _predict(b, {"x": x})
    refl = [[11, 10, 9, 10, 11, 12], [7, 6, 5, 6, 7, 8], [3, 2, 1, 2, 3, 4], [7, 6, 5, 6, 7, 8], [11, 10, 9, 10, 11, 12]]
    pad = ((0, 0), (2, 0), (2, 0))
    _check(out, {
        "const": np.pad(x, pad, constant_values=-1.5)[None, None],
        "refl": np.reshape(refl, (1, 1, 1, 5, 6)),
        "repl": np.pad(x, ((0, 0), (2, 1), (2, 3)), mode="edge")[None, None],
    })


def test_load_constant_and_padding_exact_world():
    b = _builder({"x": (3, 4)}, ["pad", "const"], exact=True)
    b.add_padding("pad", left=1, right=1, top=1, bottom=1, input_name="x", output_name="pad", padding_type="reflection")
    b.add_load_constant("const", "const", constant_value=np.arange(6.0), shape=[1, 2, 3])
    x = _rand(3, 4)
    out = _predict(b, {"x": x})
    _check(out, {"pad": np.pad(x, 1, mode="reflect"), "const": np.arange(6.0).reshape(1, 1, 1, 2, 3)})


# -- upsample / resizeBilinear / cropResize -----------------------------------------------------
def test_upsample_nn_and_bilinear_default():
    b = _builder({"x": (1, 1, 3)}, ["nn", "lin"])
    b.add_upsample("nn", 2, 3, "x", "nn", mode="NN")
    b.add_upsample("lin", 2, 3, "x", "lin", mode="BILINEAR")
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 1, 3)
    out = _predict(b, {"x": x})
    row = [1, 4 / 3, 5 / 3, 2, 7 / 3, 8 / 3, 3, 3, 3]  # grid i / 3, clamped to the last pixel
    _check(out, {"nn": np.repeat(np.repeat(x, 2, axis=1), 3, axis=2)[None, None],
                 "lin": np.array([row, row], np.float32).reshape(1, 1, 1, 2, 9)})


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("scale", [(2, 3), (1.66, 2.32)])
def test_upsample_bilinear_against_torch(align, scale):
    b = _builder({"x": (2, 3, 4, 5)}, ["y"], exact=True)
    mode = "ALIGN_CORNERS_TRUE" if align else "ALIGN_CORNERS_FALSE"
    b.add_upsample("up", scale[0], scale[1], "x", "y", mode="BILINEAR", linear_upsample_mode=mode)
    x = _rand(2, 3, 4, 5)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=scale, mode="bilinear",
                                               align_corners=align, recompute_scale_factor=True).numpy()
    _check(_predict(b, {"x": x}), {"y": expected})


def test_resize_bilinear_sampling_modes():
    modes = {
        "STRICT_ALIGN_ENDPOINTS_MODE": [0, 0.25, 0.5, 0.75, 1],
        "ALIGN_ENDPOINTS_MODE": [0, 0.25, 0.5, 0.75, 1],
        "UPSAMPLE_MODE": [0, 0.4, 0.8, 1, 1],
        "ROI_ALIGN_MODE": [0.1, 0.3, 0.5, 0.7, 0.9],
    }
    b = _builder({"x": (1, 1, 2)}, list(modes) + ["one_strict", "one_align"])
    for mode in modes:
        b.add_resize_bilinear(mode, "x", mode, target_height=1, target_width=5, mode=mode)
    b.add_resize_bilinear("one_strict", "x", "one_strict", 1, 1, mode="STRICT_ALIGN_ENDPOINTS_MODE")
    b.add_resize_bilinear("one_align", "x", "one_align", 1, 1, mode="ALIGN_ENDPOINTS_MODE")
    out = _predict(b, {"x": np.array([0.0, 1.0], np.float32).reshape(1, 1, 2)})
    expected = {m: np.reshape(v, (1, 1, 1, 1, 5)) for m, v in modes.items()}
    expected.update(one_strict=np.zeros((1, 1, 1, 1, 1)), one_align=np.full((1, 1, 1, 1, 1), 0.5))
    _check(out, expected)


def _crop_and_resize(img, box, th, tw):
    """tf.image.crop_and_resize of one (C, H, W) image at a normalized corners box, in numpy."""
    _, h, w = img.shape
    y0, x0, y1, x1 = box

    def grid(a, b_, n, size):
        if n == 1:
            return np.array([0.5 * (a + b_) * (size - 1)])
        return a * (size - 1) + np.arange(n) * (b_ - a) * (size - 1) / (n - 1)

    ys, xs = grid(y0, y1, th, h), grid(x0, x1, tw, w)
    out = np.zeros((img.shape[0], th, tw), np.float32)
    for i, y in enumerate(ys):
        for j, xx in enumerate(xs):
            t, l_ = int(np.floor(y)), int(np.floor(xx))
            b_, r = min(t + 1, h - 1), min(l_ + 1, w - 1)
            dy, dx = y - t, xx - l_
            top = img[:, t, l_] * (1 - dx) + img[:, t, r] * dx
            bottom = img[:, b_, l_] * (1 - dx) + img[:, b_, r] * dx
            out[:, i, j] = top * (1 - dy) + bottom * dy
    return out


def test_crop_resize_rank5_boxes_with_and_without_batch_index():
    boxes = np.array([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0]], np.float32)
    b = _builder({"x": (2, 5, 6), "roi": (4, 1, 1), "roi5": (5, 1, 1), "roiw": (4, 1, 1)}, ["all", "picked", "wfirst"])
    kw = dict(target_height=3, target_width=4, mode="ALIGN_ENDPOINTS_MODE", normalized_roi=True)
    b.add_crop_resize("all", ["x", "roi"], "all", **kw)
    b.add_crop_resize("picked", ["x", "roi5"], "picked", **kw)
    b.add_crop_resize("wfirst", ["x", "roiw"], "wfirst", box_indices_mode="CORNERS_WIDTH_FIRST", **kw)
    x = _rand(1, 3, 2, 5, 6)  # [1, B=3, C, H, W]
    index = np.array([2, 0], np.float32)
    out = _predict(b, {
        "x": x, "roi": boxes.reshape(2, 1, 4, 1, 1),
        "roi5": np.concatenate([index[:, None], boxes], 1).reshape(2, 1, 5, 1, 1),
        "roiw": boxes[:, [1, 0, 3, 2]].reshape(2, 1, 4, 1, 1),
    })
    every = np.stack([np.stack([_crop_and_resize(x[0, k], box, 3, 4) for k in range(3)]) for box in boxes])
    picked = np.stack([_crop_and_resize(x[0, int(k)], box, 3, 4) for k, box in zip(index, boxes)])[:, None]
    _check(out, {"all": every, "picked": picked, "wfirst": every}, atol=1e-4)


# -- invalid parameters ------------------------------------------------------------------------
def _refused(build, inputs, error=MLCParametersError, match=None, exact=False):
    b = _builder({"x": (4, 3, 2)}, ["y"], exact=exact)
    build(b)
    with pytest.raises(error, match=match):
        _predict(b, {"x": _rand(4, 3, 2) if inputs is None else inputs})


def _set(field, value):
    def build(b):
        layer = b.spec.neuralNetwork.layers[-1]
        msg = getattr(layer, layer.WhichOneof("layer"))
        if isinstance(value, list):
            del getattr(msg, field)[:]
            getattr(msg, field).extend(value)
        else:
            setattr(msg, field, value)
    return build


def test_invalid_parameters_are_refused():
    _refused(lambda b: b.add_reshape("r", "x", "y", target_shape=(5, 1, 1), mode=0), None, match="elements")
    _refused(lambda b: (b.add_permute("p", (0, 1, 2, 3), "x", "y"), _set("axis", [0, 1, 1, 3])(b)), None,
             match="permutation")
    _refused(lambda b: b.add_split("s", "x", ["y", "z", "w"]), None, match="equal parts")
    _refused(lambda b: (b.add_reorganize_data("r", "x", "y", block_size=2), _set("blockSize", 1)(b)), None,
             match="greater than 1")
    _refused(lambda b: b.add_reorganize_data("r", "x", "y", mode="SPACE_TO_DEPTH", block_size=2), None, match="divide")
    _refused(lambda b: (b.add_slice("s", "x", "y", axis="width"), _set("stride", 0)(b)), None, match="positive")
    _refused(lambda b: b.add_slice("s", "x", "y", axis="channel", start_index=3, end_index=2), None, match="empty")
    _refused(lambda b: b.add_padding("p", left=2, input_name="x", output_name="y", padding_type="reflection"), None,
             match="smaller")
    _refused(lambda b: b.add_crop("c", 2, 1, 0, 0, 0, ["x"], "y"), None, match="fit")
    _refused(lambda b: b.add_sequence_repeat("r", 2, "x", "y"), None, match="rank", exact=True)


def test_fractional_nearest_upsample_is_unsupported():
    def build(b):
        b.add_upsample("u", 2, 2, "x", "y", mode="NN")
        _set("scalingFactor", [])(b)
        _set("fractionalScalingFactor", [1.5, 2.0])(b)
    _refused(build, None, error=MLCUnsupportedError, match="fractional")
