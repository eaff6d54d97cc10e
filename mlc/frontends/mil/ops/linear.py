"""``linear``, ``matmul``, ``einsum`` (iOS15/iOS17 linear.py)."""

import jax.numpy as jnp
import numpy as np

from mlc.frontends.mil.ops._helpers import static_bool, static_str
from mlc.frontends.mil.registry import op


@op("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight (D_out, D_in); the output keeps x's dtype (iOS17 weights may differ)."""
    dtype = jnp.result_type(x)
    y = jnp.matmul(x, jnp.swapaxes(weight, -1, -2))
    if bias is not None:
        y = y + bias
    return y.astype(dtype)


@op("matmul", static=("transpose_x", "transpose_y"))
def matmul(x, y, transpose_x=False, transpose_y=False):
    """Batched matmul with numpy broadcasting and rank-1 operands as in numpy (transpose flags
    ignore them). When exactly one operand is a compile-time constant of another dtype
    (iOS17), the output takes the other operand's dtype."""
    x_const, y_const = isinstance(x, (np.ndarray, np.generic)), isinstance(y, (np.ndarray, np.generic))
    if x_const != y_const:
        dtype = jnp.result_type(y if x_const else x)
    else:
        dtype = jnp.result_type(x, y)
    if static_bool(transpose_x) and jnp.ndim(x) > 1:
        x = jnp.swapaxes(x, -1, -2)
    if static_bool(transpose_y) and jnp.ndim(y) > 1:
        y = jnp.swapaxes(y, -1, -2)
    return jnp.matmul(x, y).astype(dtype)


@op("einsum", static=("equation",), variadic=("values",))
def einsum(values, equation):
    """Einsum of two operands; size-1 dimensions broadcast (coremltools supports
    "nchw,nwhu->nchu" and "chw,whr->chr" and equivalent spellings)."""
    return jnp.einsum(static_str(equation), *values)
