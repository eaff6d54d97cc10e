"""Helpers shared by layer families."""

from __future__ import annotations

import jax.numpy as jnp


def per_channel(v, x, axis: int = -3):
    """A per-channel parameter (length C or 1) broadcast along ``axis`` (default: channel, -3) of ``x``."""
    v = jnp.asarray(v, jnp.float32).reshape(-1)
    if v.shape[0] == 1:
        return v[0]
    rank = jnp.ndim(x)
    axis = axis % rank
    return v.reshape((-1,) + (1,) * (rank - axis - 1))


def f32(x):
    """A layer input as float32: NeuralNetwork tensors are float."""
    return jnp.asarray(x, jnp.float32)
