"""Small helpers shared by op families."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mlc.runtime import dtypes


def static_ints(v) -> tuple[int, ...]:
    """A static int tensor or sequence as a tuple of Python ints."""
    return tuple(int(x) for x in np.asarray(v).reshape(-1))


def static_int(v) -> int:
    return int(np.asarray(v).reshape(()))


def static_float(v) -> float:
    """A static float attribute as a Python float (weakly typed: it keeps x's dtype in arithmetic)."""
    return float(np.asarray(v).reshape(()))


def static_bool(v) -> bool:
    return bool(np.asarray(v).reshape(()))


def static_str(v) -> str:
    a = np.asarray(v)
    return str(a.reshape(()).item() if a.dtype == object else a.reshape(()))


def norm_axes(axes, rank: int) -> tuple[int, ...]:
    return tuple(int(a) % rank if rank else 0 for a in np.asarray(axes).reshape(-1))


def mil_dtype(name) -> np.dtype:
    """A MIL dtype name given to an op ("fp16", "int32", ...) as the dtype computed inside."""
    return dtypes.compute_dtype(static_str(name))


def like(v, x):
    """A scalar attribute as an array of ``x``'s dtype."""
    return jnp.asarray(v, dtype=jnp.result_type(x))


def per_channel(v, x):
    """A per-channel parameter of shape (C,) (or a scalar) broadcast along axis 1 of ``x`` (N, C, ...), in x's dtype."""
    v = like(v, x)
    if v.ndim == 0:
        return v
    return v.reshape((1, -1) + (1,) * (jnp.ndim(x) - 2))
