"""Reductions (iOS15/iOS17 reduction.py): ``axes`` None reduces everything.

The result keeps ``x``'s dtype, as coremltools' value inference casts it: a mean or norm of
int32 is truncated back to int32.
"""

import jax.numpy as jnp

from mlc.frontends.mil.ops._helpers import mil_dtype, norm_axes, static_bool, static_int, static_str
from mlc.frontends.mil.registry import op


def _log_sum_exp(x, axis, keepdims):
    m = jnp.max(x, axis=axis, keepdims=True)
    out = jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else jnp.squeeze(out, axis=axis if axis is not None else tuple(range(jnp.ndim(x))))


_REDUCTIONS = {
    "reduce_sum": jnp.sum,
    "reduce_mean": jnp.mean,
    "reduce_max": jnp.max,
    "reduce_min": jnp.min,
    "reduce_prod": jnp.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: jnp.sum(jnp.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: jnp.log(jnp.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _log_sum_exp,
}


def _reduction(name, fn):
    def lowering(x, axes=None, keep_dims=False):
        axis = None if axes is None else norm_axes(axes, jnp.ndim(x))
        return fn(x, axis=axis, keepdims=static_bool(keep_dims)).astype(jnp.result_type(x))

    lowering.__name__ = name
    op(name, static=("axes", "keep_dims"))(lowering)


for _name, _fn in _REDUCTIONS.items():
    _reduction(_name, _fn)


def _arg(name, fn):
    def lowering(x, axis=-1, keep_dims=False, output_dtype="int32"):
        """Index along ``axis`` (first one on ties); iOS17 adds ``output_dtype`` (int32 or uint16)."""
        dtype = static_str(output_dtype).lower()
        if dtype not in ("int32", "uint16"):
            raise ValueError(f"output_dtype must be int32 or uint16, got {dtype!r}")
        out = fn(x, axis=static_int(axis), keepdims=static_bool(keep_dims))
        return out.astype(mil_dtype(dtype))

    lowering.__name__ = name
    op(name, static=("axis", "keep_dims", "output_dtype"))(lowering)


_arg("reduce_argmax", jnp.argmax)
_arg("reduce_argmin", jnp.argmin)
