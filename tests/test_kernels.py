"""mlc.kernels: the computations the front ends share, importable from one place and used by
both the MIL ops and the NeuralNetwork layers; numeric checks against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.kernels import nms, resampling, sampling


def test_kernels_are_public_in_mlc_kernels():
    from mlc.kernels.nms import non_maximum_suppression, pairwise_iou, suppress  # noqa: F401
    from mlc.kernels.resampling import (  # noqa: F401
        BOX_MODES,
        SAMPLING_MODES,
        bilinear_padded,
        box_corners,
        box_grid,
        crop_resize,
        linear_axis,
        resize_grid,
        resize_linear,
    )
    from mlc.kernels.sampling import random_key, sample  # noqa: F401


def test_both_front_ends_use_the_same_kernels():
    from mlc.frontends.classic.models import non_maximum_suppression as classic_nms
    from mlc.frontends.mil.ops import image_resizing, tensor_operation
    from mlc.frontends.mil.ops import random as mil_random
    from mlc.frontends.neuralnetwork.layers import detection, resize
    from mlc.frontends.neuralnetwork.layers import random as nn_random

    # NMS: the NN layer jits the kernel itself, the MIL op calls it through the module
    assert detection._nms_jit.__wrapped__ is nms.non_maximum_suppression
    assert detection.nms is nms and tensor_operation.nms is nms
    assert classic_nms.pairwise_iou is nms.pairwise_iou
    # resizing
    assert resize.resize_linear is image_resizing.resize_linear is resampling.resize_linear
    assert resize.crop_resize_kernel is image_resizing.crop_resize_kernel is resampling.crop_resize
    # random draws
    assert nn_random.sample is mil_random.sample is sampling.sample


def test_mil_nms_op_runs_the_kernel(monkeypatch):
    from mlc.frontends.mil.ops import tensor_operation

    calls = []
    real = nms.non_maximum_suppression

    def spy(*args):
        calls.append(args[4:])
        return real(*args)

    monkeypatch.setattr(nms, "non_maximum_suppression", spy)
    boxes, scores = np.zeros((1, 3, 4), np.float32), np.ones((1, 3, 2), np.float32)
    tensor_operation.non_maximum_suppression(boxes, scores, 0.5, 0.0, np.int32(2), np.bool_(True))
    assert calls == [(2, True)] and type(calls[0][0]) is int and type(calls[0][1]) is bool


# -- resampling ----------------------------------------------------------------------------------

def _numpy_grid(mode, n, m):
    i = np.arange(m, dtype=np.float64)
    return {
        "STRICT_ALIGN_CORNERS": i * (n - 1) / (m - 1) if m > 1 else np.zeros(1),
        "ALIGN_CORNERS": i * (n - 1) / (m - 1) if m > 1 else np.full(1, (n - 1) / 2),
        "DEFAULT": i * n / m,
        "OFFSET_CORNERS": (i + 0.5) * max(1, n - 1) / m,
        "UNALIGN_CORNERS": (i + 0.5) * n / m - 0.5,
    }[mode]


@pytest.mark.parametrize("mode", resampling.SAMPLING_MODES)
@pytest.mark.parametrize("n, m", [(5, 7), (6, 3), (4, 1)])
def test_resize_linear_matches_numpy_interp(mode, n, m):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, n)).astype(np.float32)
    np.testing.assert_allclose(resampling.resize_grid(mode, n, m), _numpy_grid(mode, n, m))
    out = np.asarray(resampling.resize_linear(jnp.asarray(x), {2: m}, mode))
    pos = _numpy_grid(mode, n, m)  # np.interp clamps to the ends, as the kernel does
    want = np.apply_along_axis(lambda row: np.interp(pos, np.arange(n), row), 2, x)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_unknown_sampling_mode():
    with pytest.raises(ValueError, match="unknown sampling_mode 'NOPE'"):
        resampling.resize_grid("NOPE", 4, 2)


def _numpy_bilinear_padded(img, ys, xs, pad):
    c, h, w = img.shape
    out = np.full((c, len(ys), len(xs)), pad, np.float64)
    for a, y in enumerate(ys):
        for b, x in enumerate(xs):
            if not (0 <= y <= h - 1 and 0 <= x <= w - 1):
                continue
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            wy, wx = y - y0, x - x0
            out[:, a, b] = ((1 - wy) * ((1 - wx) * img[:, y0, x0] + wx * img[:, y0, x1])
                            + wy * ((1 - wx) * img[:, y1, x0] + wx * img[:, y1, x1]))
    return out


def test_bilinear_padded_matches_numpy():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 4, 5)).astype(np.float32)
    ys = np.array([-0.5, 0.0, 1.25, 2.5, 3.0, 3.5], np.float32)
    xs = np.array([0.0, 0.75, 3.9, 4.0, 4.2], np.float32)
    out = np.asarray(resampling.bilinear_padded(jnp.asarray(img), jnp.asarray(ys), jnp.asarray(xs), -7.0))
    np.testing.assert_allclose(out, _numpy_bilinear_padded(img, ys, xs, -7.0), rtol=1e-5, atol=1e-5)


def test_crop_resize_matches_numpy():
    rng = np.random.default_rng(2)
    images = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    boxes = np.array([[1.0, 0.5, 4.0, 5.5], [0.0, 2.0, 5.0, 2.0]], np.float32)  # (h0, w0, h1, w1)
    out = np.asarray(resampling.crop_resize(jnp.asarray(images), jnp.asarray(boxes), np.array([1, 0]),
                                            box_mode="CORNERS_HEIGHT_FIRST", normalized=False, height=3, width=4,
                                            sampling_mode="STRICT_ALIGN_CORNERS", pad_value=0.0))
    assert out.shape == (2, 3, 3, 4)
    for k, (h0, w0, h1, w1) in enumerate(boxes):
        ys, xs = np.linspace(h0, h1, 3), np.linspace(w0, w1, 4)
        np.testing.assert_allclose(out[k], _numpy_bilinear_padded(images[[1, 0][k]], ys, xs, 0.0), rtol=1e-5, atol=1e-5)


# -- non-maximum suppression -----------------------------------------------------------------------

def _numpy_iou(a, b):
    ax0, ax1, ay0, ay1 = a[0] - a[2] / 2, a[0] + a[2] / 2, a[1] - a[3] / 2, a[1] + a[3] / 2
    bx0, bx1, by0, by1 = b[0] - b[2] / 2, b[0] + b[2] / 2, b[1] - b[3] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    return min(inter / union, 1.0) if union > 0 else 0.0


def test_pairwise_iou_matches_numpy():
    rng = np.random.default_rng(3)
    boxes = rng.random((7, 4)).astype(np.float32)
    boxes[6, 2:] = 0.0  # an empty box
    want = np.array([[_numpy_iou(a, b) for b in boxes.astype(np.float64)] for a in boxes.astype(np.float64)])
    np.testing.assert_allclose(np.asarray(nms.pairwise_iou(jnp.asarray(boxes))), want, rtol=1e-5, atol=1e-6)


def _numpy_nms(boxes, scores, iou_t, score_t, m, per_class):
    best, cls = scores.max(-1), scores.argmax(-1)
    kept = []
    for i in np.argsort(-best, kind="stable"):
        if best[i] < score_t or len(kept) == m:
            continue
        if all(_numpy_iou(boxes[i], boxes[k]) <= iou_t or (per_class and cls[i] != cls[k]) for k in kept):
            kept.append(int(i))
    return kept or [int(np.argmax(best))]


@pytest.mark.parametrize("per_class", [False, True])
def test_non_maximum_suppression_matches_numpy(per_class):
    rng = np.random.default_rng(4)
    boxes = rng.random((2, 20, 4)).astype(np.float32)
    scores = rng.random((2, 20, 3)).astype(np.float32)
    m = 8
    result = nms.non_maximum_suppression(jnp.asarray(boxes), jnp.asarray(scores), 0.2, 0.4, m, per_class)
    out_boxes, out_scores, index, count = (np.asarray(a) for a in result)
    for i in range(2):
        kept = _numpy_nms(boxes[i].astype(np.float64), scores[i], 0.2, 0.4, m, per_class)
        k = len(kept)
        assert count[i] == k
        np.testing.assert_array_equal(index[i], kept + [-1] * (m - k))
        np.testing.assert_array_equal(out_boxes[i, :k], boxes[i, kept])
        np.testing.assert_array_equal(out_scores[i, :k], scores[i, kept])
        assert not out_boxes[i, k:].any() and not out_scores[i, k:].any()


# -- random draws ------------------------------------------------------------------------------------

def test_seeded_sample_is_the_flat_draw_reshaped():
    u = np.asarray(sampling.sample(jax.random.uniform, 7, (2, 3), jnp.float32))
    flat = np.asarray(jax.random.uniform(jax.random.key(7), (6,), jnp.float32))
    np.testing.assert_array_equal(u, flat.reshape(2, 3))
    np.testing.assert_array_equal(u, np.asarray(sampling.sample(jax.random.uniform, np.int32(7), (2, 3), jnp.float32)))
    assert ((u >= 0) & (u < 1)).all()


def test_fresh_samples_differ_and_bad_arguments_are_refused():
    draw = jax.jit(lambda: sampling.sample(jax.random.normal, -1, (64,), jnp.float32))
    a, b = np.asarray(draw()), np.asarray(draw())
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        sampling.random_key(-2)
    with pytest.raises(ValueError, match="negative size"):
        sampling.sample(jax.random.normal, 0, (2, -1), jnp.float32)
