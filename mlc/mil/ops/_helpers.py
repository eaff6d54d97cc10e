"""Small helpers shared by op families."""

from __future__ import annotations

import numpy as np

from mlc.mil import dtypes


def static_ints(v) -> tuple[int, ...]:
    """A static int tensor or sequence as a tuple of Python ints."""
    return tuple(int(x) for x in np.asarray(v).reshape(-1))


def static_int(v) -> int:
    return int(np.asarray(v).reshape(()))


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
