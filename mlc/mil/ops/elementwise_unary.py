"""Elementwise unary ops and ``cast`` (iOS15/iOS17 elementwise_unary.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from mlc.mil.ops._helpers import mil_dtype
from mlc.mil.registry import op

_UNARY = {
    "abs": jnp.abs,
    "acos": jnp.arccos,
    "asin": jnp.arcsin,
    "atan": jnp.arctan,
    "atanh": jnp.arctanh,
    "ceil": jnp.ceil,
    "cos": jnp.cos,
    "cosh": jnp.cosh,
    "erf": jax.scipy.special.erf,
    "exp": jnp.exp,
    "exp2": jnp.exp2,
    "floor": jnp.floor,
    "logical_not": jnp.logical_not,
    "round": jnp.round,
    "sign": jnp.sign,
    "sin": jnp.sin,
    "sinh": jnp.sinh,
    "sqrt": jnp.sqrt,
    "square": jnp.square,
    "tan": jnp.tan,
    "tanh": jnp.tanh,
}


def _unary(fn):
    def lowering(x):
        return fn(x)

    lowering.__name__ = getattr(fn, "__name__", "unary")
    return lowering


for _name, _fn in _UNARY.items():
    op(_name)(_unary(_fn))


@op("clip", static=("alpha", "beta"))
def clip(x, alpha, beta):
    """min(max(x, alpha), beta)."""
    return jnp.minimum(jnp.maximum(x, alpha), beta)


@op("threshold", static=("alpha",))
def threshold(x, alpha):
    """max(x, alpha)."""
    return jnp.maximum(x, alpha)


@op("inverse", static=("epsilon",))
def inverse(x, epsilon=1e-4):
    """1 / (x + epsilon)."""
    return 1.0 / (x + jnp.asarray(epsilon, dtype=jnp.result_type(x)))


@op("log", static=("epsilon",))
def log(x, epsilon=1e-45):
    """log(x + epsilon)."""
    return jnp.log(x + jnp.asarray(epsilon, dtype=jnp.result_type(x)))


@op("rsqrt", static=("epsilon",))
def rsqrt(x, epsilon=1e-12):
    """1 / sqrt(x + epsilon)."""
    return jax.lax.rsqrt(x + jnp.asarray(epsilon, dtype=jnp.result_type(x)))


@op("cast", static=("dtype",))
def cast(x, dtype):
    """Cast to ``dtype`` (a MIL name: fp16, fp32, int32, bool, ...); fp16 follows the precision policy."""
    target = mil_dtype(dtype)
    x = jnp.asarray(x) if not isinstance(x, np.ndarray) else x
    if jnp.issubdtype(target, jnp.integer) and jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.trunc(x)  # Core ML truncates toward zero, like C
    return jnp.asarray(x).astype(target)
