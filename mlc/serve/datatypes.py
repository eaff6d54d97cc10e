"""The Open Inference Protocol's (KServe v2) tensor datatypes and their numpy dtypes."""

from __future__ import annotations

import numpy as np

from mlc.serve.errors import BadRequest

NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
BYTES = "BYTES"
DATATYPES = (*NUMPY, BYTES)
_BY_DTYPE = {dtype: name for name, dtype in NUMPY.items()}


def numpy_dtype(datatype: str, where: str) -> np.dtype:
    """The numpy dtype of a numeric datatype; ``BadRequest`` naming ``where`` for others."""
    try:
        return NUMPY[datatype]
    except KeyError:
        known = ", ".join(DATATYPES)
        raise BadRequest(f"{where}: unknown datatype {datatype!r} (the protocol's are {known})") from None


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name for a numpy dtype (``BYTES`` for strings and objects)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return BYTES
    try:
        return _BY_DTYPE[dtype]
    except KeyError:
        raise BadRequest(f"no protocol datatype for numpy {dtype}") from None
