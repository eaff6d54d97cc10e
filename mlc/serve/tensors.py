"""Tensors as the Open Inference Protocol carries them, and their raw (binary) form.

A tensor is a name, a datatype, a shape and its elements in row-major order. Numeric elements
are a numpy array of the datatype's dtype; ``BYTES`` elements are a numpy object array of
``bytes``. The raw form is what the binary tensor extension (HTTP) and ``raw_input_contents`` /
``raw_output_contents`` (gRPC) carry: numeric elements little-endian back to back; each ``BYTES``
element as a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import numpy as np

from mlc.serve import datatypes
from mlc.serve.errors import BadRequest


@dataclasses.dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # of shape ``shape``; BYTES: dtype object, elements bytes
    parameters: dict = dataclasses.field(default_factory=dict)


def checked_shape(shape: Any, where: str) -> tuple[int, ...]:
    """A request's shape: a list of non-negative integers."""
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"{where}: 'shape' must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"{where}: shape {list(shape)} has a negative dimension")
    return tuple(shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes, where: str) -> Tensor:
    """A tensor from its raw bytes; the byte count must be exactly what the shape asks."""
    count = math.prod(shape)
    if datatype == datatypes.BYTES:
        data = _unpack_bytes(raw, count, where)
    else:
        dtype = datatypes.numpy_dtype(datatype, where).newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(
                f"{where}: {datatype} tensor of shape {list(shape)} needs {count * dtype.itemsize} bytes, got {len(raw)}"
            )
        data = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    return Tensor(name, datatype, shape, data.reshape(shape))


def _unpack_bytes(raw: bytes, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: BYTES tensor is truncated: element {i} of {count} has no length prefix")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise BadRequest(f"{where}: BYTES tensor is truncated: element {i} declares {length} bytes, {len(raw) - pos} remain")
        out[i] = bytes(raw[pos : pos + length])
        pos += length
    if pos != len(raw):
        raise BadRequest(f"{where}: BYTES tensor has {len(raw) - pos} bytes after its {count} elements")
    return out


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's elements in the raw form."""
    if tensor.datatype == datatypes.BYTES:
        parts = []
        for element in tensor.data.reshape(-1):
            b = as_bytes(element)
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    dtype = datatypes.NUMPY[tensor.datatype].newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def as_bytes(element: Any) -> bytes:
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return element.encode("utf-8")
    return str(element).encode("utf-8")


def from_values(name: str, datatype: str, shape: tuple[int, ...], values: Any, where: str) -> Tensor:
    """A tensor from JSON-like element values (flat row-major, or nested), checked against the
    shape and the datatype."""
    count = math.prod(shape)
    if datatype == datatypes.BYTES:
        flat = _flatten(values)
        if not all(isinstance(v, (str, bytes)) for v in flat):
            raise BadRequest(f"{where}: BYTES elements must be strings")
        data = np.empty(len(flat), dtype=object)
        data[:] = [v if isinstance(v, bytes) else v.encode("utf-8") for v in flat]
    else:
        dtype = datatypes.numpy_dtype(datatype, where)
        flat = _flatten(values)
        if not all(isinstance(v, (int, float, bool)) for v in flat):
            bad = next(v for v in flat if not isinstance(v, (int, float, bool)))
            raise BadRequest(f"{where}: {datatype} elements must be numbers, got {bad!r}")
        try:
            data = np.asarray(flat, dtype=np.float64 if dtype.kind == "f" else None)
            data = _cast_exact(data, dtype, datatype, where)
        except (OverflowError, ValueError, TypeError) as e:
            raise BadRequest(f"{where}: elements are not {datatype}: {e}") from None
    if data.size != count:
        raise BadRequest(f"{where}: shape {list(shape)} holds {count} elements, 'data' has {data.size}")
    return Tensor(name, datatype, shape, data.reshape(shape))


def _cast_exact(data: np.ndarray, dtype: np.dtype, datatype: str, where: str) -> np.ndarray:
    """``data`` as ``dtype``; integers and booleans must be whole and in range (a JSON 1.5 is no INT32)."""
    if dtype.kind == "f":
        return data.astype(dtype)
    if dtype.kind == "b":
        if data.dtype.kind != "b":
            raise BadRequest(f"{where}: BOOL elements must be true or false")
        return data
    if data.dtype.kind not in "iub":
        raise BadRequest(f"{where}: {datatype} elements must be integers")
    info = np.iinfo(dtype)
    if data.size and (data.min() < info.min or data.max() > info.max):
        raise BadRequest(f"{where}: an element is out of {datatype}'s range [{info.min}, {info.max}]")
    return data.astype(dtype)


def _flatten(values: Any) -> list:
    if not isinstance(values, list):
        return [values]
    out: list = []
    stack = [iter(values)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def json_values(tensor: Tensor) -> list:
    """The tensor's elements as a flat row-major JSON list (BYTES as UTF-8 strings)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == datatypes.BYTES:
        return [as_bytes(v).decode("utf-8", errors="replace") for v in flat]
    if tensor.datatype == "FP16":
        flat = flat.astype(np.float32)
    return flat.tolist()
