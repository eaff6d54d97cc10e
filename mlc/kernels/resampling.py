"""Resampling grids and bilinear sampling shared by the resizing ops of both front ends (MIL
``resize_bilinear``, ``upsample_bilinear``, ``resize``, ``crop_resize``; NeuralNetwork
``upsample``, ``resizeBilinear``, ``cropResize``).

Sampling grids (``sampling_mode``, MIL's names), for an axis of ``n`` inputs resized to ``m``
outputs, as positions in input pixels (0 is the first pixel's centre), clamped to [0, n - 1]:

* STRICT_ALIGN_CORNERS: i * (n - 1) / (m - 1)            (0 when m == 1)
* ALIGN_CORNERS:        as STRICT, but (n - 1) / 2 when m == 1
* DEFAULT:              i * n / m                         (TF half_pixel_centers=False)
* OFFSET_CORNERS:       (i + 0.5) * max(1, n - 1) / m
* UNALIGN_CORNERS:      (i + 0.5) * n / m - 0.5           (torch align_corners=False)

A crop-and-resize samples the same grids inside a box, with the box ends as the first and last
pixel centres (``box_grid``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")
BOX_MODES = ("CORNERS_HEIGHT_FIRST", "CORNERS_WIDTH_FIRST", "CENTER_SIZE_HEIGHT_FIRST", "CENTER_SIZE_WIDTH_FIRST")


def resize_grid(mode: str, n: float, m: int) -> np.ndarray:
    """Unclamped sample positions (float64) of ``m`` outputs over an axis of extent ``n``, on the
    ``mode`` grid (module doc)."""
    i = np.arange(m, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if m == 1:
            return np.array([(n - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0])
        return i * (n - 1) / (m - 1)
    if mode == "DEFAULT":
        return i * n / m
    if mode == "OFFSET_CORNERS":
        return (i + 0.5) * max(1.0, n - 1) / m
    if mode == "UNALIGN_CORNERS":
        return (i + 0.5) * n / m - 0.5
    raise ValueError(f"unknown sampling_mode {mode!r}; expected one of {', '.join(SAMPLING_MODES)}")


def linear_axis(x, axis: int, pos: np.ndarray):
    """Linear interpolation of ``x`` along ``axis`` at static positions ``pos`` (clamped to the
    axis), in x's dtype."""
    n = jnp.shape(x)[axis]
    pos = np.clip(pos, 0, n - 1)
    i0 = np.floor(pos).astype(np.int32)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * jnp.ndim(x)
    shape[axis] = len(pos)
    w1 = (pos - i0).astype(np.float32).reshape(shape)
    x0, x1 = jnp.take(x, i0, axis=axis), jnp.take(x, i1, axis=axis)
    dtype = jnp.result_type(x)
    return x0 * (1 - w1).astype(dtype) + x1 * w1.astype(dtype)


def resize_linear(x, sizes: dict[int, int], mode: str):
    """Bilinear (multilinear) resize of ``x``: each ``axis: size`` of ``sizes`` in turn, on the
    ``mode`` grid."""
    for axis, m in sizes.items():
        x = linear_axis(x, axis, resize_grid(mode, jnp.shape(x)[axis], m))
    return x


def box_corners(boxes, box_mode: str):
    """``(N, 4)`` boxes in ``box_mode`` (one of ``BOX_MODES``) -> h_start, w_start, h_end, w_end,
    each ``(N,)``."""
    a, b, c, d = (boxes[:, i] for i in range(4))
    if box_mode == "CORNERS_HEIGHT_FIRST":
        return a, b, c, d
    if box_mode == "CORNERS_WIDTH_FIRST":
        return b, a, d, c
    if box_mode == "CENTER_SIZE_HEIGHT_FIRST":
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if box_mode == "CENTER_SIZE_WIDTH_FIRST":
        return b - d / 2, a - c / 2, b + d / 2, a + c / 2
    raise ValueError(f"unknown box_coordinate_mode {box_mode!r}; expected one of {', '.join(BOX_MODES)}")


def box_grid(start, end, m: int, mode: str):
    """``(N, m)`` sample positions in boxes ``[start, end]`` (each ``(N,)``): the ``mode`` grid
    over an axis whose first and last pixel centres are the box ends, clamped to the box
    (``end < start`` flips the crop)."""
    extent = end - start  # what n - 1 is for a whole axis
    i = jnp.arange(m, dtype=jnp.float32)[None, :]
    e = extent[:, None]
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if m == 1:
            t = e / 2 if mode == "ALIGN_CORNERS" else jnp.zeros_like(e)
        else:
            t = i * e / (m - 1)
    elif mode == "DEFAULT":
        t = i * (e + 1) / m
    elif mode == "OFFSET_CORNERS":
        t = (i + 0.5) * jnp.maximum(1.0, e) / m
    elif mode == "UNALIGN_CORNERS":
        t = (i + 0.5) * (e + 1) / m - 0.5
    else:
        raise ValueError(f"unknown sampling_mode {mode!r}; expected one of {', '.join(SAMPLING_MODES)}")
    lo, hi = jnp.minimum(0.0, e), jnp.maximum(0.0, e)
    return start[:, None] + jnp.clip(t, lo, hi)


def bilinear_padded(img, ys, xs, pad_value):
    """Bilinear samples of ``img`` (C, H, W) at rows ``ys`` (h,) x columns ``xs`` (w,) -> (C, h, w);
    positions outside the image (< 0 or > size - 1) give ``pad_value``."""
    _, h, w = jnp.shape(img)

    def taps(p, n):
        p0 = jnp.floor(p)
        i0 = jnp.clip(p0, 0, n - 1).astype(jnp.int32)
        i1 = jnp.clip(p0 + 1, 0, n - 1).astype(jnp.int32)
        return i0, i1, (p - p0).astype(img.dtype), (p >= 0) & (p <= n - 1)

    y0, y1, wy, vy = taps(ys, h)
    x0, x1, wx, vx = taps(xs, w)
    rows = jnp.take(img, y0, axis=1) * (1 - wy)[:, None] + jnp.take(img, y1, axis=1) * wy[:, None]
    out = jnp.take(rows, x0, axis=2) * (1 - wx) + jnp.take(rows, x1, axis=2) * wx
    return jnp.where(vy[:, None] & vx[None, :], out, jnp.asarray(pad_value, img.dtype))


def crop_resize(images, boxes, box_indices, *, box_mode: str, normalized: bool, height: int, width: int,
                sampling_mode: str, pad_value):
    """``(N, C, height, width)`` bilinear crops of ``images[box_indices[n]]`` (images ``(B, C, H, W)``)
    at ``boxes[n]`` (``(N, 4)`` in ``box_mode``, already scaled; with ``normalized`` the
    coordinates are fractions of ``(H - 1, W - 1)``). Samples outside the image are ``pad_value``."""
    _, _, h, w = jnp.shape(images)
    h0, w0, h1, w1 = box_corners(boxes, box_mode)
    if normalized:
        h0, h1, w0, w1 = h0 * (h - 1), h1 * (h - 1), w0 * (w - 1), w1 * (w - 1)
    ys = box_grid(h0, h1, height, sampling_mode)
    xs = box_grid(w0, w1, width, sampling_mode)
    picked = jnp.take(images, jnp.asarray(box_indices).astype(jnp.int32), axis=0)
    return jax.vmap(bilinear_padded, in_axes=(0, 0, 0, None))(picked, ys, xs, pad_value)
