"""conv, conv_transpose and conv_quantized against torch.nn.functional (computed in float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(5)
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _t(a):
    return torch.from_numpy(np.asarray(a, np.float64))


def _pad_arg(pads):
    """[(lo, hi) per spatial dim] -> F.pad's order (last dim first); negative amounts crop."""
    return [p for lo_hi in reversed(pads) for p in lo_hi]


def _add_bias(y, bias, nd):
    return y if bias is None else y + _t(bias).reshape((1, -1) + (1,) * nd)


def _same_pads(sizes, kernel, strides, dilations, lower):
    """Core ML's SamePadding: output ceil(in / stride); the odd pixel after (before when lower)."""
    pads = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if lower else (small, big))
    return pads


def _torch_conv(x, w, bias, strides, dilations, groups, pads):
    nd = x.ndim - 2
    xp = F.pad(_t(x), _pad_arg(pads))
    y = CONV[nd](xp, _t(w), stride=tuple(strides), dilation=tuple(dilations), groups=groups)
    return _add_bias(y, bias, nd).numpy().astype(np.float32)


def _conv_case(x, c_out, kernel, groups=1, strides=None, dilations=None, pad_type="valid", pad=None, bias=True):
    """(mb.conv kwargs without x, reference output)."""
    nd = x.ndim - 2
    w = _rand(c_out, x.shape[1] // groups, *kernel)
    b = _rand(c_out) if bias else None
    st, dl = strides or [1] * nd, dilations or [1] * nd
    kw = {"weight": w, "pad_type": pad_type, "groups": groups}
    if strides:
        kw["strides"] = strides
    if dilations:
        kw["dilations"] = dilations
    if b is not None:
        kw["bias"] = b
    if pad_type == "custom":
        kw["pad"] = pad
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(nd)]
    elif pad_type == "valid":
        pads = [(0, 0)] * nd
    else:
        pads = _same_pads(x.shape[2:], kernel, st, dl, pad_type == "same_lower")
    return kw, _torch_conv(x, w, b, st, dl, groups, pads)


def _conv_cases(nd, x, same_lower):
    if nd == 1:
        cases = [
            dict(c_out=6, kernel=[3], strides=[2]),
            dict(c_out=6, kernel=[4], strides=[2], dilations=[2], pad_type="same"),
            dict(c_out=6, kernel=[3], groups=2, pad_type="custom", pad=[1, 3], bias=False),
            dict(c_out=8, kernel=[3], groups=4, pad_type="same"),  # depthwise, multiplier 2
            dict(c_out=6, kernel=[2], strides=[3], pad_type="same_lower"),
        ]
    elif nd == 2:
        cases = [
            dict(c_out=5, kernel=[3, 3], strides=[2, 1]),
            dict(c_out=6, kernel=[2, 4], strides=[2, 3], dilations=[2, 1], pad_type="same"),
            dict(c_out=6, kernel=[3, 3], groups=2, dilations=[1, 2], pad_type="custom", pad=[0, 2, 1, 1]),
            dict(c_out=4, kernel=[3, 3], groups=4, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),  # depthwise
            dict(c_out=8, kernel=[3, 2], groups=4, strides=[1, 2], dilations=[2, 1], pad_type="same"),  # depthwise x2, dilated
            dict(c_out=6, kernel=[4, 3], strides=[1, 2], pad_type="same_lower", bias=False),
        ]
    else:
        cases = [
            dict(c_out=3, kernel=[2, 3, 2], strides=[1, 2, 1]),
            dict(c_out=4, kernel=[3, 2, 3], strides=[2, 2, 2], pad_type="same"),
            dict(c_out=4, kernel=[3, 3, 3], groups=2, dilations=[2, 1, 1], pad_type="custom", pad=[1, 0, 0, 1, 2, 2]),
            dict(c_out=2, kernel=[2, 2, 2], strides=[1, 2, 2], pad_type="same_lower"),
            dict(c_out=4, kernel=[2, 3, 2], groups=2, strides=[2, 1, 1], pad_type="same"),  # depthwise x2
        ]
    if not same_lower:  # iOS15 conv has no same_lower
        cases = [c for c in cases if c.get("pad_type") != "same_lower"]
    return cases


@pytest.mark.parametrize(
    "target, nd, shape",
    [
        ("iOS15", 1, (2, 4, 11)),
        ("iOS17", 1, (2, 4, 11)),
        ("iOS15", 2, (1, 4, 9, 10)),
        ("iOS17", 2, (2, 4, 9, 10)),
        ("iOS17", 3, (1, 2, 5, 6, 7)),
    ],
)
def test_conv(target, nd, shape):
    x = _rand(*shape)
    specs = _conv_cases(nd, x, same_lower=target != "iOS15")
    cases = [_conv_case(x, **spec) for spec in specs]
    outs = run_mil(lambda x: [mb.conv(x=x, **kw) for kw, _ in cases], {"x": x}, target=target)
    _check(outs, [ref for _, ref in cases], [str(s) for s in specs], rtol=1e-5, atol=1e-5)


def test_conv_dynamic_weight():
    """Weight as a model input (traced), grouped, with bias and same padding."""
    x, w, b = _rand(1, 4, 7, 6), _rand(6, 2, 3, 2), _rand(6)
    out, = run_mil(lambda x, w: mb.conv(x=x, weight=w, bias=b, groups=2, strides=[2, 1], pad_type="same"), {"x": x, "w": w})
    pads = _same_pads((7, 6), (3, 2), (2, 1), (1, 1), False)
    np.testing.assert_allclose(out, _torch_conv(x, w, b, (2, 1), (1, 1), 2, pads), rtol=1e-5, atol=1e-5)


def test_conv_ios17_fp16_weights():
    """iOS17: fp16 weight and bias on an fp32 input; the output stays fp32."""
    x, w, b = _rand(1, 3, 6, 6), _rand(4, 3, 3, 3, dtype=np.float16), _rand(4, dtype=np.float16)
    out, = run_mil(lambda x: mb.conv(x=x, weight=w, bias=b, pad_type="same"), {"x": x}, target="iOS17")
    _check([out], [_torch_conv(x, w, b, (1, 1), (1, 1), 1, [(1, 1), (1, 1)])], ["conv"], rtol=1e-5, atol=1e-5)


def _torch_conv_transpose(x, w, bias, strides, dilations, groups, crops):
    """The full transposed convolution, then (lo, hi) cropped per dim (negative: zero-extended), then bias."""
    nd = x.ndim - 2
    y = CONV_T[nd](_t(x), _t(w), stride=tuple(strides), dilation=tuple(dilations), groups=groups)
    y = F.pad(y, _pad_arg([(-lo, -hi) for lo, hi in crops]))
    return _add_bias(y, bias, nd).numpy().astype(np.float32)


def _transpose_case(
    x, c_out_g, kernel, groups=1, strides=None, dilations=None, pad_type="valid", pad=None, out_extra=None, bias=True
):
    """(mb.conv_transpose kwargs without x, reference). ``out_extra`` asks for output_shape = natural size + extra."""
    nd = x.ndim - 2
    w = _rand(x.shape[1], c_out_g, *kernel)
    b = _rand(c_out_g * groups) if bias else None
    st, dl = strides or [1] * nd, dilations or [1] * nd
    kw = {"weight": w, "pad_type": pad_type, "groups": groups}
    for key, v in (("strides", strides), ("dilations", dilations), ("bias", b)):
        if v is not None:
            kw[key] = v
    sizes = x.shape[2:]
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(sizes, kernel, st, dl)]
    if pad_type == "custom":
        kw["pad"] = pad
        crops = [(pad[2 * i], pad[2 * i + 1]) for i in range(nd)]
    elif pad_type == "valid":
        crops = [(0, 0)] * nd
    else:  # same: output in * stride, the odd crop at the end (TensorFlow's rule)
        crops = []
        for i in range(nd):
            total = full[i] - sizes[i] * st[i]
            crops.append((max(total, 0) // 2, total - max(total, 0) // 2))
    if out_extra is not None:
        natural = [f - lo - hi for f, (lo, hi) in zip(full, crops)]
        kw["output_shape"] = [x.shape[0], c_out_g * groups] + [n + e for n, e in zip(natural, out_extra)]
        crops = [(lo, hi - e) for (lo, hi), e in zip(crops, out_extra)]
    return kw, _torch_conv_transpose(x, w, b, st, dl, groups, crops)


def _transpose_cases(nd):
    if nd == 1:
        return [
            dict(c_out_g=3, kernel=[3], strides=[2]),
            dict(c_out_g=3, kernel=[3], groups=2, strides=[3], dilations=[2], pad_type="custom", pad=[1, 2]),
            dict(c_out_g=3, kernel=[4], strides=[2], pad_type="same"),
            dict(c_out_g=3, kernel=[5], strides=[2], pad_type="same", bias=False),  # odd total crop
            dict(c_out_g=2, kernel=[1], strides=[3], pad_type="same"),  # kernel < stride: zero-extended
            dict(c_out_g=3, kernel=[3], strides=[2], out_extra=[1]),  # like torch output_padding
            dict(c_out_g=3, kernel=[3], strides=[2], pad_type="custom", pad=[1, 1], out_extra=[1]),
        ]
    if nd == 2:
        return [
            dict(c_out_g=2, kernel=[3, 3], strides=[2, 3], dilations=[1, 2]),
            dict(c_out_g=3, kernel=[2, 3], groups=2, strides=[2, 2], pad_type="custom", pad=[1, 0, 2, 1]),
            dict(c_out_g=4, kernel=[4, 4], groups=4, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),  # depthwise
            dict(c_out_g=3, kernel=[3, 4], strides=[2, 2], pad_type="same"),
            dict(c_out_g=2, kernel=[3, 3], strides=[2, 2], pad_type="same", out_extra=[0, 0]),  # TF's output_shape
            dict(c_out_g=2, kernel=[3, 2], strides=[2, 3], pad_type="custom", pad=[1, 1, 0, 1], out_extra=[1, 2]),
        ]
    return [
        dict(c_out_g=2, kernel=[2, 3, 2], strides=[2, 1, 2], pad_type="custom", pad=[0, 1, 1, 0, 0, 0]),
        dict(c_out_g=1, kernel=[3, 2, 2], groups=2, dilations=[1, 2, 1], bias=False),
        dict(c_out_g=2, kernel=[2, 2, 3], strides=[2, 2, 1], pad_type="same"),
    ]


@pytest.mark.parametrize(
    "target, nd, shape",
    [("iOS15", 1, (2, 4, 5)), ("iOS17", 1, (2, 4, 5)), ("iOS15", 2, (1, 4, 4, 5)), ("iOS17", 3, (1, 2, 3, 4, 3))],
)
def test_conv_transpose(target, nd, shape):
    x = _rand(*shape)
    specs = _transpose_cases(nd)
    cases = [_transpose_case(x, **spec) for spec in specs]
    outs = run_mil(lambda x: [mb.conv_transpose(x=x, **kw) for kw, _ in cases], {"x": x}, target=target)
    _check(outs, [ref for _, ref in cases], [str(s) for s in specs], rtol=1e-5, atol=1e-5)


def test_conv_transpose_dynamic_weight_ios17():
    """iOS17 lifts the const requirement on conv_transpose's weight."""
    x, w = _rand(1, 4, 3, 4), _rand(4, 3, 3, 3)
    out, = run_mil(lambda x, w: mb.conv_transpose(x=x, weight=w, strides=[2, 2], groups=2), {"x": x, "w": w}, target="iOS17")
    np.testing.assert_allclose(out, _torch_conv_transpose(x, w, None, (2, 2), (1, 1), 2, [(0, 0), (0, 0)]), rtol=1e-5, atol=1e-5)


def test_conv_quantized_linear():
    """uint8 weights dequantized as w * scale + bias (scalar and per output channel)."""
    x = _rand(1, 2, 6, 6)
    wq = RNG.integers(0, 256, (3, 2, 3, 3)).astype(np.uint8)
    scale, shift = np.array([0.01, 0.02, 0.005], np.float32), np.array([-1.0, -2.0, -0.5], np.float32)
    outs = run_mil(
        lambda x: [
            mb.conv_quantized(
                x=x, weight=wq, quantization_type="linear", quant_scale=np.float32(0.01), quant_bias=np.float32(-1.0)
            ),
            mb.conv_quantized(
                x=x, weight=wq, quantization_type="linear", quant_scale=scale, quant_bias=shift, strides=[2, 2], pad_type="same"
            ),
        ],
        {"x": x},
        target="iOS15",
    )
    w1 = wq.astype(np.float64) * 0.01 - 1.0
    w2 = wq.astype(np.float64) * scale.reshape(3, 1, 1, 1) + shift.reshape(3, 1, 1, 1)
    refs = [
        _torch_conv(x, w1, None, (1, 1), (1, 1), 1, [(0, 0), (0, 0)]),
        _torch_conv(x, w2, None, (2, 2), (1, 1), 1, _same_pads((6, 6), (3, 3), (2, 2), (1, 1), False)),
    ]
    _check(outs, refs, ["scalar", "per_channel"], rtol=1e-5, atol=1e-5)


def test_fully_static():
    """All inputs const (size-1 tensors stay numpy): evaluated at trace time."""
    x, w, b = np.full((1, 1, 1), 3.0, np.float32), np.full((1, 1, 1), -2.0, np.float32), np.full(1, 0.5, np.float32)

    def body(z):
        return [mb.add(x=z, y=mb.conv(x=x, weight=w, bias=b)), mb.add(x=z, y=mb.conv_transpose(x=x, weight=w, bias=b))]

    outs = run_mil(body, {"z": np.zeros((1, 1, 1), np.float32)})
    _check(outs, [np.full((1, 1, 1), -5.5, np.float32)] * 2, ["conv", "conv_transpose"])


def test_fp16_inputs():
    """fp16 program (computed in fp32 on CPU, output rounded to fp16): tolerance 3e-3 covers the
    fp16 rounding of weights-and-sums of up to 36 products of magnitude ~1."""
    x = _rand(1, 4, 6, 6, dtype=np.float16)
    w, b = _rand(4, 4, 3, 3, dtype=np.float16), _rand(4, dtype=np.float16)
    wt = _rand(4, 2, 2, 2, dtype=np.float16)
    outs = run_mil(
        lambda x: [mb.conv(x=x, weight=w, bias=b, pad_type="same"), mb.conv_transpose(x=x, weight=wt, strides=[2, 2])],
        {"x": x},
        precision="fp16",
    )
    refs = [
        _torch_conv(x, w, b, (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
        _torch_conv_transpose(x, wt, None, (2, 2), (1, 1), 1, [(0, 0), (0, 0)]),
    ]
    _check(outs, [r.astype(np.float16) for r in refs], ["conv", "conv_transpose"], rtol=3e-3, atol=3e-3)
