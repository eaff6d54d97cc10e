"""Recurrent layers ``lstm``, ``gru``, ``rnn`` (iOS15/iOS17/iOS18 recurrent.py), each one ``lax.scan`` over time.

Layouts: ``x`` is (s, b, I), states are (b, H) ((b, 2H) for a bidirectional LSTM, forward
half first). Gate order: LSTM [input, forget, output, cell], GRU [reset, output, update].
``direction="reverse"`` reads ``x`` from its last step and emits the outputs in that processing
order (output[k] is the state after k+1 steps); a bidirectional LSTM emits its backward half
aligned with the input steps, as torch.nn.LSTM does. iOS17 adds fp16 (outputs keep x's dtype);
iOS18's GRU adds ``input_bias`` and ``reset_after`` (torch's GRU: r * (W_ho h + b_ho)).

Over several steps the scan carries its state transposed, (H, b), and each step computes
``W_hh @ h`` (``mlc.kernels.recurrence.StateLayout``: the weights as the left operand are not
repacked at every step).
"""

import jax
import jax.numpy as jnp

from mlc.frontends.mil.ops._helpers import static_bool, static_float, static_str
from mlc.frontends.mil.registry import op
from mlc.kernels.recurrence import StateLayout

# Activations name a fixed function: scaled_tanh and hard_sigmoid take the MIL defaults
# (alpha=1, beta=1 and alpha=0.2, beta=0.5), which is what Core ML computes.
_ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "scaled_tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "linear": lambda v: v,
    "hard_sigmoid": lambda v: jnp.clip(0.2 * v + 0.5, 0, 1),
    "sigmoid_hard": lambda v: jnp.clip(0.2 * v + 0.5, 0, 1),
}


def _activation(name):
    key = static_str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown recurrent activation {key!r}; supported: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[key]


def _direction(direction, allowed):
    d = static_str(direction)
    if d not in allowed:
        raise ValueError(f"direction {d!r} is not supported; expected one of {', '.join(allowed)}")
    return d


def _cast(v, x):
    return None if v is None else jnp.asarray(v, dtype=jnp.result_type(x))


def _initial_state(v, x, name):
    """``initial_h`` / ``initial_c`` as x's dtype with x's batch: (b, width).

    Core ML sizes the outputs by ``x``'s batch and runs a state with more rows than that, reading
    its first ``b`` rows: coremltools' torch converter relies on it, since its
    ``pack_padded_sequence`` lowering sizes the zero initial state by the first sequence length
    (a ``fill`` whose shape is only known at run time), not by the batch. One row is broadcast to
    every sequence; fewer rows than the batch (other than one) is refused."""
    v = _cast(v, x)
    batch = jnp.shape(x)[1]
    if jnp.ndim(v) != 2:
        raise ValueError(f"{name} must be (batch, hidden), got shape {tuple(jnp.shape(v))}")
    rows = jnp.shape(v)[0]
    if rows == batch:
        return v
    if rows > batch:
        return v[:batch]
    if rows == 1:
        return jnp.broadcast_to(v, (batch, jnp.shape(v)[1]))
    raise ValueError(f"{name} has {rows} rows, fewer than x's batch {batch}: shapes {tuple(jnp.shape(v))} "
                     f"and x {tuple(jnp.shape(x))}")


def _input_projection(x, weight_ih, *biases):
    """x @ weight_ih.T plus the biases given, for every step at once: (s, b, G*H)."""
    y = jnp.einsum("sbi,gi->sbg", x, _cast(weight_ih, x))
    for b in biases:
        if b is not None:
            y = y + _cast(b, x)
    return y


def _gates(layout: StateLayout, v, parts: int):
    """The gates of ``v`` (along G, the last axis or, transposed, the first)."""
    return jnp.split(v, parts, axis=0 if layout.transposed else -1)


def _outputs(ys, h, output_sequence):
    return ys if static_bool(output_sequence) else h[None]


@op("rnn", static=("direction", "output_sequence", "activation"))
def rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False, activation="tanh"):
    """h_t = activation(W_ih x_t + W_hh h_{t-1} + bias)."""
    reverse = _direction(direction, ("forward", "reverse")) == "reverse"
    act = _activation(activation)
    w_hh, layout = _cast(weight_hh, x), StateLayout(x)

    def step(h, xw_t):
        h = act(xw_t + layout.product(h, w_hh))
        return h, h

    h, ys = layout.scan(step, _initial_state(initial_h, x, "initial_h"), _input_projection(x, weight_ih, bias), reverse)
    return _outputs(ys, h, output_sequence), h


def _gru(x, initial_h, weight_ih, weight_hh, bias, input_bias, direction, output_sequence, recurrent_activation,
         activation, reset_after):
    reverse = _direction(direction, ("forward", "reverse")) == "reverse"
    rec, act = _activation(recurrent_activation), _activation(activation)
    layout = StateLayout(x, min_rows=2)
    r_r, r_o, r_z = jnp.split(_cast(weight_hh, x), 3)
    w_rz = jnp.concatenate([r_r, r_z])  # (2H, H)
    b_r = b_o = b_z = None
    if reset_after and bias is not None:  # bias is the hidden-side bias b_h*, inside r * (...)
        b_r, b_o, b_z = jnp.split(_cast(bias, x), 3)
        bias = None
    b_rz = layout.vector(None if b_r is None else jnp.concatenate([b_r, b_z]))
    b_o = layout.vector(b_o)

    def step(h, xw_t):
        x_r, x_o, x_z = _gates(layout, xw_t, 3)
        hh = layout.product(h, w_rz)
        h_r, h_z = _gates(layout, hh if b_rz is None else hh + b_rz, 2)
        r, z = rec(x_r + h_r), rec(x_z + h_z)
        if reset_after:
            h_o = layout.product(h, r_o)
            o = act(x_o + r * (h_o if b_o is None else h_o + b_o))
        else:
            o = act(x_o + layout.product(r * h, r_o))
        h = (1 - z) * o + z * h
        return h, h

    h0 = _initial_state(initial_h, x, "initial_h")
    h, ys = layout.scan(step, h0, _input_projection(x, weight_ih, bias, input_bias), reverse)
    return _outputs(ys, h, output_sequence), h


_GRU_STATIC = ("direction", "output_sequence", "recurrent_activation", "activation")


@op("gru", static=_GRU_STATIC)
def gru(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        recurrent_activation="sigmoid", activation="tanh"):
    """o = activation(W_io x + W_ho (r * h) + b_o), r applied before the matmul (the op's docstring writes after)."""
    return _gru(x, initial_h, weight_ih, weight_hh, bias, None, direction, output_sequence,
                recurrent_activation, activation, reset_after=False)


@op("gru", static=_GRU_STATIC + ("reset_after",), since="CoreML8")
def gru_ios18(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
              recurrent_activation="sigmoid", activation="tanh", reset_after=False, input_bias=None):
    """iOS18: ``input_bias`` adds on the input side; ``reset_after``: o = act(W_io x + b_io + r * (W_ho h + b_ho))."""
    return _gru(x, initial_h, weight_ih, weight_hh, bias, input_bias, direction, output_sequence,
                recurrent_activation, activation, reset_after=static_bool(reset_after))


def _lstm_pass(x, h0, c0, weight_ih, weight_hh, bias, peephole, acts, clip, reverse):
    """One direction: (outputs in processing order, final h, final c)."""
    rec, cell, out = acts
    w_hh, layout = _cast(weight_hh, x), StateLayout(x)  # (4H, H)
    p_i = p_f = p_o = None
    if peephole is not None:
        p_i, p_f, p_o = (layout.vector(p) for p in jnp.split(_cast(peephole, x), 3))

    def step(carry, xw_t):
        h, c = carry
        g_i, g_f, g_o, g_z = _gates(layout, xw_t + layout.product(h, w_hh), 4)
        if p_i is not None:
            g_i, g_f = g_i + p_i * c, g_f + p_f * c
        c = rec(g_f) * c + rec(g_i) * cell(g_z)
        if clip is not None:
            c = jnp.clip(c, -clip, clip)
        if p_o is not None:
            g_o = g_o + p_o * c
        h = rec(g_o) * out(c)
        return (h, c), h

    (h, c), ys = layout.scan(step, (h0, c0), _input_projection(x, weight_ih, bias), reverse)
    return ys, h, c


@op("lstm", static=("direction", "output_sequence", "recurrent_activation", "cell_activation", "activation", "clip"))
def lstm(x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None, weight_ih_back=None,
         weight_hh_back=None, bias_back=None, peephole_back=None, direction="forward", output_sequence=False,
         recurrent_activation="sigmoid", cell_activation="tanh", activation="tanh", clip=None):
    """Peepholes see the previous cell state (input, forget gates) and the new one (output gate);
    ``clip`` clips the cell state after each update, before the output gate reads it. Initial
    states with more rows than x's batch are read for their first rows (``_initial_state``)."""
    d = _direction(direction, ("forward", "reverse", "bidirectional"))
    acts = (_activation(recurrent_activation), _activation(cell_activation), _activation(activation))
    clip = None if clip is None else jnp.asarray(static_float(clip), dtype=jnp.result_type(x))
    h0, c0 = _initial_state(initial_h, x, "initial_h"), _initial_state(initial_c, x, "initial_c")
    if d != "bidirectional":
        ys, h, c = _lstm_pass(x, h0, c0, weight_ih, weight_hh, bias, peephole, acts, clip, d == "reverse")
        return _outputs(ys, h, output_sequence), h, c
    if weight_ih_back is None or weight_hh_back is None:
        raise ValueError("a bidirectional lstm needs weight_ih_back and weight_hh_back")
    hidden = jnp.shape(weight_hh)[1]
    ys_f, h_f, c_f = _lstm_pass(x, h0[:, :hidden], c0[:, :hidden], weight_ih, weight_hh, bias, peephole, acts, clip,
                                False)
    ys_b, h_b, c_b = _lstm_pass(x, h0[:, hidden:], c0[:, hidden:], weight_ih_back, weight_hh_back, bias_back,
                                peephole_back, acts, clip, True)
    h, c = jnp.concatenate([h_f, h_b], -1), jnp.concatenate([c_f, c_b], -1)
    ys = jnp.concatenate([ys_f, jnp.flip(ys_b, 0)], -1)
    return _outputs(ys, h, output_sequence), h, c
