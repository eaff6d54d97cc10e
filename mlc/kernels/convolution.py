"""How mlc computes a convolution (MIL ``conv``, NeuralNetwork ``convolution``) on XLA.

Both front ends hold Core ML's layout: activations ``(N, C, *S)``, kernels
``(C_out, C_in / groups, *K)``. These choices make XLA's CPU code fast without changing results
beyond float rounding:

- The kernel is moved to the spatial-first ``(*K, C_in / groups, C_out)`` layout its
  convolution kernels read, in the lowered program: a weight-only transpose that
  ``mlc.runtime.hoist`` computes once per set of weights, where XLA would transpose inside every call.
- A depthwise convolution (``groups == C_in``, each output channel reading one input channel,
  as in MobileNet and EfficientNet) is computed as a sum over the kernel taps of shifted,
  strided slices times per-channel weights, channels-last (``mlc.kernels.depthwise``): one
  fused elementwise loop. XLA's grouped convolution is 4 to 50 times slower on CPU for these
  (6.7x on ``scripts/bench.py``'s MobileNetV2 end to end). Used on every platform, as before it
  was measured per platform.
- A 1x1, stride-1, unpadded, ungrouped float32 convolution is, on CPU, one matrix product over
  the channels (``depthwise.pointwise``, channels-last between transposes that XLA cancels
  against its neighbours'): MobileNetV2 -11% CPU time at batch 1, -25% at batch 32.
- A 2-D float32 convolution of at most 4 input channels and 3x3 positions (an image network's first layer) is,
  on CPU, a patch matrix times the kernel (``mlc.kernels.patches``) while that matrix stays in
  cache: the tiny CNN of ``scripts/bench.py`` -33 to -44% wall time at batch 1, EfficientNet-Lite0
  -3 to -13%; ResNet-18's 7x7 stem stays direct (``patches_pay``). So is a few-channel
  convolution of non-overlapping tiles (stride equal to the kernel: ViT-Ti/16's 16x16 patch
  embedding, -6% wall time at batch 1), whose patch matrix is the input rearranged.
- A 3x3, stride-1, undilated, ungrouped 2-D convolution in float32 is computed by Winograd's
  F(2x2, 3x3) algorithm (``mlc.kernels.winograd``) where ``winograd_pays`` says it is faster,
  on CPU only (the platform the program is traced for, ``mlc.runtime.target``): the weight
  transform is weight-only work, hoisted like the transpose above. The rule and the numbers
  behind it are in ``bench/experiments.md`` ("Winograd convolution", "Small outputs").
- A strided 3x3 convolution of at least 64 channels in and out (ResNet's downsampling layers)
  whose patch matrix stays small is, on CPU, that patch matrix (channels-last) times the kernel
  (``strided_patches_pay``).

``MLC_CONV_ALGORITHM`` overrides the choice, read when a program is traced: ``auto`` (the
default, the rules above), ``direct`` (XLA's convolution for every convolution but the
depthwise ones, as before the other rules) or ``winograd`` (Winograd for every eligible float32
convolution, on any platform, XLA's convolution for the other non-depthwise ones: for tests
and measurements). The rules' numbers are in ``bench/experiments.md``.
Every convolution's equations carry the name scope ``xla_options.CONVOLUTION_SCOPE``, so a
program whose convolutions all became products or loops is still compiled as a convolutional one.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from mlc.kernels import depthwise as _depthwise_kernel
from mlc.kernels import patches as _patches_kernel
from mlc.kernels import winograd
from mlc.runtime import target, xla_options

ALGORITHM_VARIABLE = "MLC_CONV_ALGORITHM"
ALGORITHMS = ("auto", "direct", "winograd")
MAX_DEPTHWISE_TAPS = _depthwise_kernel.MAX_TAPS  # larger kernels (rare) stay one grouped convolution
DEPTHWISE_LAYOUT = "nhwc"  # channels-first measured 1.4-1.6x slower inside MobileNetV2 (bench/experiments.md)


def spatial_first_kernel(weight, spatial: int):
    """``weight`` (O, I, *K) as (*K, I, O), and its dimension-number spec (e.g. ``"HWIO"``)."""
    order = tuple(range(2, 2 + spatial)) + (1, 0)
    return jnp.transpose(weight, order), "DHW"[-spatial:] + "IO"


def conv(x, weight, *, strides, padding, dilations, groups: int, precision=None):
    """Cross-correlation of ``x (N, C_in, *S)`` with ``weight (C_out, C_in / groups, *K)``.

    ``padding`` is a (low, high) pair per spatial dimension; the output is ``(N, C_out, *S')``.
    """
    with jax.named_scope(xla_options.CONVOLUTION_SCOPE):  # a convolution, whatever the algorithm
        return _conv(x, weight, strides=strides, padding=padding, dilations=dilations, groups=groups, precision=precision)


def _conv(x, weight, *, strides, padding, dilations, groups: int, precision):
    spatial = x.ndim - 2
    choice = algorithm(x, weight, strides=strides, padding=padding, dilations=dilations, groups=groups)
    if choice == "depthwise":
        return depthwise(x, weight, strides=strides, padding=padding, dilations=dilations)
    if choice == "pointwise":
        return _depthwise_kernel.pointwise(x, weight, precision=precision, layout="nhwc")
    if choice == "patches":
        return _patches_kernel.conv(x, weight, strides=strides, padding=padding, dilations=dilations, precision=precision)
    if choice == "winograd":
        u = winograd.transform_weight(weight.astype(x.dtype))  # weight-only: hoisted
        return winograd.conv(x, u, padding=padding, precision=precision)
    w, w_spec = spatial_first_kernel(weight, spatial)
    sp = "DHW"[-spatial:]
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(strides),
        padding=[tuple(p) for p in padding],
        rhs_dilation=tuple(dilations),
        dimension_numbers=("NC" + sp, w_spec, "NC" + sp),
        feature_group_count=groups,
        precision=precision,
    )


def algorithm(x, weight, *, strides, padding, dilations, groups: int) -> str:
    """How ``conv`` computes this convolution: "depthwise" (the loop of ``mlc.kernels.depthwise``),
    "pointwise" (a 1x1 convolution as a matrix product), "patches" (few input channels:
    ``mlc.kernels.patches``), "winograd" or "direct" (XLA's
    convolution). Decided at trace time from the shapes, the dtype, the platform being traced
    for, the vmapped batch and ``MLC_CONV_ALGORITHM``."""
    choice = os.environ.get(ALGORITHM_VARIABLE, "").strip().lower() or "auto"
    if choice not in ALGORITHMS:
        raise ValueError(f"{ALGORITHM_VARIABLE}={choice!r}: expected one of {', '.join(ALGORITHMS)}")
    if _depthwise_kernel.eligible(x, weight, padding=padding, dilations=dilations, groups=groups):
        return "depthwise"  # every platform and mode: XLA's grouped convolution is the slow one
    if choice == "direct" or np.dtype(x.dtype) != np.float32:  # fp16 Winograd loses too much precision
        return "direct"
    eligible = winograd.eligible(x, weight, strides=strides, padding=padding, dilations=dilations, groups=groups)
    if choice == "winograd":
        return "winograd" if eligible else "direct"
    if target.platform() != "cpu":  # XLA's GPU convolutions (cuDNN) choose their own algorithm
        return "direct"
    batch = x.shape[0] * target.vmapped_batch()  # predict_batch traces one example under vmap
    if x.ndim == 4 and _depthwise_kernel.pointwise_eligible(x, weight, strides=strides, padding=padding, groups=groups):
        return "pointwise"  # faster at batch 1 and under predict_batch's vmap of 32 alike
    if patches_pay(x, weight, batch=batch, strides=strides, padding=padding, dilations=dilations, groups=groups):
        return "patches"
    if strided_patches_pay(x, weight, batch=batch, strides=strides, padding=padding, dilations=dilations, groups=groups):
        return "patches"
    if not eligible:
        return "direct"
    _, c_in, h, w = x.shape
    out_h, out_w = (size + lo + hi - 2 for size, (lo, hi) in zip((h, w), padding))
    return "winograd" if winograd_pays(batch, c_in, weight.shape[0], out_h, out_w) else "direct"


def patches_pay(x, weight, *, batch: int, strides, padding, dilations, groups: int) -> bool:
    """Whether a convolution with few input channels is faster on CPU as a patch matrix times
    the kernel (``mlc.kernels.patches``) for ``batch`` images (the vmapped batch included): at
    most ``patches.MAX_INPUT_CHANNELS`` channels in and ``patches.MAX_TAPS`` kernel positions,
    a patch matrix that stays in cache. The
    tiny CNN's first layer and MobileNetV2's stem at batch 1, not ResNet-18's 7x7 stem
    (``bench/experiments.md``, "Few input channels"); and a convolution of non-overlapping tiles
    (stride equal to the kernel: a ViT's patch embedding) at any batch, its patch matrix being
    the input rearranged."""
    if _patches_kernel.tiles_eligible(x, weight, groups=groups, strides=strides, padding=padding, dilations=dilations):
        return True  # non-overlapping tiles (a ViT's patch embedding): the input rearranged
    if not _patches_kernel.eligible(x, weight, groups=groups):
        return False
    return _patch_matrix_fits(x, weight, batch=batch, strides=strides, padding=padding, dilations=dilations)


def _patch_matrix_fits(x, weight, *, batch: int, strides, padding, dilations) -> bool:
    """Whether the convolution has an output and its patch matrix for ``batch`` images is at most
    ``patches.MAX_PATCH_BYTES`` (a size that stays in cache)."""
    kernel = weight.shape[2:]
    out = tuple(_patches_kernel.output_size(s, lo, hi, k, st, d) for s, (lo, hi), k, st, d in zip(x.shape[2:], padding, kernel, strides, dilations))
    if min(out) < 1:
        return False
    return _patches_kernel.patch_bytes(batch, x.shape[1], kernel, out, np.dtype(x.dtype).itemsize) <= _patches_kernel.MAX_PATCH_BYTES


# Strided 3x3 convolutions with many channels (ResNet's downsampling layers) as a patch matrix
# times the kernel: measured per layer and in ResNet-18 at batch 1 (bench/experiments.md,
# "Small outputs: Winograd at 7x7 and strided patches"); 16 and 32 channels lost.
STRIDED_PATCHES_MIN_CHANNELS = 64


def strided_patches_pay(x, weight, *, batch: int, strides, padding, dilations, groups: int) -> bool:
    """Whether a strided, undilated, ungrouped 3x3 2-D convolution of at least
    ``STRIDED_PATCHES_MIN_CHANNELS`` channels in and out is faster on CPU as a patch matrix times
    the kernel (``mlc.kernels.patches``, channels-last) for ``batch`` images: while that matrix
    stays within ``patches.MAX_PATCH_BYTES`` (ResNet-18's three downsampling 3x3 layers at batch 1:
    -10 to -27% each alone; not at predict_batch's parts of 16)."""
    if x.ndim != 4 or groups != 1 or tuple(weight.shape[2:]) != (3, 3) or tuple(strides) == (1, 1) or any(d != 1 for d in dilations):
        return False
    if min(x.shape[1], weight.shape[0]) < STRIDED_PATCHES_MIN_CHANNELS:
        return False
    return _patch_matrix_fits(x, weight, batch=batch, strides=strides, padding=padding, dilations=dilations)


# Where Winograd F(2x2, 3x3) beat XLA:CPU's convolution (bench/experiments.md): enough channels
# for the batched product to outweigh the transforms, and a number of 2x2 output tiles per call
# (the rows of that product) neither too small (the transformed weights are 16/9 the size of
# the kernel: below, reading them costs more than the multiplications saved) nor too large
# (above, the transformed input and the products no longer stay in cache). The lower bound was
# 32 while YNNPACK computed the products; with XLA's own products (convolutional programs,
# ``xla_options``) 16 tiles (7x7 at batch 1) win too ("Small outputs" in bench/experiments.md).
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_TILES = (16, 1600)


def winograd_pays(batch: int, c_in: int, c_out: int, out_h: int, out_w: int) -> bool:
    """Whether Winograd F(2x2, 3x3) beats XLA's convolution on CPU for this convolution:
    ``batch`` images (the vmapped batch included) of ``c_in`` channels in, ``c_out`` out, each
    ``out_h x out_w`` out. ResNet-18 at 224x224: at batch 1 all its 3x3 stride-1 layers (56x56
    to 7x7); at batch 32 its 14x14 and 7x7 layers."""
    tiles = batch * -(-out_h // 2) * -(-out_w // 2)
    return min(c_in, c_out) >= WINOGRAD_MIN_CHANNELS and WINOGRAD_TILES[0] <= tiles <= WINOGRAD_TILES[1]


def depthwise(x, weight, *, strides, padding, dilations):
    """Depthwise convolution (``groups == C_in``) as a sum of shifted slices: output channel
    ``o`` reads input channel ``o // multiplier`` (``C_out = multiplier * C_in``), Core ML's
    grouped layout. Computed channels-last (``DEPTHWISE_LAYOUT``), the layout of the
    convolutions and products around it on XLA:CPU, so XLA cancels the transposes between them
    (channels-first, the loop alone is faster, but inside MobileNetV2 every depthwise layer
    then costs two activation transposes)."""
    return _depthwise_kernel.conv(x, weight, strides=strides, padding=padding, dilations=dilations, layout=DEPTHWISE_LAYOUT)
