"""NeuralNetwork recurrent layers (simpleRecurrent, gru, uniDirectionalLSTM, biDirectionalLSTM),
built with coremltools' NeuralNetworkBuilder and checked against torch.nn.RNN / torch.nn.LSTM
with copied weights, or numpy step functions written from NeuralNetwork.proto's equations.

The builder orders LSTM gates [i, f, o, z] and torch [i, f, z(g), o]; GRU gates [z, r, o].
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc

pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

S, B, I, H = 4, 2, 3, 5
ATOL = 1e-5


def _rng(seed=0):
    return np.random.default_rng(seed)


def _builder(inputs, outputs, exact=True):
    feats = [(name, datatypes.Array(*shape)) for name, shape in inputs]
    return NeuralNetworkBuilder(feats, [(o, None) for o in outputs], disable_rank5_shape_mapping=exact)


def _predict(builder, **inputs):
    out = mlc.load(builder.spec).predict({k: np.asarray(v, np.float32) for k, v in inputs.items()})
    return {k: np.asarray(v) for k, v in out.items()}


def _r5(a):
    """(S, B, C) -> (S, B, C, 1, 1)."""
    return np.asarray(a, np.float32)[..., None, None]


def _sig(v):
    return 1 / (1 + np.exp(-v))


ACTS = {
    "SIGMOID": _sig,
    "TANH": np.tanh,
    "RELU": lambda v: np.maximum(v, 0),
    "LINEAR": lambda v: v,
    "SCALED_TANH": np.tanh,  # an empty scaledTanh message: alpha = beta = 1 (coremltools' LSTM tests)
    "SIGMOID_HARD": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
}


# -- torch-backed checks ------------------------------------------------------------------------
def _torch_lstm(bidirectional=False, seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H, 1, bidirectional=bidirectional)


def _coreml_lstm_weights(m, suffix=""):
    """torch LSTM weights ([i, f, g, o] stacked) as the builder's W_h, W_x, b lists ([i, f, o, z])."""
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}

    def ifoz(a):
        i, f, g, o = np.split(a, 4)
        return [i, f, o, g]

    b = ifoz(sd["bias_ih_l0" + suffix] + sd["bias_hh_l0" + suffix])
    return ifoz(sd["weight_hh_l0" + suffix]), ifoz(sd["weight_ih_l0" + suffix]), b


@pytest.mark.parametrize("reverse, sequence, steps, batch", [(False, True, S, B), (True, False, S, B), (True, True, S, B), (False, True, 1, B), (True, True, S, 1)])
def test_unilstm_matches_torch(reverse, sequence, steps, batch):
    """Several steps or one, several rows or one (the state runs transposed, mlc.kernels.recurrence)."""
    S, B = steps, batch
    m = _torch_lstm()
    w_h, w_x, b = _coreml_lstm_weights(m)
    rng = _rng(1)
    x, h0, c0 = rng.standard_normal((S, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    bld = _builder([("x", (S, B, I, 1, 1)), ("h0", (1, B, H, 1, 1)), ("c0", (1, B, H, 1, 1))], ["y", "h", "c"])
    bld.add_unilstm("lstm", w_h, w_x, b, H, I, ["x", "h0", "c0"], ["y", "h", "c"], output_all=sequence, reverse_input=reverse)
    out = _predict(bld, x=_r5(x), h0=_r5(h0[None]), c0=_r5(c0[None]))

    xt = torch.tensor(x[::-1].copy() if reverse else x, dtype=torch.float32)
    y, (hn, cn) = m(xt, (torch.tensor(h0[None], dtype=torch.float32), torch.tensor(c0[None], dtype=torch.float32)))
    y = y.detach().numpy()
    y = y if sequence else y[-1:]
    assert out["y"].shape == (y.shape[0], B, H, 1, 1)
    np.testing.assert_allclose(out["y"][..., 0, 0], y, atol=ATOL)
    np.testing.assert_allclose(out["h"].reshape(B, H), hn.detach().numpy()[0], atol=ATOL)
    np.testing.assert_allclose(out["c"].reshape(B, H), cn.detach().numpy()[0], atol=ATOL)


def test_unilstm_state_with_more_vectors_than_the_batch_reads_the_first():
    """A zero state sized by a sequence length rather than the batch (coremltools' packed-sequence
    lowering: 10 vectors for 3 sequences), as Core ML runs it; the oracle is torch on the first B."""
    m = _torch_lstm()
    w_h, w_x, b = _coreml_lstm_weights(m)
    rng = _rng(2)
    rows = B + 3
    x, h0, c0 = rng.standard_normal((S, B, I)), rng.standard_normal((rows, H)), rng.standard_normal((rows, H))
    bld = _builder([("x", (S, B, I, 1, 1)), ("h0", (1, rows, H, 1, 1)), ("c0", (1, rows, H, 1, 1))], ["y", "h", "c"])
    bld.add_unilstm("lstm", w_h, w_x, b, H, I, ["x", "h0", "c0"], ["y", "h", "c"], output_all=True)
    out = _predict(bld, x=_r5(x), h0=_r5(h0[None]), c0=_r5(c0[None]))
    first = (torch.tensor(h0[None, :B], dtype=torch.float32), torch.tensor(c0[None, :B], dtype=torch.float32))
    y, (hn, cn) = m(torch.tensor(x, dtype=torch.float32), first)
    np.testing.assert_allclose(out["y"][..., 0, 0], y.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(out["h"].reshape(B, H), hn.detach().numpy()[0], atol=ATOL)


@pytest.mark.parametrize("sequence", [False, True])
def test_bidirlstm_matches_torch(sequence):
    m = _torch_lstm(bidirectional=True, seed=3)
    w_h, w_x, b = _coreml_lstm_weights(m)
    w_hb, w_xb, bb = _coreml_lstm_weights(m, "_reverse")
    rng = _rng(2)
    x = rng.standard_normal((S, B, I))
    h0, c0 = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    names = ["x", "hf", "cf", "hb", "cb"]
    outs = ["y", "hf_o", "cf_o", "hb_o", "cb_o"]
    bld = _builder([("x", (S, B, I, 1, 1))] + [(n, (1, B, H, 1, 1)) for n in names[1:]], outs)
    bld.add_bidirlstm("bi", w_h, w_x, b, w_hb, w_xb, bb, H, I, names, outs, output_all=sequence)
    out = _predict(bld, x=_r5(x), hf=_r5(h0[:1]), cf=_r5(c0[:1]), hb=_r5(h0[1:]), cb=_r5(c0[1:]))

    y, (hn, cn) = m(torch.tensor(x, dtype=torch.float32), (torch.tensor(h0, dtype=torch.float32), torch.tensor(c0, dtype=torch.float32)))
    y, hn, cn = y.detach().numpy(), hn.detach().numpy(), cn.detach().numpy()
    if not sequence:  # [yf_T, yb_1]: both directions' final outputs
        y = np.concatenate([hn[0], hn[1]], axis=-1)[None]
    assert out["y"].shape == (y.shape[0], B, 2 * H, 1, 1)
    np.testing.assert_allclose(out["y"][..., 0, 0], y, atol=ATOL)
    for name, ref in [("hf_o", hn[0]), ("hb_o", hn[1])]:
        np.testing.assert_allclose(out[name].reshape(B, H), ref, atol=ATOL)
    np.testing.assert_allclose(out["cf_o"].reshape(B, H), cn[0], atol=ATOL)
    np.testing.assert_allclose(out["cb_o"].reshape(B, H), cn[1], atol=ATOL)


@pytest.mark.parametrize("activation, torch_nl", [("TANH", "tanh"), ("RELU", "relu")])
def test_simple_rnn_matches_torch(activation, torch_nl):
    torch.manual_seed(4)
    m = torch.nn.RNN(I, H, 1, nonlinearity=torch_nl)
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    rng = _rng(3)
    x, h0 = rng.standard_normal((S, B, I)), rng.standard_normal((B, H))
    bld = _builder([("x", (S, B, I, 1, 1)), ("h0", (B, H, 1, 1, 1))], ["y", "h"])
    bld.add_simple_rnn("rnn", sd["weight_hh_l0"], sd["weight_ih_l0"], sd["bias_ih_l0"] + sd["bias_hh_l0"], H, I,
                       activation, ["x", "h0"], ["y", "h"], output_all=True)
    out = _predict(bld, x=_r5(x), h0=h0[..., None, None, None])
    y, hn = m(torch.tensor(x, dtype=torch.float32), torch.tensor(h0[None], dtype=torch.float32))
    np.testing.assert_allclose(out["y"][..., 0, 0], y.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(out["h"].reshape(B, H), hn.detach().numpy()[0], atol=ATOL)


# -- numpy step functions (proto equations) -----------------------------------------------------
def _np_gru(x, h, wx, wh, b, f, g, reverse):
    (wz, wr, wo), (rz, rr, ro), (bz, br, bo) = wx, wh, b
    ys = []
    for xt in (x[::-1] if reverse else x):
        z = f(np.clip(xt @ wz.T + h @ rz.T + bz, -50, 50))
        r = f(np.clip(xt @ wr.T + h @ rr.T + br, -50, 50))
        o = g(np.clip(xt @ wo.T + (h * r) @ ro.T + bo, -50, 50))
        h = (1 - z) * o + z * h
        ys.append(h)
    return np.stack(ys), h


def _np_lstm(x, h, c, wx, wh, b, peep, acts, coupled=False, clip=50.0, forget_bias=False, reverse=False):
    (wi, wf, wo, wz), (ri, rf, ro, rz), (bi, bf, bo, bz) = wx, wh, b
    pi, pf, po = peep
    f, g, hh = acts
    bf = bf + (1.0 if forget_bias else 0.0)
    cl = lambda v: np.clip(v, -50, 50)  # noqa: E731
    ys = []
    for xt in (x[::-1] if reverse else x):
        i = f(cl(xt @ wi.T + h @ ri.T + pi * c + bi))
        fg = f(cl(xt @ wf.T + h @ rf.T + pf * c + bf))
        z = g(cl(xt @ wz.T + h @ rz.T + bz))
        c = c * (1 - i) + i * z if coupled else c * fg + i * z
        c = np.clip(c, -clip, clip)
        o = f(cl(xt @ wo.T + h @ ro.T + po * c + bo))
        h = hh(c) * o
        ys.append(h)
    return np.stack(ys), h, c


def _mats(rng, n, shape, scale=1.0):
    return [(scale * rng.standard_normal(shape)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("reverse, acts, steps, batch", [(False, ("SIGMOID", "TANH"), S, B), (True, ("SIGMOID_HARD", "LINEAR"), S, B),
                                                  (False, ("SIGMOID", "TANH"), S, 1), (True, ("SIGMOID", "TANH"), 1, B)])
def test_gru_matches_numpy(reverse, acts, steps, batch):
    """Several steps or one, several rows or one (the state runs transposed, mlc.kernels.recurrence)."""
    S, B = steps, batch
    rng = _rng(5)
    wx, wh, b = _mats(rng, 3, (H, I)), _mats(rng, 3, (H, H), 0.5), _mats(rng, 3, (H,))
    x, h0 = rng.standard_normal((S, B, I)), rng.standard_normal((B, H))
    bld = _builder([("x", (S, B, I, 1, 1)), ("h0", (1, B, H, 1, 1))], ["y", "h"])
    bld.add_gru("gru", wh, wx, b, H, I, ["x", "h0"], ["y", "h"], activation=acts[1], inner_activation=acts[0],
                output_all=True, reverse_input=reverse)
    out = _predict(bld, x=_r5(x), h0=_r5(h0[None]))
    ys, hn = _np_gru(x, h0, wx, wh, b, ACTS[acts[0]], ACTS[acts[1]], reverse)
    np.testing.assert_allclose(out["y"][..., 0, 0], ys, atol=ATOL)
    np.testing.assert_allclose(out["h"].reshape(B, H), hn, atol=ATOL)


@pytest.mark.parametrize(
    "kw, acts",
    [
        (dict(peep=True, clip=0.3), ("SIGMOID", "TANH", "SCALED_TANH")),
        (dict(coupled=True, forget_bias=True), ("SIGMOID_HARD", "RELU", "LINEAR")),
        (dict(bias=False, forget_bias=True, reverse=True), ("SIGMOID", "TANH", "TANH")),
    ],
)
def test_unilstm_options_match_numpy(kw, acts):
    """Peepholes, cell clipping, the coupled input/forget gate, forgetBias and missing biases, with
    the builder's parameterless activations; no state inputs (states start at zero)."""
    rng = _rng(6)
    wx, wh, b, p = _mats(rng, 4, (H, I)), _mats(rng, 4, (H, H), 0.5), _mats(rng, 4, (H,)), _mats(rng, 3, (H,))
    x = rng.standard_normal((S, B, I))
    bld = _builder([("x", (S, B, I, 1, 1))], ["y", "h", "c"])
    clip = kw.get("clip", 50.0)
    bld.add_unilstm("lstm", wh, wx, b if kw.get("bias", True) else None, H, I, ["x"], ["y", "h", "c"],
                    inner_activation=acts[0], cell_state_update_activation=acts[1], output_activation=acts[2],
                    peep=p if kw.get("peep") else None, output_all=True, forget_bias=kw.get("forget_bias", False),
                    coupled_input_forget_gate=kw.get("coupled", False), cell_clip_threshold=clip,
                    reverse_input=kw.get("reverse", False))
    out = _predict(bld, x=_r5(x))
    zeros = np.zeros((B, H))
    ys, hn, cn = _np_lstm(
        x, zeros, zeros, wx, wh, b if kw.get("bias", True) else [np.zeros(H)] * 4,
        p if kw.get("peep") else [np.zeros(H)] * 3, [ACTS[a] for a in acts], coupled=kw.get("coupled", False),
        clip=clip, forget_bias=kw.get("forget_bias", False), reverse=kw.get("reverse", False),
    )
    np.testing.assert_allclose(out["y"][..., 0, 0], ys, atol=ATOL)
    np.testing.assert_allclose(out["h"].reshape(B, H), hn, atol=ATOL)
    np.testing.assert_allclose(out["c"].reshape(B, H), cn, atol=ATOL)


def test_explicit_scaled_tanh_alpha_beta_are_honoured():
    rng = _rng(7)
    wx, wh = rng.standard_normal((H, I)).astype(np.float32), rng.standard_normal((H, H)).astype(np.float32)
    x = rng.standard_normal((S, 1, I))
    bld = _builder([("x", (S, 1, I, 1, 1))], ["y"])
    layer = bld.add_simple_rnn("rnn", wh, wx, None, H, I, "SCALED_TANH", ["x"], ["y"], output_all=True)
    layer.simpleRecurrent.activation.scaledTanh.alpha = 1.7159
    layer.simpleRecurrent.activation.scaledTanh.beta = 2 / 3
    out = _predict(bld, x=_r5(x))
    h, ys = np.zeros((1, H)), []
    for xt in x:
        h = 1.7159 * np.tanh(2 / 3 * (xt @ wx.T + h @ wh.T))
        ys.append(h)
    np.testing.assert_allclose(out["y"][..., 0, 0], np.stack(ys), atol=ATOL)


def test_rank5_world_last_output():
    """Default rank-5 mapping: input declared (I,), given as the full [S, 1, I, 1, 1] array; the
    last-step output [1, 1, H, 1, 1] comes back as the declared (H,)."""
    rng = _rng(8)
    wx, wh, b = rng.standard_normal((H, I)), rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
    x = rng.standard_normal((S, 1, I))
    bld = NeuralNetworkBuilder([("x", datatypes.Array(I))], [("y", datatypes.Array(H))])
    bld.add_simple_rnn("rnn", wh, wx, b, H, I, "SIGMOID", ["x"], ["y"], output_all=False)
    out = _predict(bld, x=_r5(x))
    h = np.zeros(H)
    for xt in x[:, 0]:
        h = _sig(wx @ xt + wh @ h + b)
    np.testing.assert_allclose(out["y"].reshape(-1), h, atol=ATOL)


def test_lut_quantized_weight_decodes_with_declared_shape():
    """A 4-bit lookup-table weight matrix needs the declared [H, I] shape to unpack."""
    rng = _rng(9)
    lut = np.linspace(-1, 1, 16).astype(np.float32)
    q = rng.integers(0, 16, size=H * I)
    wh = rng.standard_normal((H, H)).astype(np.float32) * 0.5
    x = rng.standard_normal((S, 1, I))
    bld = _builder([("x", (S, 1, I, 1, 1))], ["y"])
    layer = bld.add_simple_rnn("rnn", wh, np.zeros((H, I), np.float32), None, H, I, "TANH", ["x"], ["y"])
    wm = layer.simpleRecurrent.weightMatrix
    wm.ClearField("floatValue")
    wm.rawValue = np.packbits(((q[:, None] >> np.arange(3, -1, -1)) & 1).astype(np.uint8).reshape(-1)).tobytes()
    wm.quantization.numberOfBits = 4
    wm.quantization.lookupTableQuantization.floatValue.extend(lut)
    out = _predict(bld, x=_r5(x))
    wx = lut[q].reshape(H, I)
    h = np.zeros((1, H))
    for xt in x:
        h = np.tanh(xt @ wx.T + h @ wh.T)
    np.testing.assert_allclose(out["y"].reshape(1, H), h, atol=ATOL)


# -- invalid parameters -------------------------------------------------------------------------
def _gru_builder(rng=None):
    rng = rng or _rng(10)
    bld = _builder([("x", (S, 1, I, 1, 1))], ["y"])
    layer = bld.add_gru("gru", _mats(rng, 3, (H, H)), _mats(rng, 3, (H, I)), None, H, I, ["x"], ["y"])
    return bld, layer


def test_gru_with_one_activation_is_rejected():
    bld, layer = _gru_builder()
    del layer.gru.activations[1]
    with pytest.raises(mlc.MLCError, match="2 activations"):
        _predict(bld, x=np.zeros((S, 1, I, 1, 1)))


def test_activation_outside_the_recurrent_set_is_rejected():
    bld, layer = _gru_builder()
    layer.gru.activations[0].leakyReLU.alpha = 0.1
    with pytest.raises(mlc.MLCError, match="not allowed in a recurrent layer"):
        _predict(bld, x=np.zeros((S, 1, I, 1, 1)))


def test_wrong_input_size_is_rejected():
    bld, _ = _gru_builder()
    bld.spec.neuralNetwork.layers[0].gru.inputVectorSize = I + 1
    with pytest.raises(mlc.MLCError):
        _predict(bld, x=np.zeros((S, 1, I, 1, 1)))


def test_bidirlstm_needs_two_weight_sets():
    rng = _rng(11)
    mats = lambda shape: _mats(rng, 4, shape)  # noqa: E731
    bld = _builder([("x", (S, 1, I, 1, 1))], ["y"])
    layer = bld.add_bidirlstm("bi", mats((H, H)), mats((H, I)), None, mats((H, H)), mats((H, I)), None, H, I, ["x"], ["y"])
    del layer.biDirectionalLSTM.weightParams[1]
    with pytest.raises(mlc.MLCError, match="2 LSTMWeightParams"):
        _predict(bld, x=np.zeros((S, 1, I, 1, 1)))
