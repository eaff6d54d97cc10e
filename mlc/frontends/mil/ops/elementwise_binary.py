"""Elementwise binary ops (iOS15 elementwise_binary.py), numpy broadcasting.

Integer semantics follow coremltools' value inference: ``floor_div`` rounds toward -inf,
``mod`` takes the divisor's sign (Python's ``%``), and ``real_div`` on integers is the true
quotient cast back to int32, i.e. truncated toward zero.
"""

import jax
import jax.numpy as jnp

from mlc.frontends.mil.registry import op


def _is_int(v) -> bool:
    return jnp.issubdtype(jnp.result_type(v), jnp.integer)


def _binary(name, fn):
    def lowering(x, y):
        return fn(x, y)

    lowering.__name__ = name
    op(name)(lowering)


@op("real_div")
def real_div(x, y):
    """x / y; for int32 operands the quotient truncated toward zero (C division)."""
    if _is_int(x) and _is_int(y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        dtype = jnp.result_type(x, y)
        x, y = jnp.broadcast_arrays(x.astype(dtype), y.astype(dtype))
        return jax.lax.div(x, y)
    return jnp.true_divide(x, y)


_BINARY = {
    "add": jnp.add,
    "sub": jnp.subtract,
    "mul": jnp.multiply,
    "floor_div": jnp.floor_divide,
    "mod": jnp.mod,
    "pow": jnp.power,
    "maximum": jnp.maximum,
    "minimum": jnp.minimum,
    "equal": jnp.equal,
    "not_equal": jnp.not_equal,
    "greater": jnp.greater,
    "greater_equal": jnp.greater_equal,
    "less": jnp.less,
    "less_equal": jnp.less_equal,
    "logical_and": jnp.logical_and,
    "logical_or": jnp.logical_or,
    "logical_xor": jnp.logical_xor,
}

for _name, _fn in _BINARY.items():
    _binary(_name, _fn)
