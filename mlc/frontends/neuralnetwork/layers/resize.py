"""Legacy resizing layers: ``upsample``, ``resizeBilinear``, ``cropResize``.

Sampling grids follow NeuralNetwork.proto (``SamplingMode``, ``UpsampleLayerParams``); they are
the grids of the ML Program ops, so the interpolation kernels (``mlc.kernels.resampling``) are
shared. ``SamplingMode`` -> MIL ``sampling_mode``:

* STRICT_ALIGN_ENDPOINTS_MODE -> STRICT_ALIGN_CORNERS: i * (X - 1) / (N - 1) (0 when N == 1)
* ALIGN_ENDPOINTS_MODE -> ALIGN_CORNERS: as strict, but (X - 1) / 2 when N == 1
* UPSAMPLE_MODE -> DEFAULT: linspace(0, X - X/N, N) = i * X / N
* ROI_ALIGN_MODE -> OFFSET_CORNERS: (i + 0.5) * max(1, X - 1) / N

``upsample`` and ``resizeBilinear`` act on the last two axes (leading axes are batch) and do not
depend on the shape world. ``cropResize`` is defined on rank-5 tensors only (feature map
``[1, B, C, H, W]``, boxes ``[N, 1, 4|5, 1, 1]``, output ``[N, B|1, C, h, w]``); the exact-world
converter builds those rank-5 tensors itself, so it works from its inputs' ranks in both worlds.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCUnsupportedError
from mlc.kernels.resampling import crop_resize as crop_resize_kernel, resize_linear
from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer

SAMPLING_MODES = {0: "STRICT_ALIGN_CORNERS", 1: "ALIGN_CORNERS", 2: "DEFAULT", 3: "OFFSET_CORNERS"}
BOX_MODES = {0: "CORNERS_HEIGHT_FIRST", 1: "CORNERS_WIDTH_FIRST", 2: "CENTER_SIZE_HEIGHT_FIRST", 3: "CENTER_SIZE_WIDTH_FIRST"}
NN, BILINEAR = 0, 1
LINEAR_GRIDS = {0: "DEFAULT", 1: "STRICT_ALIGN_CORNERS", 2: "UNALIGN_CORNERS"}  # LinearUpsampleMode


def _need_rank(ctx, x, rank: int):
    if jnp.ndim(x) < rank:
        raise ctx.fail(f"input must have rank >= {rank}, got shape {tuple(jnp.shape(x))}")


def _resize_hw(x, sizes: tuple[int, int], grid: str):
    """Bilinear resize of the last two axes to ``sizes`` on the named MIL grid."""
    rank = jnp.ndim(x)
    return resize_linear(x, {rank - 2: sizes[0], rank - 1: sizes[1]}, grid)


def _target_size(ctx, p) -> tuple[int, int]:
    size = [int(s) for s in p.targetSize] or [1, 1]
    if len(size) != 2 or min(size) < 1:
        raise ctx.fail(f"targetSize must be 2 positive sizes [H, W], got {size}")
    return tuple(size)


def _sampling(ctx, p) -> str:
    method = int(p.mode.samplingMethod)
    if method not in SAMPLING_MODES:
        raise ctx.fail(f"unknown samplingMethod {method}")
    return SAMPLING_MODES[method]


# -- upsample ------------------------------------------------------------------------------------

def _scales(ctx, p) -> tuple[tuple[float, float], bool]:
    """(scale H, scale W) and whether they are fractional (``fractionalScalingFactor``)."""
    ints, fracs = list(p.scalingFactor), list(p.fractionalScalingFactor)
    if ints and fracs:
        raise ctx.fail("scalingFactor and fractionalScalingFactor are mutually exclusive")
    if fracs:
        if len(fracs) != 2 or min(fracs) <= 0:
            raise ctx.fail(f"fractionalScalingFactor must be 2 positive factors [H, W], got {fracs}")
        return (float(fracs[0]), float(fracs[1])), True
    ints = [int(s) for s in ints] or [1, 1]
    if len(ints) != 2 or min(ints) < 1:
        raise ctx.fail(f"scalingFactor must be 2 positive factors [H, W], got {ints}")
    return (ints[0], ints[1]), False


@layer("upsample")
def upsample(ctx, p, x):
    """``UpsampleLayerParams``: output ``floor(H * sh) x floor(W * sw)``.

    NN repeats each pixel (integer factors). BILINEAR samples the grid of ``linearUpsampleMode``:
    DEFAULT ``i * Xin / Xout`` (= i / scale), ALIGN_CORNERS_TRUE ``i * (Xin-1) / (Xout-1)``,
    ALIGN_CORNERS_FALSE ``(i + 0.5) * Xin / Xout - 0.5``, clamped to ``[0, Xin-1]`` (torch's
    ``interpolate(..., recompute_scale_factor=True)``). Rank-agnostic.
    """
    _need_rank(ctx, x, 3)
    (sh, sw), fractional = _scales(ctx, p)
    mode = int(p.mode)
    h, w = jnp.shape(x)[-2:]
    if mode == NN:
        if fractional and (sh != int(sh) or sw != int(sw)):
            raise MLCUnsupportedError(
                f"{ctx.where}: nearest-neighbour upsample by fractional factors ({sh}, {sw}) is not supported "
                f"(Core ML defines fractionalScalingFactor for BILINEAR only)"
            )
        return jnp.repeat(jnp.repeat(x, int(sh), axis=-2), int(sw), axis=-1)
    if mode != BILINEAR:
        raise ctx.fail(f"unknown upsample mode {mode}")
    grid_mode = int(p.linearUpsampleMode)
    if grid_mode not in LINEAR_GRIDS:
        raise ctx.fail(f"unknown linearUpsampleMode {grid_mode}")
    sizes = (int(math.floor(h * sh)), int(math.floor(w * sw)))
    if min(sizes) < 1:
        raise ctx.fail(f"scaling {h}x{w} by ({sh}, {sw}) leaves no output")
    return _resize_hw(f32(x), sizes, LINEAR_GRIDS[grid_mode])


# -- resizeBilinear ------------------------------------------------------------------------------

@layer("resizeBilinear")
def resize_bilinear(ctx, p, x):
    """``ResizeBilinearLayerParams``: the last two axes resized to ``targetSize`` (default [1, 1])
    on the ``SamplingMode`` grid (module doc). Rank-agnostic."""
    _need_rank(ctx, x, 3)
    return _resize_hw(f32(x), _target_size(ctx, p), _sampling(ctx, p))


# -- cropResize ----------------------------------------------------------------------------------

@layer("cropResize")
def crop_resize(ctx, p, x, roi):
    """``CropResizeLayerParams``: N boxes cut from the feature map ``[1, B, C, H, W]`` and resized
    bilinearly to ``targetSize``.

    Boxes ``[N, 1, 4, 1, 1]`` crop every batch image (output ``[N, B, C, h, w]``); ``[N, 1, 5, 1, 1]``
    start with the batch index (output ``[N, 1, C, h, w]``). Coordinates follow ``boxIndicesMode``,
    are multiplied by ``spatialScale`` (unset, 0, is taken as 1: the builder always writes it),
    and with ``normalizedCoordinates`` by ``(H-1, W-1)``. Within a box the grid follows
    ``SamplingMode`` with the box ends as first and last pixel centres; samples outside the image
    are 0. Rank-5 tensors in both worlds (see module doc).
    """
    if jnp.ndim(x) != 5 or jnp.shape(x)[0] != 1:
        raise ctx.fail(f"the feature map must be rank 5 [1, B, C, H, W], got shape {tuple(jnp.shape(x))}")
    n = jnp.shape(roi)[0] if jnp.ndim(roi) == 5 else 0
    k = math.prod(jnp.shape(roi)[1:]) if n else 0
    if k not in (4, 5):
        raise ctx.fail(f"the boxes must be rank 5 [N, 1, 4 or 5, 1, 1], got shape {tuple(jnp.shape(roi))}")
    box_mode = int(p.boxIndicesMode.boxMode)
    if box_mode not in BOX_MODES:
        raise ctx.fail(f"unknown boxIndicesMode {box_mode}")
    img = f32(x)[0]  # [B, C, H, W]
    b = jnp.shape(img)[0]
    rows = jnp.reshape(f32(roi), (n, k))
    th, tw = _target_size(ctx, p)
    mode = _sampling(ctx, p)
    boxes = rows[:, k - 4 :] * (float(p.spatialScale) or 1.0)
    if k == 5:
        index = rows[:, 0].astype(jnp.int32)
    else:
        boxes, index = jnp.repeat(boxes, b, axis=0), np.tile(np.arange(b), n)
    crops = crop_resize_kernel(img, boxes, index, box_mode=BOX_MODES[box_mode],
                               normalized=bool(p.normalizedCoordinates), height=th, width=tw, sampling_mode=mode,
                               pad_value=0.0)
    return jnp.reshape(crops, (n, b if k == 4 else 1) + tuple(jnp.shape(crops)[1:]))
