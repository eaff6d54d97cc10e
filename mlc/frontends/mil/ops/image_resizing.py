"""Image resizing (iOS15/16/17 image_resizing.py): upsample, resize, crop, crop_resize, affine, resample.

Sampling grids (``sampling_mode``), for an axis of ``n`` inputs resized to ``m`` outputs, as
positions in input pixels (0 is the first pixel's centre), clamped to [0, n - 1]:

* STRICT_ALIGN_CORNERS: i * (n - 1) / (m - 1)            (0 when m == 1)
* ALIGN_CORNERS:        as STRICT, but (n - 1) / 2 when m == 1
* DEFAULT:              i * n / m                         (TF half_pixel_centers=False)
* OFFSET_CORNERS:       (i + 0.5) * max(1, n - 1) / m
* UNALIGN_CORNERS:      (i + 0.5) * n / m - 0.5           (torch align_corners=False)

Nearest-neighbour picks floor(i * n / m) when upsampling by a scale factor (torch's
``nearest``), and floor((i + 0.5) * n / m) when resizing to a size (torch's ``nearest-exact``,
TF half_pixel_centers=True). Scale factors are applied as the ratio of the output size
floor(n * scale) to n, as coremltools documents (torch's ``recompute_scale_factor=True``).

The linear grids, box grids and bilinear sampling live in ``mlc.kernels.resampling``, shared
with the NeuralNetwork resizing layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc.kernels.resampling import crop_resize as crop_resize_kernel, resize_grid, resize_linear
from mlc.frontends.mil.ops._helpers import static_bool, static_float, static_int, static_ints, static_str
from mlc.frontends.mil.registry import op


def _nearest_axis(x, axis: int, index: np.ndarray):
    return jnp.take(x, np.clip(index, 0, jnp.shape(x)[axis] - 1).astype(np.int32), axis=axis)


def _nearest_floor(n: int, m: int) -> np.ndarray:
    """floor(i * n / m), exactly."""
    return (np.arange(m) * n) // m


def _nearest_half_pixel(n: int, m: int) -> np.ndarray:
    """floor((i + 0.5) * n / m), exactly."""
    return ((2 * np.arange(m) + 1) * n) // (2 * m)


def _scaled(n: int, scale) -> int:
    """floor(n * scale), computed as coremltools infers the output shape."""
    return int(np.floor(np.asarray(scale).reshape(()) * n))


def _check_rank(x, name: str):
    if jnp.ndim(x) < 3:
        raise ValueError(f"{name} needs an input of rank >= 3, got rank {jnp.ndim(x)}")


@op("upsample_nearest_neighbor", static=("scale_factor_height", "scale_factor_width"))
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """Output floor(H * scale) x floor(W * scale); source index floor(i * in / out)."""
    _check_rank(x, "upsample_nearest_neighbor")
    for axis, scale in ((-2, scale_factor_height), (-1, scale_factor_width)):
        n = jnp.shape(x)[axis]
        x = _nearest_axis(x, jnp.ndim(x) + axis, _nearest_floor(n, _scaled(n, scale)))
    return x


@op("resize_nearest_neighbor", static=("target_size_height", "target_size_width"))
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    """Source index floor((i + 0.5) * in / out) (torch nearest-exact, TF half_pixel_centers)."""
    _check_rank(x, "resize_nearest_neighbor")
    for axis, m in ((-2, target_size_height), (-1, target_size_width)):
        x = _nearest_axis(x, jnp.ndim(x) + axis, _nearest_half_pixel(jnp.shape(x)[axis], static_int(m)))
    return x


@op("upsample_bilinear", static=("scale_factor_height", "scale_factor_width", "align_corners", "half_pixel_centers"))
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    """Grid STRICT_ALIGN_CORNERS if align_corners, else UNALIGN_CORNERS if half_pixel_centers
    (iOS16; defaults to not align_corners), else DEFAULT."""
    _check_rank(x, "upsample_bilinear")
    align = static_bool(align_corners)
    half = not align if half_pixel_centers is None else static_bool(half_pixel_centers)
    if align and half:
        raise ValueError("upsample_bilinear: align_corners and half_pixel_centers cannot both be True")
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")
    rank = jnp.ndim(x)
    h, w = jnp.shape(x)[-2:]
    sizes = {rank - 2: _scaled(h, scale_factor_height), rank - 1: _scaled(w, scale_factor_width)}
    return resize_linear(x, sizes, mode)


@op("resize_bilinear", static=("target_size_height", "target_size_width", "sampling_mode"))
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    _check_rank(x, "resize_bilinear")
    rank = jnp.ndim(x)
    sizes = {rank - 2: static_int(target_size_height), rank - 1: static_int(target_size_width)}
    return resize_linear(x, sizes, static_str(sampling_mode))


@op("resize", static=("shape", "resized_dims", "interpolation_mode", "sampling_mode"), since="CoreML7")
def resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """Resize the last ``resized_dims`` axes to the last entries of ``shape`` (0 keeps a size).

    NEAREST_NEIGHBOR uses floor((i + 0.5) * n / m) for DEFAULT and UNALIGN_CORNERS, and the
    nearest grid point (halves round up) of the other sampling modes.
    """
    shape = static_ints(shape)
    k = static_int(resized_dims)
    rank = jnp.ndim(x)
    if k > len(shape) or len(shape) > rank:
        raise ValueError(f"resize: need resized_dims ({k}) <= len(shape) ({len(shape)}) <= rank ({rank})")
    mode, interp = static_str(sampling_mode), static_str(interpolation_mode)
    sizes = {}
    for j in range(k):
        axis, m = rank - k + j, shape[len(shape) - k + j]
        sizes[axis] = jnp.shape(x)[axis] if m == 0 else m
    dtype = jnp.result_type(x)
    if interp == "LINEAR":
        y = x if jnp.issubdtype(dtype, jnp.floating) else jnp.asarray(x, jnp.float32)
        return resize_linear(y, sizes, mode).astype(dtype)
    if interp != "NEAREST_NEIGHBOR":
        raise ValueError(f"resize: unknown interpolation_mode {interp!r}")
    for axis, m in sizes.items():
        n = jnp.shape(x)[axis]
        if mode in ("DEFAULT", "UNALIGN_CORNERS"):
            index = _nearest_half_pixel(n, m)
        else:
            index = np.floor(resize_grid(mode, n, m) + 0.5)
        x = _nearest_axis(x, axis, index)
    return x


@op("crop", static=("crop_height", "crop_width"))
def crop(x, crop_height, crop_width):
    """Remove crop_height = (top, bottom) rows and crop_width = (left, right) columns."""
    _check_rank(x, "crop")
    top, bottom = static_ints(crop_height)
    left, right = static_ints(crop_width)
    h, w = jnp.shape(x)[-2:]
    return x[..., top : h - bottom, left : w - right]


# -- crop_resize -------------------------------------------------------------------------------

def _crop_resize(x, boxes, box_indices, target_height, target_width, normalized_coordinates, spatial_scale,
                 box_coordinate_mode, sampling_mode, pad_value):
    """(N, C, target_height, target_width) crops of x[box_indices[n]] at boxes[n]."""
    if jnp.ndim(x) != 4:
        raise ValueError(f"crop_resize needs a rank-4 input (B, C, H, W), got rank {jnp.ndim(x)}")
    boxes = jnp.asarray(boxes, jnp.float32) * static_float(spatial_scale)
    return crop_resize_kernel(
        x, boxes, box_indices, box_mode=static_str(box_coordinate_mode), normalized=static_bool(normalized_coordinates),
        height=static_int(target_height), width=static_int(target_width), sampling_mode=static_str(sampling_mode),
        pad_value=static_float(pad_value),
    )


_CROP_RESIZE_STATIC = ("target_height", "target_width", "normalized_coordinates", "spatial_scale",
                       "box_coordinate_mode", "sampling_mode", "pad_value")


@op("crop_resize", static=_CROP_RESIZE_STATIC)
def crop_resize(x, roi, target_height=1, target_width=1, normalized_coordinates=False, spatial_scale=1.0,
                box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT", pad_value=0.0):
    """iOS15/16: roi (N, 1, 4 or 5, 1, 1). Four coordinates crop every image: (N, B, C, h, w);
    five start with the image index: (N, 1, C, h, w). Samples outside the image are ``pad_value``
    (iOS16; 0 before). Within a box, the grid follows ``sampling_mode`` (module doc), with the box
    ends as the first and last pixel centres."""
    roi = jnp.reshape(roi, (jnp.shape(roi)[0], -1))
    args = (target_height, target_width, normalized_coordinates, spatial_scale, box_coordinate_mode, sampling_mode,
            pad_value)
    n, b = jnp.shape(roi)[0], jnp.shape(x)[0]
    if jnp.shape(roi)[1] == 5:
        out = _crop_resize(x, roi[:, 1:], roi[:, 0], *args)
        return jnp.expand_dims(out, 1)
    if jnp.shape(roi)[1] != 4:
        raise ValueError(f"crop_resize: roi must have shape (N, 1, 4 or 5, 1, 1), got {jnp.shape(roi)}")
    boxes = jnp.repeat(roi, b, axis=0)
    out = _crop_resize(x, boxes, np.tile(np.arange(b), n), *args)
    return jnp.reshape(out, (n, b) + jnp.shape(out)[1:])


@op("crop_resize", static=_CROP_RESIZE_STATIC, since="CoreML7")
def crop_resize_ios17(x, boxes, box_indices=None, target_height=1, target_width=1, normalized_coordinates=False,
                      spatial_scale=1.0, box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT",
                      pad_value=0.0):
    """iOS17: boxes (N, 4), box_indices (N,) (default 0..N-1) -> (N, C, h, w)."""
    if box_indices is None:
        box_indices = np.arange(jnp.shape(boxes)[0])
    return _crop_resize(x, boxes, box_indices, target_height, target_width, normalized_coordinates, spatial_scale,
                        box_coordinate_mode, sampling_mode, pad_value)


# -- resample / affine -------------------------------------------------------------------------

def _unnormalize(c, n: int, coordinates_mode: str, align_corners: bool):
    """Coordinates in ``coordinates_mode`` -> input pixel positions."""
    if coordinates_mode == "unnormalized":
        return c
    if coordinates_mode == "normalized_minus_one_to_one":
        return (c + 1) / 2 * (n - 1) if align_corners else ((c + 1) * n - 1) / 2
    if coordinates_mode == "normalized_zero_to_one":
        return c * (n - 1) if align_corners else c * n - 0.5
    raise ValueError(f"unknown coordinates_mode {coordinates_mode!r}")


def _reflect(p, lo: float, hi: float):
    """Reflect positions into [lo, hi] (mirror at both ends, repeatedly)."""
    span = hi - lo
    if span <= 0:
        return jnp.zeros_like(p) + lo
    t = jnp.mod(p - lo, 2 * span)
    return lo + jnp.where(t > span, 2 * span - t, t)


def _pad_positions(p, n: int, padding_mode: str):
    """Fold positions outside the image back in, for every padding mode but ``constant``."""
    if padding_mode == "constant":
        return p
    if padding_mode == "border":
        return jnp.clip(p, 0, n - 1)
    if padding_mode == "reflection":  # mirror at the edge pixels' centres: |1 2 3| -> 2 3 2 1 2 3 2 1
        return jnp.clip(_reflect(p, 0.0, n - 1.0), 0, n - 1)
    if padding_mode == "symmetric":  # mirror at the image edges: |1 2 3| -> 3 2 1 1 2 3 3 2 1
        return jnp.clip(_reflect(p, -0.5, n - 0.5), 0, n - 1)
    raise ValueError(f"unknown padding_mode {padding_mode!r}")


def _sample_image(img, px, py, bilinear: bool, pad_value):
    """img (C, H, W) at positions px, py (any shape S) -> (C, *S); outside taps are pad_value."""
    _, h, w = jnp.shape(img)
    dtype = img.dtype
    pad = jnp.asarray(pad_value, dtype)

    def tap(iy, ix):
        valid = (iy >= 0) & (iy <= h - 1) & (ix >= 0) & (ix <= w - 1)
        v = img[:, jnp.clip(iy, 0, h - 1), jnp.clip(ix, 0, w - 1)]
        return jnp.where(valid, v, pad)

    if not bilinear:  # round half to even, as torch's grid_sample
        return tap(jnp.round(py).astype(jnp.int32), jnp.round(px).astype(jnp.int32))
    x0, y0 = jnp.floor(px), jnp.floor(py)
    wx, wy = (px - x0).astype(dtype), (py - y0).astype(dtype)
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def _resample(x, cx, cy, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """x (B, C, H, W) sampled at coordinates cx, cy (B, H2, W2) -> (B, C, H2, W2)."""
    if jnp.ndim(x) != 4:
        raise ValueError(f"needs a rank-4 input (B, C, H, W), got rank {jnp.ndim(x)}")
    _, _, h, w = jnp.shape(x)
    sampling, padding = static_str(sampling_mode).lower(), static_str(padding_mode).lower()
    if sampling not in ("bilinear", "nearest"):
        raise ValueError(f"unknown sampling_mode {sampling!r}; expected bilinear or nearest")
    coords, align = static_str(coordinates_mode).lower(), static_bool(align_corners)
    px = _pad_positions(_unnormalize(cx, w, coords, align), w, padding)
    py = _pad_positions(_unnormalize(cy, h, coords, align), h, padding)
    sample = jax.vmap(_sample_image, in_axes=(0, 0, 0, None, None))
    return sample(x, px, py, sampling == "bilinear", static_float(padding_value))


_RESAMPLE_STATIC = ("sampling_mode", "padding_mode", "padding_value", "coordinates_mode", "align_corners")


@op("resample", static=_RESAMPLE_STATIC)
def resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """x (B, C, H, W) at coordinates (B, H2, W2, 2) given as (x, y) pairs, like torch's grid_sample."""
    c = jnp.asarray(coordinates).astype(jnp.result_type(x))
    return _resample(x, c[..., 0], c[..., 1], sampling_mode, padding_mode, padding_value, coordinates_mode,
                     align_corners)


@op("affine", static=("output_height", "output_width") + _RESAMPLE_STATIC)
def affine(x, transform_matrix, output_height, output_width, sampling_mode, padding_mode, padding_value,
           coordinates_mode, align_corners):
    """Sample x at (a0 x + a1 y + a2, b0 x + b1 y + b2) for each output point (x, y) of a
    normalized [-1, 1] grid, like torch's affine_grid + grid_sample; transform (B or 1, 6)."""
    coords = static_str(coordinates_mode)
    if coords.lower() != "normalized_minus_one_to_one":
        raise ValueError(f"affine supports coordinates_mode normalized_minus_one_to_one only, got {coords!r}")
    oh, ow = static_int(output_height), static_int(output_width)
    align = static_bool(align_corners)

    def axis(m):
        if align:
            return np.linspace(-1.0, 1.0, m) if m > 1 else np.zeros(1)
        return (2 * np.arange(m) + 1) / m - 1

    gx, gy = (a.astype(np.float32) for a in np.meshgrid(axis(ow), axis(oh)))  # (oh, ow) each
    t = jnp.asarray(transform_matrix).astype(jnp.result_type(x))
    t = jnp.broadcast_to(t, (jnp.shape(x)[0], 6))[:, :, None, None]
    cx = t[:, 0] * gx + t[:, 1] * gy + t[:, 2]
    cy = t[:, 3] * gx + t[:, 4] * gy + t[:, 5]
    return _resample(x, cx, cy, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners)
