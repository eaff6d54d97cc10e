"""lstm, gru and rnn against numpy loops and torch.nn.LSTM / GRU / RNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb

import mlc
from mlc import MLCError
from mlc.testing import torch_models
from mlc.testing.mil_program import assert_outputs as _check
from mlc.testing.mil_program import mil_model, run_mil

RNG = np.random.default_rng(7)
TOL = dict(rtol=1e-5, atol=1e-5)  # fp32 recurrences: a few ulps per step, compounded over <= 6 steps


def _rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _f32(a):
    return np.asarray(a, dtype=np.float32)


# -- numpy references (float64) -------------------------------------------------------------------

def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


NP_ACT = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "scaled_tanh": np.tanh,  # Core ML's defaults alpha = beta = 1
    "relu": lambda v: np.maximum(v, 0),
    "linear": lambda v: v,
    "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
    "sigmoid_hard": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
}


def _steps(x, reverse):
    """Time indices in processing order."""
    return range(len(x))[::-1] if reverse else range(len(x))


def np_lstm(x, h, c, w, r, b, p, acts, clip=None, reverse=False):
    """Outputs in processing order, final h, final c; gates [i, f, o, z]; clip on the cell state."""
    rec, cell, out = (NP_ACT[a] for a in acts)
    w, r, h, c = (np.asarray(a, np.float64) for a in (w, r, h, c))
    b = np.zeros(w.shape[0]) if b is None else b
    p = np.zeros(3 * r.shape[1]) if p is None else p
    p_i, p_f, p_o = np.split(p, 3)
    ys = []
    for t in _steps(x, reverse):
        g_i, g_f, g_o, g_z = np.split(x[t] @ w.T + h @ r.T + b, 4, axis=-1)
        c = rec(g_f + p_f * c) * c + rec(g_i + p_i * c) * cell(g_z)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        h = rec(g_o + p_o * c) * out(c)
        ys.append(h)
    return np.stack(ys), h, c


def np_gru(x, h, w, r, b, acts=("sigmoid", "tanh"), reverse=False, input_bias=None, reset_after=False):
    """Gates [r, o, z]; o = act(W_o x + (r*h) R_o^T + b_o), or act(W_o x + r * (h R_o^T + b_o)) with reset_after."""
    rec, act = NP_ACT[acts[0]], NP_ACT[acts[1]]
    h = np.asarray(h, np.float64)
    b = np.zeros(w.shape[0]) if b is None else b
    bi = np.zeros(w.shape[0]) if input_bias is None else input_bias
    (w_r, w_o, w_z), (r_r, r_o, r_z), (b_r, b_o, b_z) = np.split(w, 3), np.split(r, 3), np.split(b, 3)
    bi_r, bi_o, bi_z = np.split(bi, 3)
    ys = []
    for t in _steps(x, reverse):
        rt = rec(x[t] @ w_r.T + bi_r + h @ r_r.T + b_r)
        zt = rec(x[t] @ w_z.T + bi_z + h @ r_z.T + b_z)
        if reset_after:
            o = act(x[t] @ w_o.T + bi_o + rt * (h @ r_o.T + b_o))
        else:
            o = act(x[t] @ w_o.T + bi_o + (rt * h) @ r_o.T + b_o)
        h = (1 - zt) * o + zt * h
        ys.append(h)
    return np.stack(ys), h


def np_rnn(x, h, w, r, b, act="tanh", reverse=False):
    h = np.asarray(h, np.float64)
    b = np.zeros(w.shape[0]) if b is None else b
    ys = []
    for t in _steps(x, reverse):
        h = NP_ACT[act](x[t] @ w.T + h @ r.T + b)
        ys.append(h)
    return np.stack(ys), h


def _seq(ys, h, output_sequence):
    return _f32(ys if output_sequence else h[None])


# -- torch layouts -------------------------------------------------------------------------------

def _ifzo_to_ifoz(a):
    i, f, z, o = np.split(a, 4)
    return np.concatenate([i, f, o, z])


def _rzn_to_rnz(a):
    r, z, n = np.split(a, 3)
    return np.concatenate([r, n, z])


def _torch_lstm_weights(m, suffix=""):
    g = lambda name: getattr(m, name + suffix).detach().numpy()
    return (_ifzo_to_ifoz(g("weight_ih_l0")), _ifzo_to_ifoz(g("weight_hh_l0")),
            _ifzo_to_ifoz(g("bias_ih_l0") + g("bias_hh_l0")))


# -- lstm ----------------------------------------------------------------------------------------

def test_lstm_vs_torch():
    """Forward, reverse (outputs in processing order) and bidirectional (backward half aligned with time)."""
    s, b, i, h = 5, 3, 4, 6
    torch.manual_seed(0)
    uni, bi = torch.nn.LSTM(i, h), torch.nn.LSTM(i, h, bidirectional=True)
    w, r, bias = _torch_lstm_weights(uni)
    wb = [_torch_lstm_weights(bi), _torch_lstm_weights(bi, "_reverse")]
    x, h0, c0, h2, c2 = _rand(s, b, i), _rand(b, h), _rand(b, h), _rand(b, 2 * h), _rand(b, 2 * h)

    def body(x, h0, c0, h2, c2):
        fwd = mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=w, weight_hh=r, bias=bias, output_sequence=True)
        rev = mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=w, weight_hh=r, bias=bias, direction="reverse")
        both = dict(x=x, initial_h=h2, initial_c=c2, weight_ih=wb[0][0], weight_hh=wb[0][1], bias=wb[0][2],
                    weight_ih_back=wb[1][0], weight_hh_back=wb[1][1], bias_back=wb[1][2], direction="bidirectional")
        bi_seq = mb.lstm(output_sequence=True, **both)
        bi_last = mb.lstm(**both)
        return [*fwd, *rev, *bi_seq, bi_last[0]]

    outs = run_mil(body, {"x": x, "h0": h0, "c0": c0, "h2": h2, "c2": c2}, target="iOS15")
    t = torch.from_numpy
    with torch.no_grad():
        y, (hn, cn) = uni(t(x), (t(h0)[None], t(c0)[None]))
        yr, (hr, cr) = uni(t(x).flip(0), (t(h0)[None], t(c0)[None]))
        split = lambda a: torch.stack([a[:, :h], a[:, h:]])
        yb, (hb, cb) = bi(t(x), (split(t(h2)), split(t(c2))))
    cat = lambda a: torch.cat([a[0], a[1]], -1).numpy()
    refs = [y.numpy(), hn[0].numpy(), cn[0].numpy(), yr[-1:].numpy(), hr[0].numpy(), cr[0].numpy(),
            yb.numpy(), cat(hb), cat(cb), cat(hb)[None]]
    names = ["y", "h", "c", "rev_y", "rev_h", "rev_c", "bi_y", "bi_h", "bi_c", "bi_last"]
    _check(outs, refs, names, **TOL)


LSTM_ACTS = [
    ("sigmoid", "tanh", "tanh"),
    ("hard_sigmoid", "relu", "scaled_tanh"),
    ("tanh", "linear", "sigmoid"),
    ("HARD_SIGMOID", "sigmoid", "relu"),  # names are case-insensitive (rnn also spells it sigmoid_hard)
]


@pytest.mark.parametrize("target,s", [("iOS15", 6), ("iOS18", 6), ("iOS18", 1)])
def test_lstm_activations_peephole_clip(target, s):
    """Every activation in each slot, peepholes (old cell state for i/f, new for o), clip on the cell state.
    Several steps run with the state transposed, one step (a streaming model's call) without."""
    b, i, h = 2, 3, 4
    x, h0, c0 = _rand(s, b, i), _rand(b, h), _rand(b, h)
    cases = []
    for k, acts in enumerate(LSTM_ACTS):
        cases.append(dict(acts=acts, w=_rand(4 * h, i), r=_rand(4 * h, h), b=_rand(4 * h), p=_rand(3 * h),
                          clip=[None, 0.3, 5.0, None][k], reverse=k % 2 == 1, output_sequence=k < 2))

    def body(x, h0, c0):
        outs = []
        for cs in cases:
            kw = {} if cs["clip"] is None else {"clip": np.float32(cs["clip"])}
            outs += mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=cs["w"], weight_hh=cs["r"], bias=cs["b"],
                            peephole=cs["p"], direction="reverse" if cs["reverse"] else "forward",
                            output_sequence=cs["output_sequence"], recurrent_activation=cs["acts"][0],
                            cell_activation=cs["acts"][1], activation=cs["acts"][2], **kw)
        return outs

    outs = run_mil(body, {"x": x, "h0": h0, "c0": c0}, target=target)
    refs, names = [], []
    for cs in cases:
        acts = tuple(a.lower() for a in cs["acts"])
        ys, hn, cn = np_lstm(x, h0, c0, cs["w"], cs["r"], cs["b"], cs["p"], acts, cs["clip"], cs["reverse"])
        refs += [_seq(ys, hn, cs["output_sequence"]), _f32(hn), _f32(cn)]
        names += [f"{acts}:{o}" for o in ("y", "h", "c")]
    _check(outs, refs, names, **TOL)


def test_lstm_bidirectional_peephole_defaults():
    """Bidirectional with peephole / peephole_back and clip, no biases, initial states given as constants."""
    s, b, i, h = 4, 2, 3, 2
    x = _rand(s, b, i)
    w, r, p, wb, rb, pb = _rand(4 * h, i), _rand(4 * h, h), _rand(3 * h), _rand(4 * h, i), _rand(4 * h, h), _rand(3 * h)
    h0, c0 = _rand(b, 2 * h), _rand(b, 2 * h)
    outs = run_mil(
        lambda x: mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=w, weight_hh=r, peephole=p, weight_ih_back=wb,
                          weight_hh_back=rb, peephole_back=pb, direction="bidirectional", output_sequence=True,
                          clip=np.float32(0.5)),
        {"x": x}, target="iOS17",
    )
    acts = ("sigmoid", "tanh", "tanh")
    yf, hf, cf = np_lstm(x, h0[:, :h], c0[:, :h], w, r, None, p, acts, 0.5)
    yb, hb, cb = np_lstm(x, h0[:, h:], c0[:, h:], wb, rb, None, pb, acts, 0.5, reverse=True)
    refs = [np.concatenate([yf, yb[::-1]], -1), np.concatenate([hf, hb], -1), np.concatenate([cf, cb], -1)]
    _check(outs, [_f32(a) for a in refs], ["y", "h", "c"], **TOL)


def test_lstm_fp16():
    """An fp16 program (iOS17): outputs stay fp16; tolerance is fp16's (weights and I/O rounded to 11 bits)."""
    s, b, i, h = 4, 2, 3, 4
    x, h0, c0 = _rand(s, b, i).astype(np.float16), _rand(b, h).astype(np.float16), _rand(b, h).astype(np.float16)
    w, r, bias = (_rand(4 * h, i, scale=0.5).astype(np.float16), _rand(4 * h, h, scale=0.5).astype(np.float16),
                  _rand(4 * h).astype(np.float16))
    outs = run_mil(
        lambda x, h0, c0: mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=w, weight_hh=r, bias=bias,
                                  output_sequence=True),
        {"x": x, "h0": h0, "c0": c0}, target="iOS17", precision="fp16",
    )
    ys, hn, cn = np_lstm(x.astype(np.float64), h0, c0, w.astype(np.float64), r, bias.astype(np.float64), None,
                         ("sigmoid", "tanh", "tanh"))
    _check(outs, [a.astype(np.float16) for a in (ys, hn, cn)], ["y", "h", "c"], rtol=3e-3, atol=3e-3)


# -- gru -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,s", [("iOS15", 5), ("iOS17", 5), ("iOS18", 5), ("iOS18", 1)])
def test_gru(target, s):
    """Reset before the recurrent matmul (r * h) @ R_o^T; directions, activation pairs, no bias, output_sequence.
    Several steps run with the state transposed, one step without."""
    b, i, h = 3, 4, 3
    x, h0 = _rand(s, b, i), _rand(b, h)
    cases = [
        dict(acts=("sigmoid", "tanh"), reverse=False, seq=True, bias=True),
        dict(acts=("tanh", "sigmoid"), reverse=True, seq=True, bias=True),
        dict(acts=("hard_sigmoid", "relu"), reverse=False, seq=False, bias=False),
        dict(acts=("sigmoid", "linear"), reverse=True, seq=False, bias=True),
    ]
    for cs in cases:
        cs.update(w=_rand(3 * h, i), r=_rand(3 * h, h), b=_rand(3 * h) if cs["bias"] else None)

    def body(x, h0):
        outs = []
        for cs in cases:
            kw = {} if cs["b"] is None else {"bias": cs["b"]}
            outs += mb.gru(x=x, initial_h=h0, weight_ih=cs["w"], weight_hh=cs["r"], output_sequence=cs["seq"],
                           direction="reverse" if cs["reverse"] else "forward", recurrent_activation=cs["acts"][0],
                           activation=cs["acts"][1], **kw)
        return outs

    outs = run_mil(body, {"x": x, "h0": h0}, target=target)
    refs, names = [], []
    for cs in cases:
        ys, hn = np_gru(x, h0, cs["w"], cs["r"], cs["b"], cs["acts"], cs["reverse"])
        refs += [_seq(ys, hn, cs["seq"]), _f32(hn)]
        names += [f"{cs['acts']}:y", f"{cs['acts']}:h"]
    _check(outs, refs, names, **TOL)


@pytest.mark.parametrize("s", [6, 1])
def test_gru_ios18_reset_after_vs_torch(s):
    """iOS18 reset_after=True with input_bias is torch.nn.GRU; input_bias with reset before adds on the input side."""
    b, i, h = 2, 3, 5
    torch.manual_seed(1)
    m = torch.nn.GRU(i, h)
    g = lambda name: _rzn_to_rnz(getattr(m, name).detach().numpy())
    w, r, b_ih, b_hh = g("weight_ih_l0"), g("weight_hh_l0"), g("bias_ih_l0"), g("bias_hh_l0")
    x, h0 = _rand(s, b, i), _rand(b, h)

    def body(x, h0):
        torch_like = mb.gru(x=x, initial_h=h0, weight_ih=w, weight_hh=r, input_bias=b_ih, bias=b_hh,
                            reset_after=True, output_sequence=True)
        reset_before = mb.gru(x=x, initial_h=h0, weight_ih=w, weight_hh=r, input_bias=b_ih, bias=b_hh,
                              direction="reverse", output_sequence=True)
        reset_after_rev = mb.gru(x=x, initial_h=h0, weight_ih=w, weight_hh=r, bias=b_hh, reset_after=True,
                                 direction="reverse")
        return [*torch_like, *reset_before, *reset_after_rev]

    outs = run_mil(body, {"x": x, "h0": h0}, target="iOS18")
    with torch.no_grad():
        y, hn = m(torch.from_numpy(x), torch.from_numpy(h0)[None])
    yb, hb = np_gru(x, h0, w, r, b_hh, reverse=True, input_bias=b_ih)
    ya, ha = np_gru(x, h0, w, r, b_hh, reverse=True, reset_after=True)
    refs = [y.numpy(), hn[0].numpy(), _f32(yb), _f32(hb), _f32(ha[None]), _f32(ha)]
    _check(outs, refs, ["torch_y", "torch_h", "before_y", "before_h", "after_rev_y", "after_rev_h"], **TOL)


# -- rnn -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [5, 1])
def test_rnn(s):
    """torch.nn.RNN (tanh, relu) forward and reverse; the other activations against numpy."""
    b, i, h = 3, 4, 6
    torch.manual_seed(2)
    tanh_rnn, relu_rnn = torch.nn.RNN(i, h), torch.nn.RNN(i, h, nonlinearity="relu")
    wts = lambda m: [getattr(m, n).detach().numpy() for n in ("weight_ih_l0", "weight_hh_l0")] + [
        (m.bias_ih_l0 + m.bias_hh_l0).detach().numpy()]
    (w, r, bias), (wr, rr, br) = wts(tanh_rnn), wts(relu_rnn)
    extra = [(a, _rand(h, i), _rand(h, h)) for a in ("sigmoid", "sigmoid_hard", "scaled_tanh", "linear")]
    x, h0 = _rand(s, b, i), _rand(b, h)

    def body(x, h0):
        outs = [*mb.rnn(x=x, initial_h=h0, weight_ih=w, weight_hh=r, bias=bias, output_sequence=True),
                *mb.rnn(x=x, initial_h=h0, weight_ih=wr, weight_hh=rr, bias=br, activation="relu",
                        direction="reverse", output_sequence=True)]
        for a, we, re in extra:
            outs += mb.rnn(x=x, initial_h=h0, weight_ih=we, weight_hh=re, activation=a)
        return outs

    outs = run_mil(body, {"x": x, "h0": h0}, target="iOS15")
    t = torch.from_numpy
    with torch.no_grad():
        y, hn = tanh_rnn(t(x), t(h0)[None])
        yr, hr = relu_rnn(t(x).flip(0), t(h0)[None])
    refs = [y.numpy(), hn[0].numpy(), yr.numpy(), hr[0].numpy()]
    names = ["tanh_y", "tanh_h", "relu_rev_y", "relu_rev_h"]
    for a, we, re in extra:
        ys, hl = np_rnn(x, h0, we, re, None, a)
        refs += [_f32(hl[None]), _f32(hl)]
        names += [f"{a}_y", f"{a}_h"]
    _check(outs, refs, names, **TOL)


# -- static path, params, gradients, errors ------------------------------------------------------

def test_all_constant_inputs_fold():
    """Every input a constant: the ops run at trace time on numpy."""
    s, b, i, h = 3, 2, 2, 3
    x, h0, c0 = _rand(s, b, i), _rand(b, h), _rand(b, h)
    w4, r4, w3, r3 = _rand(4 * h, i), _rand(4 * h, h), _rand(3 * h, i), _rand(3 * h, h)
    w1, r1 = _rand(h, i), _rand(h, h)
    outs = run_mil(
        lambda y: [mb.add(x=y, y=mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=w4, weight_hh=r4)[1]),
                   mb.add(x=y, y=mb.gru(x=x, initial_h=h0, weight_ih=w3, weight_hh=r3)[1]),
                   mb.add(x=y, y=mb.rnn(x=x, initial_h=h0, weight_ih=w1, weight_hh=r1)[1])],
        {"y": np.zeros((b, h), np.float32)}, target="iOS17",
    )
    refs = [np_lstm(x, h0, c0, w4, r4, None, None, ("sigmoid", "tanh", "tanh"))[1], np_gru(x, h0, w3, r3, None)[1],
            np_rnn(x, h0, w1, r1, None)[1]]
    _check(outs, [_f32(a) for a in refs], ["lstm", "gru", "rnn"], **TOL)


def test_weights_are_params_and_differentiate():
    """The LSTM weights are traced params; jax.grad through the scan matches torch autograd."""
    s, b, i, h = 4, 2, 3, 4
    torch.manual_seed(3)
    m = torch.nn.LSTM(i, h, bias=False)
    w_ih, w_hh = (_ifzo_to_ifoz(getattr(m, n).detach().numpy()) for n in ("weight_ih_l0", "weight_hh_l0"))
    model = mil_model(
        lambda x: mb.reduce_sum(x=mb.lstm(x=x, initial_h=np.zeros((b, h), np.float32),
                                          initial_c=np.zeros((b, h), np.float32), weight_ih=w_ih, weight_hh=w_hh,
                                          output_sequence=True)[0]),
        {"x": (s, b, i)}, target="iOS17",
    )
    fn, params = model.jax_function()
    key = next(k for k, v in params.items() if np.shape(v) == w_hh.shape and np.allclose(v, w_hh))
    x = _rand(s, b, i)
    (out_name,) = model.output_description
    grad = jax.grad(lambda p: jnp.sum(fn(p, {"x": x})[out_name]))(params)[key]
    y, _ = m(torch.from_numpy(x))
    y.sum().backward()
    np.testing.assert_allclose(grad, _ifzo_to_ifoz(m.weight_hh_l0.grad.numpy()), rtol=1e-4, atol=1e-5)


def test_unsupported_attributes_raise():
    x = np.zeros((2, 1, 3), np.float32)
    w, r = _rand(3, 3), _rand(3, 1)
    model = mil_model(lambda x: mb.gru(x=x, initial_h=np.zeros((1, 1), np.float32), weight_ih=w, weight_hh=r,
                                       activation="softsign"), {"x": (2, 1, 3)}, target="iOS17")
    with pytest.raises(MLCError, match="softsign"):
        model.predict({"x": x})


# -- a converted torch model ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torch_lstm_model():
    """A two-layer bidirectional batch-first nn.LSTM and an nn.RNN(relu), traced and converted by coremltools."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True)
            self.rnn = torch.nn.RNN(12, 4, nonlinearity="relu")

        def forward(self, x):
            y, _ = self.lstm(x)
            z, hn = self.rnn(y.transpose(0, 1))
            return z.sum(0) + hn[0]

    torch.manual_seed(4)
    module, example = Net().eval(), (torch.randn(2, 7, 5),)
    mlmodel = torch_models.convert(module, example, target="iOS17")
    ops = {o.op_type for o in mlmodel._mil_program.functions["main"].operations}
    assert {"lstm", "rnn"} <= ops, ops
    model = mlc.load(mlmodel)
    out = model.predict({"x": example[0].numpy()})["y"]
    np.testing.assert_allclose(out, torch_models.reference(module, example), rtol=1e-5, atol=1e-5)
    # predict_batch vmaps the program: the scans' transposed states carry the vmapped batch too
    batch = torch.randn(3, 2, 7, 5)
    got = model.predict_batch({"x": batch.numpy()})["y"]
    for k in range(3):
        np.testing.assert_allclose(got[k], torch_models.reference(module, (batch[k],)), rtol=1e-5, atol=1e-5)


# -- initial states sized at run time ------------------------------------------------------------

@pytest.mark.parametrize("rows_from", ["x_shape", "input_value"])
def test_lstm_initial_state_from_fill_with_more_rows(rows_from):
    """coremltools' torch converter lowers pack_padded_sequence with a zero initial state from a ``fill``
    sized by the first sequence length (here: x's length s, from x's shape or from an int input's value,
    which makes the program run node by node), not by the batch b < s. Core ML runs it, sized by x's
    batch (the first b rows of the state); so does mlc. Oracle: torch.nn.LSTM from a zero state."""
    s, b, i, h = 5, 2, 3, 4
    torch.manual_seed(5)
    m = torch.nn.LSTM(i, h)
    w, r, bias = _torch_lstm_weights(m)
    x = _rand(s, b, i)
    lengths = np.array([s, 3], np.int32)

    def body(x, lengths):
        if rows_from == "x_shape":
            rows = mb.slice_by_index(x=mb.shape(x=x), begin=[0], end=[1])
        else:
            rows = mb.slice_by_index(x=lengths, begin=[0], end=[1])
        zeros = mb.fill(shape=mb.concat(values=[rows, np.array([h], np.int32)], axis=0), value=0.0)
        return mb.lstm(x=x, initial_h=zeros, initial_c=zeros, weight_ih=w, weight_hh=r, bias=bias,
                       output_sequence=True)

    model = mil_model(body, {"x": (s, b, i), "lengths": ((2,), "int32")}, target="iOS15")
    out = model.predict({"x": x, "lengths": lengths})
    outs = [out[name] for name in model.output_description]
    with torch.no_grad():
        y, (hn, cn) = m(torch.from_numpy(x))
    _check(outs, [y.numpy(), hn[0].numpy(), cn[0].numpy()], ["y", "h", "c"], **TOL)
    assert [o.shape for o in outs] == [(s, b, h), (b, h), (b, h)]


def test_lstm_initial_state_broadcast_row_and_too_few_rows():
    """One initial row is every sequence's; fewer rows than the batch (other than one) is an error naming the op."""
    s, b, i, h = 4, 3, 2, 3
    w, r = _rand(4 * h, i), _rand(4 * h, h)
    x, h1, c1 = _rand(s, b, i), _rand(1, h), _rand(1, h)
    outs = run_mil(lambda x, h1, c1: mb.lstm(x=x, initial_h=h1, initial_c=c1, weight_ih=w, weight_hh=r),
                   {"x": x, "h1": h1, "c1": c1}, target="iOS17")
    ys, hn, cn = np_lstm(x, np.repeat(h1, b, 0), np.repeat(c1, b, 0), w, r, None, None, ("sigmoid", "tanh", "tanh"))
    _check(outs, [_f32(hn[None]), _f32(hn), _f32(cn)], ["y", "h", "c"], **TOL)

    model = mil_model(lambda x, h2: mb.lstm(x=x, initial_h=h2, initial_c=h2, weight_ih=w, weight_hh=r),
                      {"x": (s, b, i), "h2": (2, h)}, target="iOS17")
    with pytest.raises(MLCError, match=r"lstm.*initial_h has 2 rows, fewer than x's batch 3"):
        model.predict({"x": x, "h2": _rand(2, h)})
