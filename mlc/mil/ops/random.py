"""Random ops (iOS15 random.py; unchanged in later opsets), with ``jax.random``.

A ``seed`` >= 0 keys the op with ``jax.random.key(seed)``: every call gives the same values
(and two ops with the same seed and shape the same ones). The default seed -1 asks for fresh
values on every call: the key's bits are then read from ``os.urandom`` by an ``io_callback``,
a host call that XLA runs on every execution of the compiled function (it is effectful, so it
is neither cached nor merged with another op's); it works under jit, grad and vmap. Under vmap
it is called once per batch, so the examples of a batch share the key.
The ops register with ``fold=False``: the lowering never evaluates them at trace time, even
when every input is a constant, so a compiled function draws anew on every call.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from mlc.mil import dtypes
from mlc.mil.ops._helpers import static_int, static_ints, static_str
from mlc.mil.registry import op

_KEY_DATA = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))  # the default PRNG's key bits


def _entropy() -> np.ndarray:
    return np.frombuffer(os.urandom(_KEY_DATA.size * 4), dtype=np.uint32).reshape(_KEY_DATA.shape)


def _key(seed):
    """The key of ``seed`` (>= 0), or a fresh one per call for -1."""
    seed = static_int(seed)
    if seed >= 0:
        return jax.random.key(seed)
    if seed != -1:
        raise ValueError(f"seed must be >= 0, or -1 for fresh values on every call; got {seed}")
    return jax.random.wrap_key_data(io_callback(_entropy, _KEY_DATA, ordered=False))


def _float_dtype(*values) -> np.dtype:
    """The dtype of the float parameters (prob, mean/stddev, low/high): the output's."""
    return dtypes.compute_array_dtype(jnp.result_type(*values))


def _sample(draw, seed, shape, dtype, **kwargs):
    """``draw(key, shape, dtype)``, drawn flat and reshaped: XLA compiles a high-rank threefry
    slowly (seconds at rank 4), a flat one fast."""
    shape = tuple(shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"random op: negative size in shape {shape}")
    return draw(_key(seed), (math.prod(shape),), dtype, **kwargs).reshape(shape)


@op("random_bernoulli", static=("shape", "seed"), fold=False)
def random_bernoulli(shape, prob=0.5, seed=-1):
    """1 with probability ``prob``, else 0, in prob's dtype."""
    u = _sample(jax.random.uniform, seed, static_ints(shape), jnp.float32)
    return (u < jnp.asarray(prob, jnp.float32)).astype(_float_dtype(prob))


@op("random_normal", static=("shape", "seed"), fold=False)
def random_normal(shape, mean=0.0, stddev=1.0, seed=-1):
    dtype = _float_dtype(mean, stddev)
    z = _sample(jax.random.normal, seed, static_ints(shape), dtype)
    return jnp.asarray(mean, dtype) + jnp.asarray(stddev, dtype) * z


@op("random_uniform", static=("shape", "seed"), fold=False)
def random_uniform(shape, low=0.0, high=1.0, seed=-1):
    """Uniform on [low, high); ``low`` everywhere when high == low."""
    dtype = _float_dtype(low, high)
    low, high = jnp.asarray(low, dtype), jnp.asarray(high, dtype)
    return _sample(jax.random.uniform, seed, static_ints(shape), dtype, minval=low, maxval=high)


@op("random_categorical", static=("mode", "size", "seed"), fold=False)
def random_categorical(x, mode="logits", size=1, seed=-1):
    """``size`` draws (with replacement) of a class index along x's last axis, as x's dtype;
    x holds logits, or probabilities with mode "probs". Gumbel-max: argmax(logits + Gumbel noise)."""
    mode, size = static_str(mode), static_int(size)
    if mode not in ("logits", "probs"):
        raise ValueError(f"random_categorical mode must be 'logits' or 'probs', got {mode!r}")
    x = jnp.asarray(x)
    logits = x.astype(jnp.float32)
    if mode == "probs":
        logits = jnp.log(logits)
    gumbel = _sample(jax.random.gumbel, seed, x.shape[:-1] + (size, x.shape[-1]), jnp.float32)
    return jnp.argmax(logits[..., None, :] + gumbel, axis=-1).astype(x.dtype)
