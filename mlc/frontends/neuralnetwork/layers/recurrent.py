"""Recurrent layers (NeuralNetwork.proto ``SimpleRecurrentLayerParams``, ``GRULayerParams``,
``UniDirectionalLSTMLayerParams``, ``BiDirectionalLSTMLayerParams``), each one ``lax.scan`` over time.

Layout: the sequence input is rank 5, ``[Seq, Batch, inputVectorSize, 1, 1]``; the optional
state inputs (``h0``, ``c0``; for the bidirectional LSTM ``h0, c0, h0_reverse, c0_reverse``)
hold ``Batch * outputVectorSize`` values in any rank-5 arrangement (the MIL converter gives
``[1, B, H, 1, 1]`` or ``[B, H, 1, 1, 1]``); a missing state starts at zero. Outputs: the
sequence ``[Seq, B, H, 1, 1]`` (or the last step, ``[1, B, H, 1, 1]``, when ``sequenceOutput``
is false), then the final states ``[1, B, H, 1, 1]``; a layer that names fewer outputs gets the
first ones.

Every gate pre-activation is clipped to [-50, 50]; the LSTM cell state to
``±cellClipThreshold`` (50 when 0). ``reverseInput`` reads the sequence from its last step and
emits outputs in processing order (output k is the state after k+1 steps), as Core ML does.
The bidirectional LSTM's backward half is aligned with the input steps (its output at step t
has read x_T..x_t) and concatenated after the forward half on the channel axis. The scans carry
their state transposed (``mlc.kernels.recurrence.StateLayout``), one step included.

Activations (``ActivationParams``) are linear, sigmoid, tanh, ReLU, scaledTanh, sigmoidHard. The
builder writes scaledTanh/sigmoidHard/linear as empty messages (alpha = beta = 0); those take
Core ML's recurrent defaults: scaledTanh is tanh (alpha = beta = 1, as coremltools' LSTM tests
expect), sigmoidHard is ``clip(0.2 x + 0.5, 0, 1)``, linear is the identity. Explicit alpha/beta
are honoured.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.layers.activation import NONLINEARITIES
from mlc.frontends.neuralnetwork.registry import layer
from mlc.kernels.recurrence import StateLayout

_CLIP = 50.0
_HIGHEST = jax.lax.Precision.HIGHEST
_RECURRENT_ACTIVATIONS = ("linear", "sigmoid", "tanh", "ReLU", "scaledTanh", "sigmoidHard")
_EMPTY_DEFAULTS = {"linear": (1.0, 0.0), "scaledTanh": (1.0, 1.0), "sigmoidHard": (0.2, 0.5)}

_LSTM_MATRICES = {  # gate -> (input weight, recursion weight, bias) field names of LSTMWeightParams
    "i": ("inputGateWeightMatrix", "inputGateRecursionMatrix", "inputGateBiasVector"),
    "f": ("forgetGateWeightMatrix", "forgetGateRecursionMatrix", "forgetGateBiasVector"),
    "z": ("blockInputWeightMatrix", "blockInputRecursionMatrix", "blockInputBiasVector"),
    "o": ("outputGateWeightMatrix", "outputGateRecursionMatrix", "outputGateBiasVector"),
}
_LSTM_PEEPHOLES = {"i": "inputGatePeepholeVector", "f": "forgetGatePeepholeVector", "o": "outputGatePeepholeVector"}
_GRU_MATRICES = {  # gate -> (input weight, recursion weight, bias) field names of GRULayerParams
    "z": ("updateGateWeightMatrix", "updateGateRecursionMatrix", "updateGateBiasVector"),
    "r": ("resetGateWeightMatrix", "resetGateRecursionMatrix", "resetGateBiasVector"),
    "o": ("outputGateWeightMatrix", "outputGateRecursionMatrix", "outputGateBiasVector"),
}


# -- weight declarations ------------------------------------------------------------------------
def _gate_shapes(matrices: dict, h: int, i: int, prefix: str = "") -> dict:
    shapes = {}
    for wx, wh, b in matrices.values():
        shapes[prefix + wx] = ((h, i), 0)
        shapes[prefix + wh] = ((h, h), 0)
        shapes[prefix + b] = ((h,), 0)
    return shapes


def _lstm_shapes(h: int, i: int, prefix: str) -> dict:
    shapes = _gate_shapes(_LSTM_MATRICES, h, i, prefix)
    shapes.update({prefix + name: ((h,), 0) for name in _LSTM_PEEPHOLES.values()})
    return shapes


def _simple_weights(p) -> dict:
    h, i = int(p.outputVectorSize), int(p.inputVectorSize)
    return {"weightMatrix": ((h, i), 0), "recursionMatrix": ((h, h), 0), "biasVector": ((h,), 0)}


def _gru_weights(p) -> dict:
    return _gate_shapes(_GRU_MATRICES, int(p.outputVectorSize), int(p.inputVectorSize))


def _unilstm_weights(p) -> dict:
    return _lstm_shapes(int(p.outputVectorSize), int(p.inputVectorSize), "weightParams.")


def _bilstm_weights(p) -> dict:
    h, i = int(p.outputVectorSize), int(p.inputVectorSize)
    return {**_lstm_shapes(h, i, "weightParams[0]."), **_lstm_shapes(h, i, "weightParams[1].")}


# -- shared helpers -----------------------------------------------------------------------------
def _activation(ctx, a, what: str):
    """One recurrent ``ActivationParams`` as a function (see the module docstring for defaults)."""
    kind = a.WhichOneof("NonlinearityType")
    if kind is None:
        raise ctx.fail(f"{what} activation is not set")
    if kind not in _RECURRENT_ACTIVATIONS:
        raise ctx.fail(
            f"{what} activation {kind!r} is not allowed in a recurrent layer "
            f"(NeuralNetwork.proto allows {', '.join(_RECURRENT_ACTIVATIONS)})"
        )
    p = getattr(a, kind)
    if kind in _EMPTY_DEFAULTS and p.alpha == 0 and p.beta == 0:
        alpha, beta = _EMPTY_DEFAULTS[kind]
        p = types.SimpleNamespace(alpha=alpha, beta=beta)
    fn = NONLINEARITIES[kind]
    return lambda x: fn(p, x, ctx)


def _activations(ctx, acts, names: tuple[str, ...]):
    if len(acts) != len(names):
        raise ctx.fail(f"needs {len(names)} activations ({', '.join(names)}), the layer has {len(acts)}")
    return [_activation(ctx, a, n) for a, n in zip(acts, names)]


def _sequence(ctx, x, input_size: int):
    """The rank-5 input ``[S, B, I, 1, 1]`` as ``(S, B, I)``."""
    x = f32(x)
    if x.ndim != 5:
        raise ctx.fail(f"input must be rank 5 [Seq, Batch, inputVectorSize, 1, 1], got shape {tuple(x.shape)}")
    s, b = x.shape[0], x.shape[1]
    if x.shape[2] * x.shape[3] * x.shape[4] != input_size:
        raise ctx.fail(f"input shape {tuple(x.shape)} does not hold inputVectorSize {input_size} values per step")
    return x.reshape(s, b, input_size)


def _state(ctx, inputs, pos: int, batch: int, hidden: int, what: str):
    """Optional state input ``pos`` as ``(B, H)``: zeros when absent; one vector is shared by the
    batch. A state of more vectors than the batch gives its first ``B``: Core ML runs such a
    network (coremltools' torch converter sizes the zero state of a packed sequence by its first
    length, not by the batch), as it does the ML Program ``lstm`` (``mlc.frontends.mil.ops.recurrent``)."""
    if pos >= len(inputs):
        return jnp.zeros((batch, hidden), jnp.float32)
    v = f32(inputs[pos])
    if v.size == batch * hidden:
        return v.reshape(batch, hidden)
    if v.size == hidden:
        return jnp.broadcast_to(v.reshape(1, hidden), (batch, hidden))
    if v.size % hidden == 0 and v.size // hidden > batch:
        return v.reshape(-1, hidden)[:batch]
    raise ctx.fail(f"{what} has shape {tuple(v.shape)}, expected Batch x outputVectorSize = {batch} x {hidden} values")


def _gates(ctx, matrices: dict, prefix: str, has_bias: bool, hidden: int):
    """Stacked ``W`` (G, H, I), ``R`` (G, H, H) and ``b`` (G, H) of the named gates, in dict order."""
    w = jnp.stack([f32(ctx.weight(prefix + wx)) for wx, _, _ in matrices.values()])
    r = jnp.stack([f32(ctx.weight(prefix + wh)) for _, wh, _ in matrices.values()])
    if has_bias:
        b = jnp.stack([f32(ctx.weight(prefix + bb)).reshape(hidden) for _, _, bb in matrices.values()])
    else:
        b = jnp.zeros((len(matrices), hidden), jnp.float32)
    return w, r, b


def _project(x, w, b):
    """``W x_t + b`` for every step at once: (S, B, G, H)."""
    return jnp.einsum("sbi,ghi->sbgh", x, w, precision=_HIGHEST) + b


def _recur(layout: StateLayout, h, r):
    """``R h`` per gate: (B, G, H), or (G, H, B) with the state transposed (``StateLayout``:
    the stacked weights are the product's left operand)."""
    if layout.transposed:
        return jnp.einsum("ghj,jb->ghb", r, h, precision=_HIGHEST)
    return jnp.einsum("bj,ghj->bgh", h, r, precision=_HIGHEST)


def _gate(layout: StateLayout, a, k: int):
    """Gate ``k`` of per-gate values ``a`` ((B, G, H), or (G, H, B) transposed)."""
    return a[k] if layout.transposed else a[:, k]


def _clip(v):
    return jnp.clip(v, -_CLIP, _CLIP)


def _rank5(y):
    """(S, B, H) -> (S, B, H, 1, 1)."""
    return y[..., None, None]


def _outputs(ctx, ys, sequence_output: bool, *states):
    y = ys if sequence_output else ys[-1:]
    results = (_rank5(y),) + tuple(_rank5(s[None]) for s in states)
    return results[: max(1, len(ctx.layer.output))]


# -- simpleRecurrent ----------------------------------------------------------------------------
@layer("simpleRecurrent", weights=_simple_weights)
def simple_recurrent(ctx, p, x, *states):
    """``y_t = f(clip(W x_t + R y_{t-1} + b))`` (SimpleRecurrentLayerParams). Inputs ``x[, h0]``; outputs ``y[, h]``."""
    hidden = int(p.outputVectorSize)
    f = _activation(ctx, p.activation, "the")
    x = _sequence(ctx, x, int(p.inputVectorSize))
    h0 = _state(ctx, states, 0, x.shape[1], hidden, "the initial hidden state")
    w = f32(ctx.weight("weightMatrix"))[None]
    r = f32(ctx.weight("recursionMatrix"))[None]
    b = f32(ctx.weight("biasVector")).reshape(1, hidden) if p.hasBiasVector else jnp.zeros((1, hidden), jnp.float32)
    layout = StateLayout(x, min_steps=1)

    def step(h, xt):
        h = f(_clip(_gate(layout, xt, 0) + _gate(layout, _recur(layout, h, r), 0)))
        return h, h

    h, ys = layout.scan(step, h0, _project(x, w, b), p.reverseInput)
    return _outputs(ctx, ys, p.sequenceOutput, h)


# -- gru ----------------------------------------------------------------------------------------
@layer("gru", weights=_gru_weights)
def gru(ctx, p, x, *states):
    """GRULayerParams: ``z, r = f(.)``, ``o = g(clip(W_o x + R_o (r * y_{t-1}) + b_o))``,
    ``y_t = (1 - z) o + z y_{t-1}``. Inputs ``x[, h0]``; outputs ``y[, h]``."""
    hidden = int(p.outputVectorSize)
    f, g = _activations(ctx, p.activations, ("f", "g"))
    x = _sequence(ctx, x, int(p.inputVectorSize))
    h0 = _state(ctx, states, 0, x.shape[1], hidden, "the initial hidden state")
    w, r, b = _gates(ctx, _GRU_MATRICES, "", p.hasBiasVectors, hidden)  # gates z, r, o
    layout = StateLayout(x, min_steps=1)

    def step(h, xt):
        hr = _recur(layout, h, r[:2])
        z = f(_clip(_gate(layout, xt, 0) + _gate(layout, hr, 0)))
        rg = f(_clip(_gate(layout, xt, 1) + _gate(layout, hr, 1)))
        o = g(_clip(_gate(layout, xt, 2) + _gate(layout, _recur(layout, h * rg, r[2:]), 0)))
        h = (1 - z) * o + z * h
        return h, h

    h, ys = layout.scan(step, h0, _project(x, w, b), p.reverseInput)
    return _outputs(ctx, ys, p.sequenceOutput, h)


# -- LSTM ---------------------------------------------------------------------------------------
def _lstm_direction(ctx, lp, prefix: str, acts, hidden: int, layout: StateLayout):
    """One LSTM's step function and input projection weights (LSTMParams + LSTMWeightParams),
    the step holding its state in ``layout``."""
    f, g, h_act = acts
    w, r, b = _gates(ctx, _LSTM_MATRICES, prefix, lp.hasBiasVectors, hidden)  # gates i, f, z, o
    if lp.forgetBias:
        b = b.at[1].add(1.0)
    if lp.hasPeepholeVectors:
        p_i, p_f, p_o = (layout.vector(f32(ctx.weight(prefix + n)).reshape(hidden)) for n in _LSTM_PEEPHOLES.values())
    else:
        p_i = p_f = p_o = layout.vector(jnp.zeros((hidden,), jnp.float32))
    threshold = float(lp.cellClipThreshold) or _CLIP
    coupled = bool(lp.coupledInputAndForgetGate)

    def step(carry, xt):
        h, c = carry
        a = xt + _recur(layout, h, r)
        i = f(_clip(_gate(layout, a, 0) + p_i * c))
        z = g(_clip(_gate(layout, a, 2)))
        if coupled:
            c = c * (1 - i) + i * z
        else:
            c = c * f(_clip(_gate(layout, a, 1) + p_f * c)) + i * z
        c = jnp.clip(c, -threshold, threshold)
        o = f(_clip(_gate(layout, a, 3) + p_o * c))
        h = h_act(c) * o
        return (h, c), h

    return step, w, b


_LSTM_ACTIVATIONS = ("f", "g", "h")


@layer("uniDirectionalLSTM", weights=_unilstm_weights)
def uni_directional_lstm(ctx, p, x, *states):
    """UniDirectionalLSTMLayerParams (equations in LSTMParams). Inputs ``x[, h0[, c0]]``; outputs ``y[, h[, c]]``."""
    hidden = int(p.outputVectorSize)
    acts = _activations(ctx, p.activations, _LSTM_ACTIVATIONS)
    x = _sequence(ctx, x, int(p.inputVectorSize))
    batch = x.shape[1]
    h0 = _state(ctx, states, 0, batch, hidden, "the initial hidden state")
    c0 = _state(ctx, states, 1, batch, hidden, "the initial cell state")
    layout = StateLayout(x, min_steps=1)
    step, w, b = _lstm_direction(ctx, p.params, "weightParams.", acts, hidden, layout)
    (h, c), ys = layout.scan(step, (h0, c0), _project(x, w, b), p.reverseInput)
    return _outputs(ctx, ys, p.params.sequenceOutput, h, c)


@layer("biDirectionalLSTM", weights=_bilstm_weights)
def bi_directional_lstm(ctx, p, x, *states):
    """BiDirectionalLSTMLayerParams: a forward LSTM (``weightParams[0]``) and one over the reversed
    sequence (``weightParams[1]``); the output step t is ``[yf_t, yb_t]`` where ``yb_t`` has read
    x_T..x_t. Inputs ``x[, h0, c0, h0_rev, c0_rev]``; outputs ``y[, h, c, h_rev, c_rev]``."""
    if len(p.weightParams) != 2:
        raise ctx.fail(f"weightParams must hold 2 LSTMWeightParams (forward, backward), it holds {len(p.weightParams)}")
    hidden = int(p.outputVectorSize)
    acts_f = _activations(ctx, p.activationsForwardLSTM, _LSTM_ACTIVATIONS)
    backward = p.activationsBackwardLSTM if len(p.activationsBackwardLSTM) else p.activationsForwardLSTM
    acts_b = _activations(ctx, backward, _LSTM_ACTIVATIONS)
    x = _sequence(ctx, x, int(p.inputVectorSize))
    batch = x.shape[1]
    init = [_state(ctx, states, k, batch, hidden, what) for k, what in enumerate(
        ("the initial hidden state", "the initial cell state", "the initial reverse hidden state", "the initial reverse cell state")
    )]
    layout = StateLayout(x, min_steps=1)
    step_f, w_f, b_f = _lstm_direction(ctx, p.params, "weightParams[0].", acts_f, hidden, layout)
    step_b, w_b, b_b = _lstm_direction(ctx, p.params, "weightParams[1].", acts_b, hidden, layout)
    (h_f, c_f), ys_f = layout.scan(step_f, (init[0], init[1]), _project(x, w_f, b_f), False)
    (h_b, c_b), ys_b = layout.scan(step_b, (init[2], init[3]), _project(x, w_b, b_b), True)
    if p.params.sequenceOutput:
        ys = jnp.concatenate([ys_f, jnp.flip(ys_b, 0)], axis=-1)
    else:
        ys = jnp.concatenate([h_f, h_b], axis=-1)[None]
    return _outputs(ctx, ys, True, h_f, c_f, h_b, c_b)
