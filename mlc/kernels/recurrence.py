"""The layout a recurrent layer's scan carries its state in (MIL ``lstm``, ``gru``, ``rnn``;
NeuralNetwork ``uniDirectionalLSTM``, ``biDirectionalLSTM``, ``gru``, ``simpleRecurrent``).

Both front ends hold a recurrent state as (batch, hidden) and compute each step's recurrent
product as ``h @ W_hh.T``. XLA:CPU's matrix products pack their right operand before
multiplying, and in a scan that operand, the weights, is packed again at every step. Over
several steps the scan carries the state transposed instead, (hidden, batch), the input
projection as (..., batch), and computes ``W_hh @ h``: the weights are the left operand, read
as they lie. Measured, alternated in one process (``bench/experiments.md``, "Recurrent layers:
the state transposed"): the LSTM of ``scripts/bench.py`` (512 units, 64 steps, two layers)
batch 32 172 -> 141 ms and batch 1 10.4 -> 9.8 ms; a 512-unit GRU at batch 32 -9 to -21%, an
RNN -23%.

In the MIL ops a single step (a streaming model's call, the VAD step of ``scripts/bench.py``)
keeps ``h @ W_hh.T``: its transposes cost more than one product gains (180 -> 202 us at batch
32), and so does a GRU computing one row (+6%): ``min_steps`` and ``min_rows``. The
NeuralNetwork layers contract per-gate stacked weights (G, H, H) with an einsum, which XLA
transposed at every step: transposed they gain everywhere measured, one step and one row
included (a 512-unit ``uniDirectionalLSTM`` over 64 steps at batch 1 20.7 -> 3.5 ms, over one
step 1.42 -> 0.51 ms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlc.runtime import target


class StateLayout:
    """How a recurrent layer's steps hold their state, decided from its input ``x`` (steps,
    batch, ...): ``transposed`` over at least ``min_steps`` steps with at least ``min_rows``
    rows (the batch times ``predict_batch``'s vmapped batch)."""

    def __init__(self, x, *, min_steps: int = 2, min_rows: int = 1):
        rows = jnp.shape(x)[1] * target.vmapped_batch()
        self.transposed = jnp.shape(x)[0] >= min_steps and rows >= min_rows

    def product(self, h, w):
        """``h @ w.T`` in this layout, ``w`` (G, H) as recurrent weights are stored: (b, G),
        or (G, b) transposed."""
        return w @ h if self.transposed else h @ w.T

    def vector(self, v):
        """A per-unit vector (a bias, a peephole) shaped to add to a state: (H,) or (H, 1)."""
        return None if v is None else (v[..., None] if self.transposed else v)

    def scan(self, step, carry, xw, reverse: bool):
        """``lax.scan`` of ``step`` over the steps of ``xw`` (steps, batch, ...), from the last
        where ``reverse``; outputs in processing order. Transposed, ``step`` sees each carry
        leaf (H, b) and each step's input (..., b), and returns outputs (H, b); the final
        carry and the outputs come back as (b, H) and (steps, b, H)."""
        if not self.transposed:
            return jax.lax.scan(step, carry, jnp.flip(xw, 0) if reverse else xw)
        carry = jax.tree_util.tree_map(jnp.transpose, carry)
        xw = jnp.moveaxis(xw, 1, -1)
        carry, ys = jax.lax.scan(step, carry, jnp.flip(xw, 0) if reverse else xw)
        return jax.tree_util.tree_map(jnp.transpose, carry), jnp.moveaxis(ys, -1, 1)
