"""Random draws shared by the random ops of both front ends (MIL ``random_*``, NeuralNetwork
``random*`` and ``categoricalDistribution``), with ``jax.random``.

A ``seed`` >= 0 keys the draw with ``jax.random.key(seed)``: every call gives the same values
(and two draws with the same seed and shape the same ones). The seed -1 asks for fresh values on
every call: the key's bits are then read from ``os.urandom`` by an ``io_callback``, a host call
that XLA runs on every execution of the compiled function (it is effectful, so it is neither
cached nor merged with another draw's); it works under jit, grad and vmap. Under vmap it is
called once per batch, so the examples of a batch share the key.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.experimental import io_callback

_KEY_DATA = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))  # the default PRNG's key bits


def _entropy() -> np.ndarray:
    return np.frombuffer(os.urandom(_KEY_DATA.size * 4), dtype=np.uint32).reshape(_KEY_DATA.shape)


def random_key(seed):
    """The key of ``seed`` (a static int >= 0), or a fresh one per call for -1."""
    seed = int(np.asarray(seed).reshape(()))
    if seed >= 0:
        return jax.random.key(seed)
    if seed != -1:
        raise ValueError(f"seed must be >= 0, or -1 for fresh values on every call; got {seed}")
    return jax.random.wrap_key_data(io_callback(_entropy, _KEY_DATA, ordered=False))


def sample(draw, seed, shape, dtype, **kwargs):
    """``draw(random_key(seed), shape, dtype, **kwargs)`` (a ``jax.random`` sampler such as
    ``jax.random.normal``), drawn flat and reshaped: XLA compiles a high-rank threefry slowly
    (seconds at rank 4), a flat one fast."""
    shape = tuple(shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"random op: negative size in shape {shape}")
    return draw(random_key(seed), (math.prod(shape),), dtype, **kwargs).reshape(shape)
