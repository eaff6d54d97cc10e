"""NeuralNetwork ``convolution``, ``convolution3d``, ``pooling``, ``pooling3d`` and
``globalPooling3d`` layers: built with coremltools' ``NeuralNetworkBuilder``, run through mlc,
compared with torch (expected values never come from mlc)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mlc
from mlc._errors import MLCError

from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402
from coremltools.models.neural_network.quantization_utils import _convert_array_to_nbit_quantized_bytes  # noqa: E402

RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _t(a):
    return torch.from_numpy(np.asarray(a, np.float64))


def _run(builder, feeds):
    return mlc.load(builder.spec).predict(feeds)["out"]


def _builder(shape, exact=True, extra_inputs=()):
    inputs = [("data", datatypes.Array(*shape))] + list(extra_inputs)
    return NeuralNetworkBuilder(inputs, [("out", None)], disable_rank5_shape_mapping=exact)


def _close(got, want, atol=1e-4):
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)


# -- convolution -----------------------------------------------------------------------------------
def _add_conv(b, w_oihw, bias=None, **kw):
    """``w_oihw``: torch layout [C_out, C_in/g, kH, kW]; the builder takes [kH, kW, C_in/g, C_out]."""
    c_out, kc, kh, kw_ = w_oihw.shape
    b.add_convolution(
        name="conv", kernel_channels=kc, output_channels=c_out, height=kh, width=kw_,
        W=w_oihw.transpose(2, 3, 1, 0), b=bias, has_bias=bias is not None, input_name="data", output_name="out", **kw
    )


@pytest.mark.parametrize(
    "stride,dilation,groups,pads",
    [((1, 1), (1, 1), 1, (0, 0, 0, 0)), ((2, 1), (1, 2), 2, (1, 2, 0, 3)), ((2, 3), (2, 1), 4, (2, 2, 1, 1))],
)
def test_conv_valid_padding(stride, dilation, groups, pads):
    x, w, bias = _rand(2, 8, 9, 11), _rand(6 * 2, 8 // groups, 3, 2), _rand(12)
    b = _builder(x.shape)
    top, bottom, left, right = pads
    _add_conv(b, w, bias, stride_height=stride[0], stride_width=stride[1], border_mode="valid", groups=groups,
              dilation_factors=list(dilation), padding_top=top, padding_bottom=bottom, padding_left=left, padding_right=right)
    xp = F.pad(_t(x), (left, right, top, bottom))
    want = F.conv2d(xp, _t(w), _t(bias), stride=stride, dilation=dilation, groups=groups)
    _close(_run(b, {"data": x}), want.numpy())


@pytest.mark.parametrize("mode", ["BOTTOM_RIGHT_HEAVY", "TOP_LEFT_HEAVY"])
def test_conv_same_padding_asymmetry(mode):
    x, w = _rand(1, 3, 8, 7), _rand(4, 3, 4, 3)
    b = _builder(x.shape)
    _add_conv(b, w, stride_height=3, stride_width=2, border_mode="same", groups=1, same_padding_asymmetry_mode=mode)
    # H: out 3, total (3-1)*3 + 4 - 8 = 2 -> (1, 1); W: out 4, total (4-1)*2 + 3 - 7 = 2 -> (1, 1)
    xp = F.pad(_t(x), (1, 1, 1, 1))
    _close(_run(b, {"data": x}), F.conv2d(xp, _t(w), stride=(3, 2)).numpy())

    x2, w2 = _rand(1, 2, 7, 6), _rand(3, 2, 4, 4)
    b2 = _builder(x2.shape)
    _add_conv(b2, w2, stride_height=1, stride_width=1, border_mode="same", groups=1, same_padding_asymmetry_mode=mode)
    lo, hi = (1, 2) if mode == "BOTTOM_RIGHT_HEAVY" else (2, 1)
    want = F.conv2d(F.pad(_t(x2), (lo, hi, lo, hi)), _t(w2))
    _close(_run(b2, {"data": x2}), want.numpy())


def test_conv_rank5_world():
    """The default rank-5 mapping: [C, H, W] in, [1, 1, C_out, H', W'] computed; a full
    [Seq, Batch, C, H, W] input folds Seq and Batch into the batch."""
    w, bias = _rand(5, 3, 3, 3), _rand(5)
    b = _builder((3, 6, 6), exact=False)
    _add_conv(b, w, bias, stride_height=1, stride_width=1, border_mode="valid", groups=1)
    model = mlc.load(b.spec)
    x = _rand(3, 6, 6)
    want = F.conv2d(_t(x)[None], _t(w), _t(bias)).numpy()
    _close(model.predict({"data": x})["out"].reshape(want.shape), want)
    seq = _rand(2, 3, 3, 6, 6)
    want = F.conv2d(_t(seq.reshape(6, 3, 6, 6)), _t(w), _t(bias)).numpy().reshape(2, 3, 5, 4, 4)
    _close(model.predict({"data": seq})["out"], want)


def test_conv_dynamic_weights():
    x, w = _rand(2, 4, 7, 7), _rand(3, 4, 2, 3)
    b = _builder(x.shape, extra_inputs=[("weight", datatypes.Array(*w.shape))])
    b.add_convolution(name="conv", kernel_channels=4, output_channels=3, height=2, width=3, stride_height=2, stride_width=1,
                      border_mode="valid", groups=1, W=None, b=None, has_bias=False, input_name=["data", "weight"], output_name="out")
    want = F.conv2d(_t(x), _t(w), stride=(2, 1)).numpy()
    _close(mlc.load(b.spec).predict({"data": x, "weight": w})["out"], want)


def test_conv_per_channel_quantized_weights():
    """8-bit linear quantization with one scale per output channel (axis 0)."""
    c_out, c_in = 4, 2
    q = RNG.integers(0, 256, (c_out, c_in, 3, 3)).astype(np.uint8)
    scale, qbias = RNG.uniform(0.01, 0.1, c_out).astype(np.float32), RNG.uniform(-1, 1, c_out).astype(np.float32)
    b = _builder((1, c_in, 5, 5))
    b.add_convolution(
        name="conv", kernel_channels=c_in, output_channels=c_out, height=3, width=3, stride_height=1, stride_width=1,
        border_mode="valid", groups=1, W=q.transpose(2, 3, 1, 0).tobytes(), b=None, has_bias=False,
        input_name="data", output_name="out", quantization_type="linear", nbits=8, quant_scale=scale, quant_bias=qbias,
    )
    w = q.astype(np.float32) * scale[:, None, None, None] + qbias[:, None, None, None]
    x = _rand(1, c_in, 5, 5)
    _close(_run(b, {"data": x}), F.conv2d(_t(x), _t(w)).numpy(), atol=1e-3)


# -- deconvolution ---------------------------------------------------------------------------------
def _add_deconv(b, w_iohw, groups, bias=None, **kw):
    """``w_iohw``: torch layout [C_in, C_out/g, kH, kW]; the builder takes [kH, kW, C_in, C_out/g]."""
    c_in, cog, kh, kw_ = w_iohw.shape
    b.add_convolution(
        name="deconv", kernel_channels=c_in, output_channels=cog * groups, height=kh, width=kw_, groups=groups,
        W=w_iohw.transpose(2, 3, 0, 1), b=bias, has_bias=bias is not None, is_deconv=True,
        input_name="data", output_name="out", **kw
    )


@pytest.mark.parametrize("stride,groups,pads", [((1, 1), 1, (0, 0, 0, 0)), ((2, 3), 2, (1, 1, 2, 2)), ((3, 2), 4, (2, 1, 0, 1))])
def test_deconv_valid_padding(stride, groups, pads):
    x, w, bias = _rand(2, 8, 5, 4), _rand(8, 3, 3, 4), _rand(3 * groups)
    top, bottom, left, right = pads
    b = _builder(x.shape)
    _add_deconv(b, w, groups, bias, stride_height=stride[0], stride_width=stride[1], border_mode="valid",
                padding_top=top, padding_bottom=bottom, padding_left=left, padding_right=right)
    full = F.conv_transpose2d(_t(x), _t(w), _t(bias), stride=stride, groups=groups)
    want = full[..., top: full.shape[-2] - bottom, left: full.shape[-1] - right]
    _close(_run(b, {"data": x}), want.numpy())


def test_deconv_same_padding_and_output_shape():
    x, w = _rand(1, 2, 4, 5), _rand(2, 3, 4, 3)
    b = _builder(x.shape)
    _add_deconv(b, w, 1, stride_height=2, stride_width=2, border_mode="same")
    full = F.conv_transpose2d(_t(x), _t(w), stride=2)  # H: (4-1)*2+4 = 10, W: (5-1)*2+3 = 11
    # same: out = in * stride (8, 10); crop start floor((k - s)/2): H (4-2)//2 = 1, W (3-2)//2 = 0
    _close(_run(b, {"data": x}), full[..., 1:9, 0:10].numpy())

    # outputShape with valid padding: crop the start by the top/left padding, extend with zeros
    b2 = _builder(x.shape)
    _add_deconv(b2, w, 1, stride_height=2, stride_width=2, border_mode="valid", output_shape=(9, 12), padding_top=1, padding_left=0)
    want = F.pad(full, (0, 1))[..., 1:10, 0:12]
    _close(_run(b2, {"data": x}), want.numpy())


def test_deconv_dilation_matches_torch():
    x, w = _rand(1, 2, 5, 5), _rand(2, 3, 3, 2)
    b = _builder(x.shape)
    _add_deconv(b, w, 1, stride_height=2, stride_width=1, border_mode="valid", dilation_factors=[2, 3])
    want = F.conv_transpose2d(_t(x), _t(w), stride=(2, 1), dilation=(2, 3))
    _close(_run(b, {"data": x}), want.numpy())


# -- convolution3d ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["valid", "same", "custom"])
def test_conv3d(mode):
    x, w, bias = _rand(2, 4, 6, 7, 5), _rand(6, 2, 3, 2, 3), _rand(6)
    pads = (1, 0, 2, 1, 0, 2) if mode == "custom" else (0,) * 6
    b = _builder(x.shape)
    b.add_convolution3d(
        name="c3", input_channels=4, output_channels=6, depth=3, height=2, width=3, W=w, b=bias, has_bias=True, groups=2,
        stride_depth=2, stride_height=1, stride_width=2, dilation_depth=1, dilation_height=2, dilation_width=1,
        padding_mode=mode, padding_front=pads[0], padding_back=pads[1], padding_top=pads[2], padding_bottom=pads[3],
        padding_left=pads[4], padding_right=pads[5], input_name="data", output_name="out",
    )
    if mode == "same":  # D: out 3, total (3-1)*2+3-6 = 1 -> (0, 1); H: k_eff 3 -> (1, 1); W: out 3, (3-1)*2+3-5 = 2 -> (1, 1)
        pads = (0, 1, 1, 1, 1, 1)
    xp = F.pad(_t(x), (pads[4], pads[5], pads[2], pads[3], pads[0], pads[1]))
    want = F.conv3d(xp, _t(w), _t(bias), stride=(2, 1, 2), dilation=(1, 2, 1), groups=2)
    _close(_run(b, {"data": x}), want.numpy())


def test_deconv3d_custom_padding():
    x, w = _rand(1, 4, 3, 4, 3), _rand(4, 1, 2, 3, 2)  # torch [C_in, C_out/g, kD, kH, kW], groups 2 -> C_out 2
    b = _builder(x.shape)
    b.add_convolution3d(
        name="d3", input_channels=4, output_channels=2, depth=2, height=3, width=2, W=w.transpose(1, 0, 2, 3, 4), b=None,
        has_bias=False, groups=2, stride_depth=2, stride_height=1, stride_width=3, is_deconv=True, padding_mode="custom",
        padding_front=1, padding_back=1, padding_top=0, padding_bottom=1, padding_left=1, padding_right=0,
        input_name="data", output_name="out",
    )
    full = F.conv_transpose3d(_t(x), _t(w), stride=(2, 1, 3), groups=2)
    _close(_run(b, {"data": x}), full[:, :, 1:-1, 0:-1, 1:].numpy())


# -- pooling ---------------------------------------------------------------------------------------
def _add_pool(b, kind, k, s, padding, **kw):
    b.add_pooling(name="pool", height=k[0], width=k[1], stride_height=s[0], stride_width=s[1], layer_type=kind,
                  padding_type=padding, input_name="data", output_name="out", **kw)


def _ref_pool(x, kind, k, s, pads, exclude=False, ceil=False):
    """torch reference with explicit (top, bottom, left, right) padding."""
    t, bt, l, r = pads
    xt = _t(x)
    if kind == "MAX":
        return F.max_pool2d(F.pad(xt, (l, r, t, bt), value=-np.inf), k, s, ceil_mode=ceil)
    if kind == "L2":
        return torch.sqrt(F.avg_pool2d(F.pad(xt * xt, (l, r, t, bt)), k, s) * k[0] * k[1])
    if exclude:
        ones = torch.ones_like(xt)
        return F.avg_pool2d(F.pad(xt, (l, r, t, bt)), k, s) / F.avg_pool2d(F.pad(ones, (l, r, t, bt)), k, s)
    return F.avg_pool2d(F.pad(xt, (l, r, t, bt)), k, s)


@pytest.mark.parametrize("kind,exclude", [("MAX", False), ("AVERAGE", False), ("AVERAGE", True), ("L2", False)])
def test_pool_valid_with_padding(kind, exclude):
    x = _rand(2, 3, 7, 8)
    b = _builder(x.shape)
    pads = (1, 2, 1, 1)
    _add_pool(b, kind, (3, 2), (2, 3), "VALID", exclude_pad_area=exclude,
              padding_top=1, padding_bottom=2, padding_left=1, padding_right=1)
    _close(_run(b, {"data": x}), _ref_pool(x, kind, (3, 2), (2, 3), pads, exclude).numpy())


@pytest.mark.parametrize("mode", ["BOTTOM_RIGHT_HEAVY", "TOP_LEFT_HEAVY"])
@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_pool_same(mode, kind):
    x = _rand(1, 2, 6, 5)
    b = _builder(x.shape)
    _add_pool(b, kind, (2, 4), (1, 2), "SAME", exclude_pad_area=False, same_padding_asymmetry_mode=mode)
    # H: out 6, total 1; W: out 3, total (3-1)*2+4-5 = 3
    pads = (0, 1, 1, 2) if mode == "BOTTOM_RIGHT_HEAVY" else (1, 0, 2, 1)
    _close(_run(b, {"data": x}), _ref_pool(x, kind, (2, 4), (1, 2), pads).numpy())


def test_pool_include_last_pixel():
    """ValidCompletePadding: H 6, pad 1, k 3, s 2: ceil((6+2-3)/2)+1 = 4 outputs, the last window
    [5, 8) overhangs the padded input [-1, 7) by one; W 5, pad 1, k 2, s 3: ceil(5/3)+1 = 3, but
    (3-1)*3 = 6 >= 5+1 so 2."""
    x = _rand(1, 1, 6, 5)
    b = _builder(x.shape)
    _add_pool(b, "AVERAGE", (3, 2), (2, 3), "INCLUDE_LAST_PIXEL", exclude_pad_area=False,
              padding_top=1, padding_bottom=1, padding_left=1, padding_right=1)
    got = _run(b, {"data": x})
    xp = np.pad(x[0, 0].astype(np.float64), 1)  # 8 x 7, padding counts; beyond the padding does not
    want = np.zeros((4, 2))
    for i in range(4):
        for j in range(2):
            win = xp[2 * i: 2 * i + 3, 3 * j: 3 * j + 2]
            want[i, j] = win.sum() / win.size
    _close(got, want[None, None])

    b2 = _builder(x.shape)
    _add_pool(b2, "MAX", (3, 2), (2, 3), "INCLUDE_LAST_PIXEL", padding_top=1, padding_bottom=1, padding_left=1, padding_right=1)
    want = F.max_pool2d(_t(x), (3, 2), (2, 3), padding=1, ceil_mode=True).numpy()
    _close(_run(b2, {"data": x}), want)


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE", "L2"])
def test_global_pooling_rank5_world(kind):
    x = _rand(3, 4, 5)
    b = _builder(x.shape, exact=False)
    _add_pool(b, kind, (1, 1), (1, 1), "VALID", is_global=True)
    ref = {"MAX": x.max(axis=(1, 2)), "AVERAGE": x.mean(axis=(1, 2)), "L2": np.sqrt((x * x).sum(axis=(1, 2)))}[kind]
    _close(_run(b, {"data": x}).reshape(-1), ref)


# -- pooling3d / globalPooling3d -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,mode,exclude",
    [("MAX", "valid", False), ("MAX", "same", False), ("AVERAGE", "custom", False), ("AVERAGE", "custom", True), ("AVERAGE", "same", True)],
)
def test_pool3d(kind, mode, exclude):
    x = _rand(2, 3, 5, 6, 7)
    k, s = (2, 3, 2), (2, 1, 3)
    pads = (1, 0, 1, 1, 0, 1) if mode == "custom" else (0,) * 6
    b = _builder(x.shape)
    b.add_pooling3d(name="p3", input_name="data", output_name="out", pooling_type=kind, kernel_depth=k[0], kernel_height=k[1],
                    kernel_width=k[2], stride_depth=s[0], stride_height=s[1], stride_width=s[2], padding_mode=mode,
                    custom_padding_front=pads[0], custom_padding_back=pads[1], custom_padding_top=pads[2],
                    custom_padding_bottom=pads[3], custom_padding_left=pads[4], custom_padding_right=pads[5],
                    average_pooling_count_excludes_padding=exclude)
    if mode == "same":  # D: out 3, total (3-1)*2+2-5 = 1 -> (0, 1); H: total 2 -> (1, 1); W: out 3, (3-1)*3+2-7 = 1 -> (0, 1)
        pads = (0, 1, 1, 1, 0, 1)
    torch_pads = (pads[4], pads[5], pads[2], pads[3], pads[0], pads[1])
    xt = _t(x)
    if kind == "MAX":
        want = F.max_pool3d(F.pad(xt, torch_pads, value=-np.inf), k, s)
    else:
        want = F.avg_pool3d(F.pad(xt, torch_pads), k, s)
        if exclude:
            want = want / F.avg_pool3d(F.pad(torch.ones_like(xt), torch_pads), k, s)
    _close(_run(b, {"data": x}), want.numpy())


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_global_pool3d(kind):
    x = _rand(2, 3, 4, 5, 6)
    b = _builder(x.shape)
    b.add_global_pooling3d(name="g3", input_name="data", output_name="out", pooling_type=kind)
    ref = x.max(axis=(2, 3, 4), keepdims=True) if kind == "MAX" else x.mean(axis=(2, 3, 4), keepdims=True)
    _close(_run(b, {"data": x}), ref)


# -- invalid parameters ----------------------------------------------------------------------------
def test_conv_weight_count_mismatch_is_refused():
    b = _builder((1, 3, 5, 5))
    _add_conv(b, _rand(4, 3, 3, 3), stride_height=1, stride_width=1, border_mode="valid", groups=1)
    b.spec.neuralNetwork.layers[0].convolution.kernelChannels = 2  # weights now hold the wrong count
    with pytest.raises(MLCError):
        _run(b, {"data": _rand(1, 3, 5, 5)})


def test_conv_channel_mismatch_is_refused():
    b = _builder((1, 4, 5, 5))
    _add_conv(b, _rand(4, 3, 3, 3), stride_height=1, stride_width=1, border_mode="valid", groups=1)
    with pytest.raises(MLCError, match="channels"):
        _run(b, {"data": _rand(1, 4, 5, 5)})


def test_pool_kernel_larger_than_input_is_refused():
    b = _builder((1, 1, 2, 2))
    _add_pool(b, "MAX", (3, 3), (1, 1), "VALID")
    with pytest.raises(MLCError, match="does not fit"):
        _run(b, {"data": _rand(1, 1, 2, 2)})


def test_pool3d_zero_stride_is_refused():
    b = _builder((1, 1, 4, 4, 4))
    b.add_pooling3d(name="p3", input_name="data", output_name="out", pooling_type="MAX", kernel_depth=2, kernel_height=2,
                    kernel_width=2, stride_depth=0, stride_height=1, stride_width=1)
    with pytest.raises(MLCError, match="positive"):
        _run(b, {"data": _rand(1, 1, 4, 4, 4)})


def test_subbyte_quantized_deconv_weights_decode_with_declared_shape():
    """4-bit lookup-table weights: the declared [C_in, C_out/g, kH, kW] shape tells the loader the count."""
    c_in, c_out = 2, 3
    lut = np.linspace(-1, 1, 16).astype(np.float32)
    q = RNG.integers(0, 16, (3, 2, c_in, c_out)).astype(np.uint8)  # builder layout [kH, kW, C_in, C_out]
    packed = _convert_array_to_nbit_quantized_bytes(q.transpose(2, 3, 0, 1).flatten(), 4).tobytes()
    b = _builder((1, c_in, 4, 4))
    b.add_convolution(name="deconv", kernel_channels=c_in, output_channels=c_out, height=3, width=2, stride_height=1,
                      stride_width=1, border_mode="valid", groups=1, W=np.zeros((3, 2, c_in, c_out), np.float32), b=None, has_bias=False, is_deconv=True,
                      input_name="data", output_name="out")
    wp = b.spec.neuralNetwork.layers[0].convolution.weights
    del wp.floatValue[:]
    wp.rawValue = packed
    wp.quantization.numberOfBits = 4
    wp.quantization.lookupTableQuantization.floatValue.extend(lut)
    w = lut[q.transpose(2, 3, 0, 1)]
    x = _rand(1, c_in, 4, 4)
    _close(_run(b, {"data": x}), F.conv_transpose2d(_t(x), _t(w)).numpy())
