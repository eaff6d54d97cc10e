"""Reductions (iOS15/iOS17 reduction.py): ``axes`` None reduces everything."""

import jax.numpy as jnp

from mlc.mil.ops._helpers import norm_axes, static_bool, static_int
from mlc.mil.registry import op

_STATIC = ("axes", "keep_dims")


def _axes(x, axes):
    return None if axes is None else norm_axes(axes, jnp.ndim(x))


def _reduction(name, fn):
    @op(name, static=_STATIC)
    def lowering(x, axes=None, keep_dims=False):
        return fn(x, _axes(x, axes), static_bool(keep_dims))

    lowering.__name__ = name
    return lowering


def _log_sum_exp(x, axes, keep):
    m = jnp.max(x, axis=axes, keepdims=True)
    out = jnp.log(jnp.sum(jnp.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else jnp.squeeze(out, axis=axes if axes is not None else tuple(range(jnp.ndim(x))))


_REDUCTIONS = {
    "reduce_sum": lambda x, a, k: jnp.sum(x, axis=a, keepdims=k),
    "reduce_mean": lambda x, a, k: jnp.mean(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: jnp.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: jnp.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: jnp.prod(x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: jnp.sum(jnp.abs(x), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: jnp.sqrt(jnp.sum(jnp.square(x), axis=a, keepdims=k)),
    "reduce_sum_square": lambda x, a, k: jnp.sum(jnp.square(x), axis=a, keepdims=k),
    "reduce_log_sum": lambda x, a, k: jnp.log(jnp.sum(x, axis=a, keepdims=k)),
    "reduce_log_sum_exp": _log_sum_exp,
}

for _name, _fn in _REDUCTIONS.items():
    _reduction(_name, _fn)


def _arg(fn):
    def lowering(x, axis=-1, keep_dims=False):
        out = fn(x, axis=static_int(axis), keepdims=static_bool(keep_dims))
        return out.astype(jnp.int32)

    return lowering


op("reduce_argmax", static=("axis", "keep_dims"))(_arg(jnp.argmax))
op("reduce_argmin", static=("axis", "keep_dims"))(_arg(jnp.argmin))
