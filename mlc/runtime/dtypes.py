"""MIL data types, their numpy/JAX counterparts, and the compute-precision policy.

JAX runs 32-bit by default, so int64/uint64/fp64 are computed as int32/uint32/fp32 inside
and restored at the model boundary. fp16 programs compute in fp32 when the precision
policy says so (the default on CPU, where a Core ML CPU backend does the same).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax.numpy as jnp
import ml_dtypes
import numpy as np

# MIL DataType enum (MIL.proto) -> MIL type name.
MIL_DTYPE_NAMES = {
    1: "bool",
    2: "str",
    10: "fp16",
    11: "fp32",
    12: "fp64",
    13: "bf16",
    21: "int8",
    22: "int16",
    23: "int32",
    24: "int64",
    25: "int4",
    31: "uint8",
    32: "uint16",
    33: "uint32",
    34: "uint64",
    35: "uint4",
    36: "uint2",
    37: "uint1",
    38: "uint6",
    39: "uint3",
    40: "fp8e4m3fn",
    41: "fp8e5m2",
}

# MIL type name -> numpy dtype that holds it exactly (sub-byte ints widen to 8 bits).
NUMPY_DTYPES = {
    "bool": np.dtype(np.bool_),
    "str": np.dtype(object),
    "fp16": np.dtype(np.float16),
    "fp32": np.dtype(np.float32),
    "fp64": np.dtype(np.float64),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "int4": np.dtype(np.int8),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint1": np.dtype(np.uint8),
    "uint2": np.dtype(np.uint8),
    "uint3": np.dtype(np.uint8),
    "uint4": np.dtype(np.uint8),
    "uint6": np.dtype(np.uint8),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "fp8e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "fp8e5m2": np.dtype(ml_dtypes.float8_e5m2),
}

# What JAX computes each type as (x64 disabled).
_COMPUTE = {"fp64": np.dtype(np.float32), "int64": np.dtype(np.int32), "uint64": np.dtype(np.uint32)}

FLOAT_NAMES = frozenset({"fp16", "fp32", "fp64", "bf16", "fp8e4m3fn", "fp8e5m2"})

_fp16_as_fp32: contextvars.ContextVar[bool] = contextvars.ContextVar("mlc_fp16_as_fp32", default=True)


@contextlib.contextmanager
def precision(fp16_as_fp32: bool):
    """Within this block, fp16 in the program is computed as fp32 (True) or honoured (False)."""
    token = _fp16_as_fp32.set(fp16_as_fp32)
    try:
        yield
    finally:
        _fp16_as_fp32.reset(token)


def fp16_computed_as_fp32() -> bool:
    return _fp16_as_fp32.get()


def compute_dtype(name: str) -> np.dtype:
    """The dtype a MIL type name is computed in, under the current precision policy."""
    if name == "fp16" and _fp16_as_fp32.get():
        return np.dtype(np.float32)
    if name in _COMPUTE:
        return _COMPUTE[name]
    try:
        return NUMPY_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown MIL data type {name!r}") from None


def compute_array_dtype(dtype) -> np.dtype:
    """Map a numpy dtype (of an input or a constant) to the dtype computed inside."""
    dtype = np.dtype(dtype)
    if dtype == np.float16 and _fp16_as_fp32.get():
        return np.dtype(np.float32)
    if dtype == np.float64:
        return np.dtype(np.float32)
    if dtype == np.int64:
        return np.dtype(np.int32)
    if dtype == np.uint64:
        return np.dtype(np.uint32)
    return dtype


def is_float(dtype) -> bool:
    return jnp.issubdtype(np.dtype(dtype), jnp.floating)
