"""``convolution`` and ``convolution3d`` (NeuralNetwork.proto ``ConvolutionLayerParams``,
``Convolution3DLayerParams``), and the padding arithmetic pooling shares with them.

* ``convolution``: the input has rank >= 4 ``[..., C, H, W]`` (every leading axis is batch, so
  the rank-5 world's ``[Seq, Batch, C, H, W]`` works unchanged). Weights are
  ``[C_out, C_in/groups, kH, kW]``, or ``[C_in, C_out/groups, kH, kW]`` for deconvolution; from
  specification version 4 a second input may carry the (convolution) weights.
* ``convolution3d``: the input is ``[..., C, D, H, W]``; weights ``[C_out, C_in/groups, kD, kH,
  kW]``, or ``[C_in, C_out/groups, kD, kH, kW]`` for deconvolution (the layout coremltools
  writes; the proto comment's ``[C_out/groups, C_in, ...]`` names the builder's argument).

Padding (``ValidPadding``, ``SamePadding``) pads with zeros. ``same`` gives ``ceil(in/stride)``
outputs with ``total = max(0, (out-1)*stride + k_eff - in)`` split ``BOTTOM_RIGHT_HEAVY``
(start gets ``floor(total/2)``) or ``TOP_LEFT_HEAVY`` (end gets ``floor(total/2)``); ``k_eff`` is
the dilated kernel ``(k-1)*dilation + 1``.

Deconvolution is the transpose of that convolution: the full output ``(in-1)*stride + k_eff`` is
cropped by the padding (``valid``: the border amounts; ``same``: the crop that gives
``in*stride``), and ``outputShape``, when set, fixes the output size (cropping or zero-extending at
the end). The proto says ``dilationFactor`` is ignored for deconvolution; coremltools' own
``conv_transpose`` tests expect it applied (as torch does), so it is applied.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from mlc._errors import MLCUnsupportedError
from mlc.kernels.convolution import conv as compute_conv
from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer

PRECISION = lax.Precision.HIGHEST


# -- padding arithmetic (shared with pool.py) ------------------------------------------------------
def dilated(k: int, dilation: int) -> int:
    return (k - 1) * dilation + 1


def same_pads(size: int, k_eff: int, stride: int, top_left_heavy: bool = False) -> tuple[int, int]:
    """``SamePadding``: the (start, end) zeros that give ``ceil(size/stride)`` outputs."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + k_eff - size)
    small = total // 2
    return (total - small, small) if top_left_heavy else (small, total - small)


def valid_out(size: int, k_eff: int, stride: int, pads: tuple[int, int]) -> int:
    """``ValidPadding``: ``floor((size + pads - k_eff) / stride) + 1``."""
    return (size + pads[0] + pads[1] - k_eff) // stride + 1


def border_amounts(ctx, valid, n: int = 2) -> list[tuple[int, int]]:
    """``ValidPadding.paddingAmounts`` as ``[(top, bottom), (left, right)]`` (all zero if unset)."""
    amounts = list(valid.paddingAmounts.borderAmounts)
    if not amounts:
        return [(0, 0)] * n
    if len(amounts) != n:
        raise ctx.fail(f"ValidPadding.paddingAmounts must have {n} entries [H, W], got {len(amounts)}")
    return [(int(a.startEdgeSize), int(a.endEdgeSize)) for a in amounts]


def pair(ctx, values, default: tuple[int, int], name: str) -> tuple[int, int]:
    """A ``repeated uint64`` ``[H, W]`` field, ``default`` when unset; entries must be positive."""
    v = [int(x) for x in values]
    if not v:
        return default
    if len(v) != 2 or min(v) < 1:
        raise ctx.fail(f"{name} must be two positive values [H, W], got {v}")
    return tuple(v)


def _fold_batch(x, spatial: int):
    """``x`` as ``[N, C, *spatial]`` with every leading axis folded into N, and the leading shape."""
    lead = x.shape[: -(spatial + 1)]
    return x.reshape((math.prod(lead),) + x.shape[-(spatial + 1):]), lead


def _unfold_batch(y, lead):
    return y.reshape(tuple(lead) + y.shape[1:])


def _dimension_numbers(spatial: int):
    s = "DHW"[-spatial:]
    return ("NC" + s, "OI" + s, "NC" + s)


# -- the convolution kernels -----------------------------------------------------------------------
def conv_nd(x, w, *, strides, pads, dilations, groups):
    """Cross-correlation of ``x [..., C_in, *S]`` with ``w [C_out, C_in/groups, *K]``."""
    n = len(strides)
    xb, lead = _fold_batch(x, n)
    y = compute_conv(xb, w, strides=tuple(strides), padding=[tuple(p) for p in pads],
                     dilations=tuple(dilations), groups=groups, precision=PRECISION)
    return _unfold_batch(y, lead)


def deconv_nd(x, w, *, strides, starts, out_sizes, dilations, groups):
    """Transposed convolution of ``x [..., C_in, *S]`` with ``w [C_in, C_out/groups, *K]``.

    Output position ``o`` of each spatial axis is position ``o + start`` of the full transposed
    output ``(in-1)*stride + k_eff`` (zero beyond its end).
    """
    n = len(strides)
    xb, lead = _fold_batch(x, n)
    c_in, c_out_g = w.shape[:2]
    k = w.shape[2:]
    # [C_in, C_out/g, K] -> [C_out, C_in/g, K], spatially flipped.
    wg = w.reshape((groups, c_in // groups, c_out_g) + k)
    wg = jnp.swapaxes(wg, 1, 2).reshape((groups * c_out_g, c_in // groups) + k)
    wg = jnp.flip(wg, axis=tuple(range(2, 2 + n)))
    pads = []
    for size, kk, s, d, start, out in zip(x.shape[-n:], k, strides, dilations, starts, out_sizes):
        lo = dilated(kk, d) - 1 - start
        hi = out - (size - 1) * s - 1 - lo + dilated(kk, d) - 1
        pads.append((lo, hi))
    y = lax.conv_general_dilated(
        xb, wg, window_strides=(1,) * n, padding=pads, lhs_dilation=tuple(strides),
        rhs_dilation=tuple(dilations), feature_group_count=groups,
        dimension_numbers=_dimension_numbers(n), precision=PRECISION,
    )
    return _unfold_batch(y, lead)


def _add_bias(ctx, y, p, spatial: int):
    if not p.hasBias:
        return y
    b = jnp.asarray(ctx.weight("bias"), jnp.float32).reshape(-1)
    if b.shape[0] != y.shape[-(spatial + 1)]:
        raise ctx.fail(f"bias has {b.shape[0]} values, the layer has {y.shape[-(spatial + 1)]} output channels")
    return y + b.reshape((-1,) + (1,) * spatial)


def _static_weight(ctx, shape):
    w = jnp.asarray(ctx.weight("weights"), jnp.float32)
    if w.size != math.prod(shape):
        raise ctx.fail(f"weights hold {w.size} values, the layer needs {math.prod(shape)} ({list(shape)})")
    return w.reshape(shape)


def _groups(ctx, n) -> int:
    g = int(n) or 1
    if g < 1:
        raise ctx.fail(f"nGroups must be positive, got {g}")
    return g


def _check_input(ctx, x, spatial: int, what: str):
    if x.ndim < spatial + 1:
        raise ctx.fail(f"{what} needs an input of rank >= {spatial + 1} [..., C, {', '.join('DHW'[-spatial:])}], got shape {tuple(x.shape)}")


# -- convolution (2-D) -----------------------------------------------------------------------------
def _conv2d_shapes(p):
    n = len(p.kernelSize)
    kh, kw = (3, 3) if n == 0 else tuple(int(v) for v in p.kernelSize) if n == 2 else (0, 0)
    g = int(p.nGroups) or 1
    oc, kc = int(p.outputChannels), int(p.kernelChannels)
    if p.isDeconvolution:
        return (kc, oc // g, kh, kw), 1
    return (oc, kc, kh, kw), 0


def _conv2d_weights(p):
    shape, axis = _conv2d_shapes(p)
    if min(shape) < 1 or (p.isDeconvolution and int(p.outputChannels) % (int(p.nGroups) or 1)):
        return {}  # invalid; the layer reports it
    out = {"weights": (shape, axis)}
    if p.hasBias:
        out["bias"] = ((int(p.outputChannels),), 0)
    return out


def _conv2d_padding(ctx, p, in_hw, k_eff, strides):
    """(top, bottom), (left, right) of a convolution's ``valid`` / ``same`` padding."""
    kind = p.WhichOneof("ConvolutionPaddingType")
    if kind == "same":
        tl = p.same.asymmetryMode == p.same.TOP_LEFT_HEAVY
        return [same_pads(n, k, s, tl) for n, k, s in zip(in_hw, k_eff, strides)]
    return border_amounts(ctx, p.valid) if kind == "valid" else [(0, 0), (0, 0)]


def _deconv2d_crop(ctx, p, in_hw, k_eff, strides):
    """Deconvolution: the crop at the start of each axis and the output size."""
    kind = p.WhichOneof("ConvolutionPaddingType")
    if kind == "same":
        tl = p.same.asymmetryMode == p.same.TOP_LEFT_HEAVY
        crops = [_deconv_same_crop(n, k, s, tl) for n, k, s in zip(in_hw, k_eff, strides)]
        sizes = [n * s for n, s in zip(in_hw, strides)]
    else:
        pads = border_amounts(ctx, p.valid) if kind == "valid" else [(0, 0), (0, 0)]
        crops = [a for a, _ in pads]
        sizes = [(n - 1) * s + k - a - b for n, k, s, (a, b) in zip(in_hw, k_eff, strides, pads)]
    return crops, deconv_output_sizes(ctx, p, sizes, "[H_out, W_out]")


def _deconv_same_crop(size, k_eff, stride, top_left_heavy):
    """The start crop of a ``same`` deconvolution: the ``same`` padding of the forward convolution
    whose input is ``size*stride``."""
    return same_pads(size * stride, k_eff, stride, top_left_heavy)[0]


@layer("convolution", weights=_conv2d_weights)
def convolution(ctx, p, x, *rest):
    x = f32(x)
    _check_input(ctx, x, 2, "convolution")
    k = pair(ctx, p.kernelSize, (3, 3), "kernelSize")
    strides = pair(ctx, p.stride, (1, 1), "stride")
    dil = pair(ctx, p.dilationFactor, (1, 1), "dilationFactor")
    g = _groups(ctx, p.nGroups)
    c_in = x.shape[-3]
    if rest:
        if p.isDeconvolution:
            raise ctx.fail("a deconvolution cannot take its weights from a second input")
        w = f32(rest[0])
        w = w.reshape(w.shape[-4:]) if w.ndim > 4 and math.prod(w.shape[:-4]) == 1 else w
        if w.ndim != 4:
            raise ctx.fail(f"the weight input must be [C_out, C_in/groups, kH, kW], got shape {tuple(w.shape)}")
        k = tuple(w.shape[-2:])
    else:
        shape, _ = _conv2d_shapes(p)
        w = _static_weight(ctx, shape[:2] + k)
    k_eff = tuple(dilated(a, d) for a, d in zip(k, dil))
    in_hw = tuple(x.shape[-2:])
    if p.isDeconvolution:
        y = _deconvolution(ctx, p, x, w, g, strides, dil, k_eff, in_hw)
    else:
        if c_in != w.shape[1] * g or w.shape[0] % g:
            raise ctx.fail(f"input has {c_in} channels; weights {tuple(w.shape)} with {g} groups need {w.shape[1] * g}")
        pads = _conv2d_padding(ctx, p, in_hw, k_eff, strides)
        outs = [valid_out(n, kk, s, pd) for n, kk, s, pd in zip(in_hw, k_eff, strides, pads)]
        if min(outs) < 1:
            raise ctx.fail(f"kernel {k} (dilation {dil}) does not fit the padded input {in_hw}")
        y = conv_nd(x, w, strides=strides, pads=pads, dilations=dil, groups=g)
    return _add_bias(ctx, y, p, 2)


def _deconvolution(ctx, p, x, w, g, strides, dil, k_eff, in_hw):
    c_in = x.shape[-3]
    if w.shape[0] != c_in or c_in % g:
        raise ctx.fail(f"deconvolution input has {c_in} channels; weights {tuple(w.shape)} need {w.shape[0]} (divisible by {g} groups)")
    crops, sizes = _deconv2d_crop(ctx, p, in_hw, k_eff, strides)
    return deconv_nd(x, w, strides=strides, starts=crops, out_sizes=sizes, dilations=dil, groups=g)


# -- convolution3d ---------------------------------------------------------------------------------
def _conv3d_shapes(p):
    g = int(p.nGroups) or 1
    oc, ic = int(p.outputChannels), int(p.inputChannels)
    k = (int(p.kernelDepth), int(p.kernelHeight), int(p.kernelWidth))
    if p.isDeconvolution:
        return (ic, oc // g) + k, 1
    return (oc, ic // g) + k, 0


def _conv3d_weights(p):
    shape, axis = _conv3d_shapes(p)
    g = int(p.nGroups) or 1
    if min(shape) < 1 or int(p.outputChannels) % g or int(p.inputChannels) % g:
        return {}
    out = {"weights": (shape, axis)}
    if p.hasBias:
        out["bias"] = ((int(p.outputChannels),), 0)
    return out


def positive(ctx, p, names):
    values = tuple(int(getattr(p, n)) for n in names)
    if min(values) < 1:
        raise ctx.fail(f"{', '.join(names)} must be positive, got {values}")
    return values


def padding3d(ctx, p, in_dhw, k_eff, strides, custom_names):
    """``CUSTOM`` / ``VALID`` / ``SAME`` (start-light) padding of the three spatial axes."""
    kind = int(p.paddingType)
    if kind == 2:  # SAME
        return [same_pads(n, k, s) for n, k, s in zip(in_dhw, k_eff, strides)]
    if kind == 1:  # VALID
        return [(0, 0)] * 3
    if kind != 0:
        raise ctx.fail(f"unknown paddingType {kind}")
    vals = [int(getattr(p, n)) for n in custom_names]
    if min(vals) < 0:
        raise ctx.fail(f"custom padding must not be negative, got {vals}")
    return [(vals[0], vals[1]), (vals[2], vals[3]), (vals[4], vals[5])]


CUSTOM_CONV3D = ("customPaddingFront", "customPaddingBack", "customPaddingTop",
                 "customPaddingBottom", "customPaddingLeft", "customPaddingRight")


@layer("convolution3d", weights=_conv3d_weights)
def convolution3d(ctx, p, x, *rest):
    if rest:
        raise MLCUnsupportedError(f"{ctx.where}: convolution3d with weights from a second input is not supported")
    x = f32(x)
    _check_input(ctx, x, 3, "convolution3d")
    k = positive(ctx, p, ("kernelDepth", "kernelHeight", "kernelWidth"))
    strides = positive(ctx, p, ("strideDepth", "strideHeight", "strideWidth"))
    dil = positive(ctx, p, ("dilationDepth", "dilationHeight", "dilationWidth"))
    g = _groups(ctx, p.nGroups)
    c_in, oc, ic = x.shape[-4], int(p.outputChannels), int(p.inputChannels)
    if c_in != ic or ic % g or oc % g or oc < 1:
        raise ctx.fail(f"input has {c_in} channels; inputChannels {ic}, outputChannels {oc} and {g} groups do not fit")
    shape, _ = _conv3d_shapes(p)
    w = _static_weight(ctx, shape)
    k_eff = tuple(dilated(a, d) for a, d in zip(k, dil))
    in_dhw = tuple(x.shape[-3:])
    pads = padding3d(ctx, p, in_dhw, k_eff, strides, CUSTOM_CONV3D)
    if p.isDeconvolution:
        y = _deconvolution3d(ctx, p, x, w, g, strides, dil, k_eff, in_dhw, pads)
    else:
        outs = [valid_out(n, kk, s, pd) for n, kk, s, pd in zip(in_dhw, k_eff, strides, pads)]
        if min(outs) < 1:
            raise ctx.fail(f"kernel {k} (dilation {dil}) does not fit the padded input {in_dhw}")
        y = conv_nd(x, w, strides=strides, pads=pads, dilations=dil, groups=g)
    return _add_bias(ctx, y, p, 3)


def _deconvolution3d(ctx, p, x, w, g, strides, dil, k_eff, in_dhw, pads):
    """``convolution3d`` with ``isDeconvolution``: ``SAME`` gives ``in*stride``, the others
    ``(in-1)*stride + k_eff - padding``; ``outputShape`` overrides the size."""
    if int(p.paddingType) == 2:
        crops = [_deconv_same_crop(n, k, s, False) for n, k, s in zip(in_dhw, k_eff, strides)]
        sizes = [n * s for n, s in zip(in_dhw, strides)]
    else:
        crops = [a for a, _ in pads]
        sizes = [(n - 1) * s + k - a - b for n, k, s, (a, b) in zip(in_dhw, k_eff, strides, pads)]
    sizes = deconv_output_sizes(ctx, p, sizes, "[D, H, W]")
    return deconv_nd(x, w, strides=strides, starts=crops, out_sizes=sizes, dilations=dil, groups=g)


def deconv_output_sizes(ctx, p, sizes: list[int], axes: str) -> list[int]:
    """The deconvolution's spatial output sizes: ``outputShape`` when set (one positive value
    per spatial axis), else ``sizes`` as computed from the padding."""
    if len(p.outputShape):
        if len(p.outputShape) != len(sizes) or min(p.outputShape) < 1:
            raise ctx.fail(f"outputShape must be {len(sizes)} positive values {axes}, got {list(p.outputShape)}")
        sizes = [int(v) for v in p.outputShape]
    if min(sizes) < 1:
        raise ctx.fail(f"deconvolution output size {sizes} is not positive")
    return sizes
