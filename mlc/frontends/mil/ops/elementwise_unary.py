"""Elementwise unary ops and ``cast`` (iOS15/iOS17 elementwise_unary.py).

iOS17 lets ``epsilon``/``alpha``/``beta`` have another float dtype than ``x``: they are cast
to ``x``'s dtype so the output keeps it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mlc.frontends.mil.ops._helpers import like, mil_dtype
from mlc.frontends.mil.registry import op


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
    "floor": jnp.floor,
    "logical_not": jnp.logical_not,
    "round": jnp.round,  # half to even, like numpy: 0.5 -> 0
    "sign": jnp.sign,
    "sin": jnp.sin,
    "sinh": jnp.sinh,
    "sqrt": jnp.sqrt,
    "square": jnp.square,
    "tan": jnp.tan,
    "tanh": jnp.tanh,
}


def _unary(name, fn):
    def lowering(x):
        return fn(x)

    lowering.__name__ = name
    op(name)(lowering)


for _name, _fn in _UNARY.items():
    _unary(_name, _fn)


@op("exp2")
def exp2(x):
    """2 ** x; on int32 the result is truncated back to int32."""
    dtype = jnp.result_type(x)
    y = jnp.exp2(x)
    return y.astype(dtype) if jnp.issubdtype(dtype, jnp.integer) else y


@op("clip", static=("alpha", "beta"))
def clip(x, alpha, beta):
    """min(max(x, alpha), beta)."""
    return jnp.minimum(jnp.maximum(x, like(alpha, x)), like(beta, x))


@op("threshold", static=("alpha",))
def threshold(x, alpha):
    """max(x, alpha)."""
    return jnp.maximum(x, like(alpha, x))


@op("inverse", static=("epsilon",))
def inverse(x, epsilon=1e-4):
    """1 / (x + epsilon)."""
    return 1 / (x + like(epsilon, x))


@op("log", static=("epsilon",))
def log(x, epsilon=1e-45):
    """log(x + epsilon). XLA flushes a subnormal epsilon (the fp32 default) to zero, so where
    x + epsilon came out 0 the result is log(epsilon) (about -103.3), as value inference gives."""
    y = x + like(epsilon, x)
    eps = np.asarray(epsilon, dtype=jnp.result_type(x))
    if not 0 < eps < np.finfo(eps.dtype).tiny:
        return jnp.log(y)
    return jnp.where(y == 0, like(np.log(eps.astype(np.float64)), x), jnp.log(y))


@op("rsqrt", static=("epsilon",))
def rsqrt(x, epsilon=1e-12):
    """1 / sqrt(x + epsilon)."""
    return jax.lax.rsqrt(x + like(epsilon, x))


@op("cast", static=("dtype",))
def cast(x, dtype):
    """Cast to ``dtype`` (fp16, fp32, int8/16/32, uint8/16, bool); float -> int truncates toward
    zero, int -> narrower int wraps; fp16 follows the precision policy."""
    target = mil_dtype(dtype)
    x = jnp.asarray(x)
    if jnp.issubdtype(target, jnp.integer) and jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.trunc(x)
    return x.astype(target)
