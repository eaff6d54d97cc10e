"""Elementwise binary ops (iOS15 elementwise_binary.py), numpy broadcasting."""

import jax.numpy as jnp

from mlc.mil.registry import op


def _same(fn):
    """Binary op whose output dtype is the inputs' (promoted) dtype."""

    def lowering(x, y):
        return fn(x, y)

    lowering.__name__ = fn.__name__
    return lowering


def _floor_div(x, y):
    return jnp.floor_divide(x, y)


def _real_div(x, y):
    x, y = jnp.asarray(x), jnp.asarray(y)
    out = jnp.true_divide(x, y)
    if jnp.issubdtype(x.dtype, jnp.integer) and jnp.issubdtype(y.dtype, jnp.integer):
        return out.astype(jnp.result_type(x, y))
    return out


def _mod(x, y):
    return jnp.mod(x, y)


def _pow(x, y):
    return jnp.power(x, y)


_BINARY = {
    "add": jnp.add,
    "sub": jnp.subtract,
    "mul": jnp.multiply,
    "real_div": _real_div,
    "floor_div": _floor_div,
    "mod": _mod,
    "pow": _pow,
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
    op(_name)(_same(_fn))
