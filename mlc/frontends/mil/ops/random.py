"""Random ops (iOS15 random.py; unchanged in later opsets), with ``jax.random``.

A ``seed`` >= 0 keys the op with ``jax.random.key(seed)``: every call gives the same values
(and two ops with the same seed and shape the same ones). The default seed -1 asks for fresh
values on every call, also under jit, grad and vmap (``mlc.kernels.sampling``, which draws for
the NeuralNetwork random layers too).
The ops register with ``fold=False``: the lowering never evaluates them at trace time, even
when every input is a constant, so a compiled function draws anew on every call.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mlc.kernels.sampling import sample
from mlc.runtime import dtypes
from mlc.frontends.mil.ops._helpers import static_int, static_ints, static_str
from mlc.frontends.mil.registry import op


def _float_dtype(*values) -> np.dtype:
    """The dtype of the float parameters (prob, mean/stddev, low/high): the output's."""
    return dtypes.compute_array_dtype(jnp.result_type(*values))


@op("random_bernoulli", static=("shape", "seed"), fold=False)
def random_bernoulli(shape, prob=0.5, seed=-1):
    """1 with probability ``prob``, else 0, in prob's dtype."""
    u = sample(jax.random.uniform, seed, static_ints(shape), jnp.float32)
    return (u < jnp.asarray(prob, jnp.float32)).astype(_float_dtype(prob))


@op("random_normal", static=("shape", "seed"), fold=False)
def random_normal(shape, mean=0.0, stddev=1.0, seed=-1):
    dtype = _float_dtype(mean, stddev)
    z = sample(jax.random.normal, seed, static_ints(shape), dtype)
    return jnp.asarray(mean, dtype) + jnp.asarray(stddev, dtype) * z


@op("random_uniform", static=("shape", "seed"), fold=False)
def random_uniform(shape, low=0.0, high=1.0, seed=-1):
    """Uniform on [low, high); ``low`` everywhere when high == low."""
    dtype = _float_dtype(low, high)
    low, high = jnp.asarray(low, dtype), jnp.asarray(high, dtype)
    return sample(jax.random.uniform, seed, static_ints(shape), dtype, minval=low, maxval=high)


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
    gumbel = sample(jax.random.gumbel, seed, x.shape[:-1] + (size, x.shape[-1]), jnp.float32)
    return jnp.argmax(logits[..., None, :] + gumbel, axis=-1).astype(x.dtype)
