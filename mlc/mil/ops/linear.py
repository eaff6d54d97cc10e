"""``linear``, ``matmul``, ``einsum`` (iOS15/iOS17 linear.py)."""

import jax.numpy as jnp

from mlc.mil.ops._helpers import static_bool, static_str
from mlc.mil.registry import op


@op("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight (D_out, D_in)."""
    y = jnp.matmul(x, jnp.swapaxes(weight, -1, -2))
    return y if bias is None else y + bias


@op("matmul", static=("transpose_x", "transpose_y"))
def matmul(x, y, transpose_x=False, transpose_y=False):
    """Batched matmul with numpy broadcasting; rank-1 operands as in numpy."""
    if static_bool(transpose_x) and jnp.ndim(x) > 1:
        x = jnp.swapaxes(x, -1, -2)
    if static_bool(transpose_y) and jnp.ndim(y) > 1:
        y = jnp.swapaxes(y, -1, -2)
    return jnp.matmul(x, y)


@op("einsum", static=("equation",), variadic=("values",))
def einsum(values, equation):
    return jnp.einsum(static_str(equation), *values)
