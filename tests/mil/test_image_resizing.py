"""Image resizing ops against torch (interpolate, grid_sample, affine_grid), numpy, and the
values coremltools documents or expects in its own tests."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def t(a):
    return torch.from_numpy(a)


def size_scale(out, n):
    """The scale coremltools' torch frontend emits for an explicit output size."""
    return out / n if out % n == 0 else (out + 1e-4) / n


def check(outs, wants):
    assert len(outs) == len(wants)
    for i, (out, want) in enumerate(zip(outs, wants)):
        assert out.shape == want.shape, (i, out.shape, want.shape)
        np.testing.assert_allclose(out, want, **TOL, err_msg=f"output {i}")


def interp(x, **kw):
    return F.interpolate(t(x), **kw).numpy()


# -- upsample / resize ----------------------------------------------------------------------------

def test_upsample_nearest_neighbor():
    x = rand(1, 2, 4, 6)
    sizes = [(7, 5), (3, 4), (9, 13)]
    outs = run_mil(
        lambda x: (
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=2),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=1.5, scale_factor_width=3.0),
            *(
                mb.upsample_nearest_neighbor(x=x, scale_factor_height=size_scale(h, 4), scale_factor_width=size_scale(w, 6))
                for h, w in sizes
            ),
        ),
        {"x": x},
        target="iOS15",
    )
    wants = [
        interp(x, scale_factor=2, mode="nearest"),
        interp(x, scale_factor=(1.5, 3.0), mode="nearest"),
        *(interp(x, size=s, mode="nearest") for s in sizes),
    ]
    check(outs, wants)


def test_upsample_nearest_neighbor_fractional_coremltools():
    """coremltools' expected values for fractional scale factors (iOS15 tests)."""
    x = np.array([1.5, -2.5, 3.5], dtype=np.float32).reshape(1, 1, 1, 3)
    outs = run_mil(
        lambda x: (
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=3.17, scale_factor_width=0.67),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2.0, scale_factor_width=1.12),
        ),
        {"x": x},
        target="iOS15",
    )
    check(outs, [np.tile([1.5, -2.5], 3).reshape(1, 1, 3, 2).astype(np.float32), np.tile(x, (1, 1, 2, 1))])


@pytest.mark.parametrize("target", ["iOS15", "iOS16"])
def test_upsample_bilinear(target):
    x = rand(2, 3, 4, 6)
    sizes = [(7, 5), (9, 13)]
    bodies = []
    wants = []
    for align in (True, False):
        bodies.append(dict(scale_factor_height=2, scale_factor_width=2, align_corners=align))
        wants.append(interp(x, scale_factor=2, mode="bilinear", align_corners=align))
        bodies.append(dict(scale_factor_height=1.5, scale_factor_width=0.5, align_corners=align))
        wants.append(interp(x, scale_factor=(1.5, 0.5), mode="bilinear", align_corners=align))
        for h, w in sizes:
            bodies.append(dict(scale_factor_height=size_scale(h, 4), scale_factor_width=size_scale(w, 6), align_corners=align))
            wants.append(interp(x, size=(h, w), mode="bilinear", align_corners=align))
    outs = run_mil(lambda x: tuple(mb.upsample_bilinear(x=x, **kw) for kw in bodies), {"x": x}, target=target)
    check(outs, wants)


def test_upsample_bilinear_half_pixel_centers_ios16():
    """coremltools' expected values for every align_corners / half_pixel_centers combination."""
    x = np.array([1, 2], dtype=np.float32).reshape(1, 1, 1, 2)
    combos = [(True, False), (True, None), (False, True), (False, None), (False, False)]
    outs = run_mil(
        lambda x: tuple(
            mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=3, align_corners=a, half_pixel_centers=h)
            for a, h in combos
        ),
        {"x": x},
        target="iOS16",
    )
    aligned = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    half = [1.0, 1.0, 4 / 3, 5 / 3, 2.0, 2.0]
    legacy = [1.0, 4 / 3, 5 / 3, 2.0, 2.0, 2.0]
    wants = [aligned, aligned, half, half, legacy]
    check(outs, [np.tile(np.float32(w), 2).reshape(1, 1, 2, 6) for w in wants])


def test_upsample_bilinear_fractional_coremltools():
    x = np.array([0, 1], dtype=np.float32).reshape(1, 1, 2)
    outs = run_mil(
        lambda x: (
            mb.upsample_bilinear(x=x, scale_factor_height=1, scale_factor_width=3, align_corners=True),
            mb.upsample_bilinear(x=x, scale_factor_height=1.0, scale_factor_width=2.6, align_corners=False),
        ),
        {"x": x},
        target="iOS15",
    )
    check(outs, [np.float32([[[0, 0.2, 0.4, 0.6, 0.8, 1]]]), np.float32([[[0, 0.1, 0.5, 0.9, 1]]])])


def test_resize_bilinear_sampling_modes_documented_grids():
    """With x = [0, 1], the output is the grid itself: coremltools' docstring examples."""
    x = np.array([0, 1], dtype=np.float32).reshape(1, 1, 2)
    modes = ["UNALIGN_CORNERS", "STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS"]
    outs = run_mil(
        lambda x: tuple(
            mb.resize_bilinear(x=x, target_size_height=1, target_size_width=m, sampling_mode=mode)
            for m in (5, 6, 1)
            for mode in modes
        ),
        {"x": x},
        target="iOS15",
    )
    grids = {
        5: [[0, 0.1, 0.5, 0.9, 1], [0, 0.25, 0.5, 0.75, 1], [0, 0.25, 0.5, 0.75, 1], [0, 0.4, 0.8, 1, 1],
            [0.1, 0.3, 0.5, 0.7, 0.9]],
        6: [[0, 0, 1 / 3, 2 / 3, 1, 1], [0, 0.2, 0.4, 0.6, 0.8, 1], [0, 0.2, 0.4, 0.6, 0.8, 1],
            [0, 1 / 3, 2 / 3, 1, 1, 1], [1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12]],
        1: [[0.5], [0], [0.5], [0], [0.5]],
    }
    check(outs, [np.float32(g).reshape(1, 1, -1) for m in (5, 6, 1) for g in grids[m]])


def test_resize_bilinear_matches_torch():
    x = rand(2, 3, 5, 4)
    sizes = [(8, 7), (3, 2), (10, 4)]
    outs = run_mil(
        lambda x: tuple(
            mb.resize_bilinear(x=x, target_size_height=h, target_size_width=w, sampling_mode=mode)
            for mode in ("STRICT_ALIGN_CORNERS", "UNALIGN_CORNERS")
            for h, w in sizes
        ),
        {"x": x},
        target="iOS15",
    )
    check(outs, [interp(x, size=s, mode="bilinear", align_corners=a) for a in (True, False) for s in sizes])


def test_resize_nearest_neighbor():
    x = rand(2, 3, 4, 6)
    sizes = [(7, 5), (3, 4), (8, 12), (4, 6)]
    outs = run_mil(
        lambda x: tuple(mb.resize_nearest_neighbor(x=x, target_size_height=h, target_size_width=w) for h, w in sizes),
        {"x": x},
        target="iOS15",
    )
    check(outs, [interp(x, size=s, mode="nearest-exact") for s in sizes])


def test_resize_ios17():
    x = rand(1, 2, 4, 6)
    x5 = np.array([-6.174, 9.371], dtype=np.float32).reshape(1, 1, 1, 2, 1)
    outs = run_mil(
        lambda x, x5: (
            mb.resize(x=x, shape=[7, 5], resized_dims=np.uint32(2), sampling_mode="UNALIGN_CORNERS"),
            mb.resize(x=x, shape=[1, 2, 9, 3], resized_dims=np.uint32(2), sampling_mode="STRICT_ALIGN_CORNERS"),
            mb.resize(x=x, shape=[7, 5], resized_dims=np.uint32(2), interpolation_mode="NEAREST_NEIGHBOR"),
            mb.resize(x=x, shape=[0, 9], resized_dims=np.uint32(2), sampling_mode="UNALIGN_CORNERS"),
            mb.resize(x=x, shape=[3, 10], resized_dims=np.uint32(1), sampling_mode="UNALIGN_CORNERS"),
            mb.resize(x=x5, shape=[1, 1, 3, 2], resized_dims=np.uint32(2), interpolation_mode="NEAREST_NEIGHBOR"),
            mb.resize(x=x, shape=[2, 3], resized_dims=np.uint32(2)),
        ),
        {"x": x, "x5": x5},
        target="iOS17",
    )
    # DEFAULT grid, 4 -> 2: rows 0 and 2; 6 -> 3: columns 0, 2, 4.
    wants = [
        interp(x, size=(7, 5), mode="bilinear", align_corners=False),
        interp(x, size=(9, 3), mode="bilinear", align_corners=True),
        interp(x, size=(7, 5), mode="nearest-exact"),
        interp(x, size=(4, 9), mode="bilinear", align_corners=False),
        F.interpolate(t(x).reshape(1, 8, 6), size=10, mode="linear", align_corners=False).numpy().reshape(1, 2, 4, 10),
        np.float32([-6.174, -6.174, 9.371, 9.371, 9.371, 9.371]).reshape(1, 1, 1, 3, 2),  # coremltools' expectation
        x[:, :, ::2, ::2],
    ]
    check(outs, wants)


def test_resize_static_input_folds():
    c = rand(1, 1, 2, 3)
    (out,) = run_mil(
        lambda x: mb.add(x=x, y=mb.resize_bilinear(x=c, target_size_height=4, target_size_width=6, sampling_mode="STRICT_ALIGN_CORNERS")),
        {"x": np.zeros((1, 1, 4, 6), np.float32)},
        target="iOS15",
    )
    check([out], [interp(c, size=(4, 6), mode="bilinear", align_corners=True)])


def test_crop():
    x = rand(2, 3, 5, 6)
    x3 = rand(3, 4, 4)
    outs = run_mil(
        lambda x, x3: (
            mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 3]),
            mb.crop(x=x3, crop_height=[0, 1], crop_width=[1, 1]),
        ),
        {"x": x, "x3": x3},
        target="iOS15",
    )
    check(outs, [x[:, :, 1:3, 0:3], x3[:, 0:3, 1:3]])


# -- crop_resize ----------------------------------------------------------------------------------

IMG = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)


def np_grid(mode, start, end, m):
    """The sampling grid over a box [start, end] (mlc's documented reading of the sampling modes)."""
    e = end - start
    i = np.arange(m, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        g = (np.full(1, e / 2 if mode == "ALIGN_CORNERS" else 0.0) if m == 1 else i * e / (m - 1))
    elif mode == "DEFAULT":
        g = i * (e + 1) / m
    elif mode == "OFFSET_CORNERS":
        g = (i + 0.5) * max(1.0, e) / m
    else:
        g = (i + 0.5) * (e + 1) / m - 0.5
    return start + np.clip(g, min(0, e), max(0, e))


def np_sample(img, ys, xs, pad):
    """Bilinear samples of img (C, H, W) at ys x xs, pad outside [0, size - 1]."""
    c, h, w = img.shape
    out = np.full((c, len(ys), len(xs)), pad, np.float64)
    for a, y in enumerate(ys):
        for b, x in enumerate(xs):
            if 0 <= y <= h - 1 and 0 <= x <= w - 1:
                y0, x0 = int(np.floor(y)), int(np.floor(x))
                y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                dy, dx = y - y0, x - x0
                out[:, a, b] = ((1 - dy) * ((1 - dx) * img[:, y0, x0] + dx * img[:, y0, x1])
                                + dy * ((1 - dx) * img[:, y1, x0] + dx * img[:, y1, x1]))
    return out.astype(np.float32)


def test_crop_resize_ios15_coremltools():
    """coremltools' expected values (iOS14 tests, ALIGN_CORNERS), roi with 4 and 5 coordinates."""
    roi = np.float32([1, 1, 2, 2]).reshape(1, 1, 4, 1, 1)
    roi_n = np.float32([0, 0, 0, 1 / 3, 1 / 3]).reshape(1, 1, 5, 1, 1)
    roi_inv = np.float32([2, 2, 1, 1]).reshape(1, 1, 4, 1, 1)
    kw = dict(box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="ALIGN_CORNERS")
    outs = run_mil(
        lambda x: (
            mb.crop_resize(x=x, roi=roi, target_height=2, target_width=2, **kw),
            mb.crop_resize(x=x, roi=roi, target_height=4, target_width=4, **kw),
            mb.crop_resize(x=x, roi=roi, target_height=1, target_width=1, **kw),
            mb.crop_resize(x=x, roi=roi_n, target_height=2, target_width=2, normalized_coordinates=True, **kw),
            mb.crop_resize(x=x, roi=roi_inv, target_height=2, target_width=2, **kw),
        ),
        {"x": IMG},
        target="iOS15",
    )
    thirds = 6 + np.arange(4)[:, None] * 4 / 3 + np.arange(4)[None, :] / 3
    check(outs, [
        np.float32([6, 7, 10, 11]).reshape(1, 1, 1, 2, 2),
        thirds.astype(np.float32).reshape(1, 1, 1, 4, 4),
        np.float32([8.5]).reshape(1, 1, 1, 1, 1),
        np.float32([1, 2, 5, 6]).reshape(1, 1, 1, 2, 2),
        np.float32([11, 10, 7, 6]).reshape(1, 1, 1, 2, 2),
    ])


BOXES3 = np.float32([[0.1, 0.3, 1.3, 1.0], [0.5, 1.8, 1.0, 0.3], [0.0, 0.4, 0.6, 0.7]])
WANT3 = [3.1, 5.2, None, None, None, 7.9, None, 13.9, 2.2, 3.1, 9.4, 10.3]  # None: pad_value; coremltools writes 7.899 for the exact 7.9


def test_crop_resize_ios16_pad_value():
    """coremltools' expected values: normalized boxes partly outside the image (TF crop_and_resize)."""
    roi = np.concatenate([np.zeros((3, 1), np.float32), BOXES3], axis=1).reshape(3, 1, 5, 1, 1)
    outs = run_mil(
        lambda x: tuple(
            mb.crop_resize(x=x, roi=roi, target_height=2, target_width=2, normalized_coordinates=True,
                           sampling_mode="ALIGN_CORNERS", pad_value=p)
            for p in (0.0, 10.0)
        ),
        {"x": IMG},
        target="iOS16",
    )
    check(outs, [np.float32([p if v is None else v for v in WANT3]).reshape(3, 1, 1, 2, 2) for p in (0.0, 10.0)])


def test_crop_resize_ios17_boxes():
    x = np.concatenate([IMG, IMG * 10 + rand(1, 1, 4, 4)], axis=0).repeat(2, axis=1)  # (2, 2, 4, 4)
    boxes = rand(5, 4) * 2 + 1.5  # some corners fall outside the image
    indices = np.int32([1, 0, 1, 1, 0])
    kw = dict(target_height=3, target_width=4)
    modes = ["ALIGN_CORNERS", "STRICT_ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"]
    outs = run_mil(
        lambda x, boxes, boxes2: (
            *(mb.crop_resize(x=x, boxes=boxes, box_indices=indices, sampling_mode=m, pad_value=-1.0, **kw) for m in modes),
            mb.crop_resize(x=x, boxes=boxes2, spatial_scale=0.5, box_coordinate_mode="CORNERS_WIDTH_FIRST", **kw),
            mb.crop_resize(x=x, boxes=boxes, box_indices=indices, box_coordinate_mode="CENTER_SIZE_HEIGHT_FIRST",
                           sampling_mode="ALIGN_CORNERS", **kw),
            mb.crop_resize(x=x, boxes=boxes, box_indices=indices, box_coordinate_mode="CENTER_SIZE_WIDTH_FIRST",
                           sampling_mode="UNALIGN_CORNERS", **kw),
            mb.crop_resize(x=x, boxes=np.float32([[0, 0, 1, 1]]), normalized_coordinates=True,
                           sampling_mode="OFFSET_CORNERS", **kw),
        ),
        {"x": x, "boxes": boxes, "boxes2": boxes[:2]},
        target="iOS17",
    )

    def want(corners, idx, mode, pad=0.0):
        res = []
        for (h0, w0, h1, w1), b in zip(corners, idx):
            res.append(np_sample(x[b], np_grid(mode, h0, h1, 3), np_grid(mode, w0, w1, 4), pad))
        return np.stack(res)

    b = boxes.astype(np.float64)
    center_h = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    center_w = np.stack([b[:, 1] - b[:, 3] / 2, b[:, 0] - b[:, 2] / 2, b[:, 1] + b[:, 3] / 2, b[:, 0] + b[:, 2] / 2], 1)
    wants = [want(b, indices, m, -1.0) for m in modes] + [
        want(b[:2, [1, 0, 3, 2]] * 0.5, [0, 1], "DEFAULT"),
        want(center_h, indices, "ALIGN_CORNERS"),
        want(center_w, indices, "UNALIGN_CORNERS"),
        want([(0, 0, 3, 3)], [0], "OFFSET_CORNERS"),
    ]
    check(outs, wants)


def test_crop_resize_whole_image_is_resize_bilinear():
    """A box over the whole image samples the grid resize_bilinear uses (checked against torch)."""
    x = rand(1, 2, 5, 4)
    kw = dict(target_height=8, target_width=3)
    outs = run_mil(
        lambda x: tuple(
            mb.crop_resize(x=x, boxes=np.float32([[0, 0, 4, 3]]), sampling_mode=m, **kw)
            for m in ("STRICT_ALIGN_CORNERS", "UNALIGN_CORNERS")
        ),
        {"x": x},
        target="iOS17",
    )
    check(outs, [interp(x, size=(8, 3), mode="bilinear", align_corners=a) for a in (True, False)])


# -- resample / affine ----------------------------------------------------------------------------

def test_resample_matches_grid_sample():
    x = rand(2, 3, 5, 6)
    grid = (RNG.uniform(-1.4, 1.4, size=(2, 4, 7, 2))).astype(np.float32)
    configs = []
    for mode in ("bilinear", "nearest"):
        for torch_pad in ("zeros", "border", "reflection"):
            for align in (True, False):
                configs.append((mode, torch_pad, align))

    def ml_padding(torch_pad, align):
        if torch_pad == "zeros":
            return "constant"
        if torch_pad == "reflection" and not align:
            return "symmetric"
        return torch_pad

    outs = run_mil(
        lambda x, grid: tuple(
            mb.resample(x=x, coordinates=grid, sampling_mode=m, padding_mode=ml_padding(p, a), padding_value=0.0,
                        coordinates_mode="normalized_minus_one_to_one", align_corners=a)
            for m, p, a in configs
        ),
        {"x": x, "grid": grid},
        target="iOS15",
    )
    wants = [F.grid_sample(t(x), t(grid), mode=m, padding_mode=p, align_corners=a).numpy() for m, p, a in configs]
    check(outs, wants)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_resample_coremltools(target, dtype):
    """coremltools' expected values for each coordinates mode and padding mode (iOS15 tests)."""
    x = np.float32([11, 22, 33, 44]).reshape(1, 1, 2, 2)
    if dtype == np.int32:
        coords = np.int32([0, 0, 1, 1, 0, 0, 1, 1]).reshape(1, 2, 2, 2)
    else:
        coords = np.float32([-1.0, -2.0, -3.7, -1.0, 0.0, 0.0, 3.5, 1.2]).reshape(1, 2, 2, 2)
    configs = [
        ("bilinear", "constant", 6.17, "normalized_minus_one_to_one", True),
        ("nearest", "border", -1.0, "unnormalized", False),
        ("bilinear", "reflection", -1.0, "normalized_zero_to_one", True),
        ("nearest", "symmetric", -1.0, "normalized_zero_to_one", False),
    ]
    outs = run_mil(
        lambda x, c: tuple(
            mb.resample(x=x, coordinates=c, sampling_mode=s, padding_mode=p, padding_value=v, coordinates_mode=cm,
                        align_corners=a)
            for s, p, v, cm, a in configs
        ),
        {"x": x, "c": coords},
        target=target,
    )
    if dtype == np.int32:
        wants = [[27.5, 44.0, 27.5, 44.0], [11.0, 44.0, 11.0, 44.0], [11.0, 44.0, 11.0, 44.0], [11.0, 44.0, 11.0, 44.0]]
    else:
        wants = [[8.585, 6.17, 27.5, 6.17], [11.0, 11.0, 11.0, 44.0], [22.0, 36.3, 11.0, 34.1], [22.0, 33.0, 11.0, 33.0]]
    check(outs, [np.float32(w).reshape(1, 1, 2, 2) for w in wants])


def test_affine():
    x = rand(2, 3, 5, 6)
    theta = (np.eye(2, 3)[None] + RNG.uniform(-0.6, 0.6, size=(2, 2, 3))).astype(np.float32)
    theta1 = theta[:1]
    outs = run_mil(
        lambda x, m, m1: tuple(
            mb.affine(x=x, transform_matrix=mat, output_height=4, output_width=7, sampling_mode="bilinear",
                      padding_mode="constant", padding_value=0.0, coordinates_mode="normalized_minus_one_to_one",
                      align_corners=a)
            for mat in (m, m1)
            for a in (True, False)
        ),
        {"x": x, "m": theta.reshape(2, 6), "m1": theta1.reshape(1, 6)},
        target="iOS15",
    )
    wants = []
    for th in (theta, np.repeat(theta1, 2, axis=0)):
        for a in (True, False):
            grid = F.affine_grid(t(th), (2, 3, 4, 7), align_corners=a)
            wants.append(F.grid_sample(t(x), grid, mode="bilinear", padding_mode="zeros", align_corners=a).numpy())
    check(outs, wants)


def test_affine_coremltools():
    x = np.float32([11, 22, 33, 44]).reshape(1, 1, 2, 2)
    m = np.float32([-1.0, -2.0, -3.7, -1.0, 3.5, 1.2]).reshape(1, 6)
    outs = run_mil(
        lambda x, m: tuple(
            mb.affine(x=x, transform_matrix=m, output_height=h, output_width=w, sampling_mode="bilinear",
                      padding_mode="constant", padding_value=0.0, coordinates_mode="normalized_minus_one_to_one",
                      align_corners=True)
            for h, w in ((3, 3), (2, 5))
        ),
        {"x": x, "m": m},
        target="iOS15",
    )
    check(outs, [
        np.float32([10.752501, 2.5025, 0, 1.9799997, 0, 0, 0, 0, 0]).reshape(1, 1, 3, 3),
        np.float32([10.752501, 5.94, 2.5025, 0.44000006, 0, 0, 0, 0, 0, 0]).reshape(1, 1, 2, 5),
    ])
