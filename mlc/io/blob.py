"""The MIL weight blob (``weights/weight.bin``): read with numpy memmap, written by ``BlobWriter``.

Layout (coremltools ``mlmodel/src/MILBlob/Blob/StorageFormat.hpp``), little-endian:

* ``storage_header`` (64 bytes): ``uint32 count``, ``uint32 version`` (must be 2), reserved.
* per blob, 64-byte aligned, a ``blob_metadata`` (64 bytes): ``uint32 sentinel`` (0xDEADBEEF),
  ``uint32 mil_dtype``, ``uint64 sizeInBytes``, ``uint64 offset`` (of the data),
  ``uint64 padding_size_in_bits`` (unused bits at the end of sub-byte data), reserved;
  then the raw data.

A const in a program names the metadata's offset. Sub-byte types (int4, uint1..uint6) are
packed LSB first: element ``i`` occupies bits ``[i*n, (i+1)*n)`` of the little-endian bit stream.
"""

from __future__ import annotations

import bisect
import math
import os

import ml_dtypes
import numpy as np

from mlc._errors import MLCIOError, MLCParametersError

HEADER_SIZE = 64
METADATA_SIZE = 64
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
STORAGE_VERSION = 2

_HEADER = np.dtype([("count", "<u4"), ("version", "<u4"), ("reserved", "<u8", 7)])
_METADATA = np.dtype(
    [
        ("sentinel", "<u4"),
        ("mil_dtype", "<u4"),
        ("size", "<u8"),
        ("offset", "<u8"),
        ("padding_bits", "<u8"),
        ("reserved", "<u8", 4),
    ]
)

# BlobDataType codes (MILBlob/Blob/BlobDataType.hpp) -> (name, numpy dtype or bit width).
BLOB_DTYPES: dict[int, tuple[str, object]] = {
    1: ("fp16", np.dtype("<f2")),
    2: ("fp32", np.dtype("<f4")),
    3: ("uint8", np.dtype("u1")),
    4: ("int8", np.dtype("i1")),
    5: ("bf16", np.dtype(ml_dtypes.bfloat16)),
    6: ("int16", np.dtype("<i2")),
    7: ("uint16", np.dtype("<u2")),
    8: ("int4", 4),
    9: ("uint1", 1),
    10: ("uint2", 2),
    11: ("uint4", 4),
    12: ("uint3", 3),
    13: ("uint6", 6),
    14: ("int32", np.dtype("<i4")),
    15: ("uint32", np.dtype("<u4")),
    16: ("fp8e4m3fn", np.dtype(ml_dtypes.float8_e4m3fn)),
    17: ("fp8e5m2", np.dtype(ml_dtypes.float8_e5m2)),
}
BLOB_CODE_BY_NAME = {name: code for code, (name, _) in BLOB_DTYPES.items()}


def packed_size(count: int, nbits: int) -> int:
    """Bytes holding ``count`` ``nbits``-wide values packed back to back."""
    return -(-count * nbits // 8)


def unpack_subbyte(data: np.ndarray, nbits: int, count: int, signed: bool) -> np.ndarray:
    """Unpack ``count`` ``nbits``-wide integers stored LSB first in ``data`` (uint8)."""
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little")[: count * nbits]
    bits = bits.reshape(count, nbits).astype(np.uint8)
    weights = (1 << np.arange(nbits, dtype=np.uint16)).astype(np.uint16)
    values = (bits.astype(np.uint16) * weights).sum(axis=1)
    if signed:
        values = values.astype(np.int16)
        values[values >= (1 << (nbits - 1))] -= 1 << nbits
        return values.astype(np.int8)
    return values.astype(np.uint8)


class BlobFile:
    """One weight file; every read checks offsets, sizes, sentinel and dtype."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            what = "is not a file" if os.path.exists(self.path) else "does not exist"
            raise MLCIOError(f"weight file {self.path!r} {what}")
        try:
            size = os.path.getsize(self.path)
            if size < HEADER_SIZE:
                raise MLCIOError(
                    f"weight file {self.path!r} is {size} bytes, shorter than its {HEADER_SIZE}-byte storage header"
                )
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        except OSError as e:
            raise MLCIOError(f"weight file {self.path!r} cannot be read: {e.strerror or e}") from e
        self.size = size
        header = self._data[:HEADER_SIZE].view(_HEADER)[0]
        if int(header["version"]) != STORAGE_VERSION:
            raise MLCIOError(
                f"weight file {self.path!r} has storage version {int(header['version'])}; only version {STORAGE_VERSION} exists"
            )
        self.count = int(header["count"])
        self._starts: list[int] = []  # metadata offsets of the blobs read so far, sorted
        self._extents: dict[int, int] = {}  # metadata offset -> end of that blob's data

    def metadata(self, offset: int) -> np.void:
        """The ``blob_metadata`` at ``offset``, after checking it and its data lie inside the file."""
        where = f"weight file {self.path!r}, blob at offset {offset}"
        if offset < HEADER_SIZE or offset + METADATA_SIZE > self.size:
            raise MLCIOError(f"{where}: offset outside the file ({self.size} bytes)")
        if offset % ALIGNMENT:
            raise MLCIOError(f"{where}: offset is not {ALIGNMENT}-byte aligned")
        meta = self._data[offset : offset + METADATA_SIZE].view(_METADATA)[0]
        if int(meta["sentinel"]) != SENTINEL:
            raise MLCIOError(f"{where}: bad sentinel 0x{int(meta['sentinel']):08X} (expected 0xDEADBEEF); the file is corrupt")
        start, length = int(meta["offset"]), int(meta["size"])
        if start < offset + METADATA_SIZE:
            raise MLCIOError(f"{where}: data offset {start} overlaps the storage header or the blob's own metadata")
        if start + length > self.size:
            raise MLCIOError(f"{where}: data [{start}, {start + length}) lies outside the file ({self.size} bytes)")
        self._claim(offset, start + length, where)
        return meta

    def _claim(self, offset: int, end: int, where: str) -> None:
        """Record that the blob at ``offset`` spans ``[offset, end)``; refuse one that overlaps a
        different blob already read (two blobs sharing bytes is a corrupt or crafted file)."""
        if self._extents.get(offset) == end:
            return  # the same blob read again (a weight shared by two functions)
        i = bisect.bisect_left(self._starts, offset)
        for j in (i - 1, i):
            if 0 <= j < len(self._starts):
                other = self._starts[j]
                other_end = self._extents[other]
                if offset < other_end and other < end:
                    raise MLCIOError(
                        f"{where}: the blob spans [{offset}, {end}), which overlaps the blob at offset {other} "
                        f"spanning [{other}, {other_end}); the file is corrupt"
                    )
        self._starts.insert(i, offset)
        self._extents[offset] = end

    def raw(self, offset: int) -> tuple[int, np.ndarray, int]:
        """``(mil_dtype code, data bytes as a uint8 memmap, padding_size_in_bits)`` of the blob at
        ``offset``, undecoded: what copying it into another file needs."""
        meta = self.metadata(offset)
        code = int(meta["mil_dtype"])
        if code not in BLOB_DTYPES:
            raise MLCIOError(f"weight file {self.path!r}, blob at offset {offset}: unknown blob data type code {code}")
        start = int(meta["offset"])
        return code, self._data[start : start + int(meta["size"])], int(meta["padding_bits"])

    def read(self, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """Read the blob whose metadata is at ``offset`` as ``dtype`` (a MIL name) and ``shape``."""
        meta = self.metadata(offset)
        where = f"weight file {self.path!r}, blob at offset {offset}"
        code = int(meta["mil_dtype"])
        if code not in BLOB_DTYPES:
            raise MLCIOError(f"{where}: unknown blob data type code {code}")
        blob_name, kind = BLOB_DTYPES[code]
        if blob_name != dtype:
            raise MLCParametersError(f"{where}: the blob holds {blob_name} but the program declares {dtype}")
        if any(int(d) < 0 for d in shape):
            raise MLCParametersError(f"{where}: declared shape {tuple(shape)} has a negative dimension")
        count = math.prod(int(d) for d in shape)
        start, length = int(meta["offset"]), int(meta["size"])
        raw = self._data[start : start + length]
        if isinstance(kind, int):
            return self._subbyte(meta, raw, blob_name, kind, count, shape, where)
        if length != count * kind.itemsize:
            raise MLCParametersError(
                f"{where}: {length} bytes of {blob_name} do not match the declared shape {tuple(shape)} "
                f"({count * kind.itemsize} bytes)"
            )
        return raw.view(kind).reshape(shape)

    @staticmethod
    def _subbyte(meta, raw, name: str, nbits: int, count: int, shape, where: str) -> np.ndarray:
        """Unpack; the byte size must be exact, and a non-zero padding field must agree with it."""
        length, padding = raw.size, int(meta["padding_bits"])
        if length != packed_size(count, nbits):
            raise MLCParametersError(
                f"{where}: {length} bytes of {name} do not match the declared shape {tuple(shape)} "
                f"({count} values need {packed_size(count, nbits)} bytes)"
            )
        if padding and length * 8 - padding != count * nbits:
            raise MLCParametersError(
                f"{where}: {length} bytes of {name} with {padding} padding bits do not hold {count} values of shape {tuple(shape)}"
            )
        return unpack_subbyte(raw, nbits, count, name.startswith("int")).reshape(shape)


def _byte_view(data) -> memoryview:
    """``data`` (an array of any dtype, or bytes-like) as a flat view of its bytes, uncopied when
    contiguous."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return memoryview(data).cast("B")


class BlobWriter:
    """Builds a weight file in the layout above, byte for byte what coremltools'
    ``MILBlob::Blob::StorageWriter`` writes: each ``blob_metadata`` starts on a 64-byte
    boundary, its data follows it directly, and the file ends with the last blob's data.

    ``add`` only keeps a reference to the data (a numpy memmap of another weight file stays
    one); nothing is copied until ``tobytes`` or ``write``.
    """

    def __init__(self):
        self._blobs: list[tuple[int, int, memoryview, int]] = []  # (metadata offset, code, data, padding bits)
        self._end = HEADER_SIZE

    def __len__(self) -> int:
        return len(self._blobs)

    def add(self, dtype: int | str, data, padding_bits: int = 0) -> int:
        """Append one blob of ``dtype`` (a ``BLOB_DTYPES`` code or name) holding the raw bytes
        ``data`` (anything with the buffer protocol); return its metadata offset, the
        ``offset`` a ``BlobFileValue`` names."""
        code = BLOB_CODE_BY_NAME.get(dtype) if isinstance(dtype, str) else int(dtype)
        if code not in BLOB_DTYPES:
            raise MLCParametersError(f"blob data type {dtype!r} is not one of {sorted(BLOB_CODE_BY_NAME)}")
        name, kind = BLOB_DTYPES[code]
        raw = _byte_view(data)
        if isinstance(kind, int):
            if not 0 <= padding_bits < 8 or (padding_bits and not raw.nbytes):
                raise MLCParametersError(f"a {name} blob of {raw.nbytes} bytes cannot have {padding_bits} padding bits")
        elif padding_bits or raw.nbytes % kind.itemsize:
            raise MLCParametersError(
                f"a {name} blob holds whole {kind.itemsize}-byte values and no padding bits; "
                f"got {raw.nbytes} bytes, {padding_bits} padding bits"
            )
        offset = self._end + (-self._end % ALIGNMENT)
        self._blobs.append((offset, code, raw, padding_bits))
        self._end = offset + METADATA_SIZE + raw.nbytes
        return offset

    def _header(self) -> bytes:
        header = np.zeros((), _HEADER)
        header["count"], header["version"] = len(self._blobs), STORAGE_VERSION
        return header.tobytes()

    @staticmethod
    def _metadata(offset: int, code: int, size: int, padding_bits: int) -> bytes:
        meta = np.zeros((), _METADATA)
        meta["sentinel"], meta["mil_dtype"], meta["size"] = SENTINEL, code, size
        meta["offset"], meta["padding_bits"] = offset + METADATA_SIZE, padding_bits
        return meta.tobytes()

    def _chunks(self):
        """The file's bytes in order: header, then per blob the alignment gap, metadata, data."""
        yield self._header()
        end = HEADER_SIZE
        for offset, code, raw, padding_bits in self._blobs:
            yield bytes(offset - end)
            yield self._metadata(offset, code, raw.nbytes, padding_bits)
            yield raw
            end = offset + METADATA_SIZE + raw.nbytes

    def tobytes(self) -> bytes:
        return b"".join(self._chunks())

    def write(self, path: str | os.PathLike) -> None:
        """Write the file at ``path`` (not atomically; ``mlc.io.writer`` writes packages so)."""
        with open(path, "wb") as f:
            for chunk in self._chunks():
                f.write(chunk)
