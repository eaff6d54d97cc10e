"""The ``.mlc`` container: one file holding a JSON header and aligned binary sections.

Layout (all integers little-endian)::

    0   8 bytes   magic b"MLCAOT\\x00" + format version (1 byte)
    8   8 bytes   header length H (uint64)
    16  H bytes   header, UTF-8 JSON; its "sections" list names every section as
                  {"name", "offset", "size"}, offsets absolute and 64-byte aligned
    ...           the sections (serialized XLA modules, weight arrays), zero padding between

Reading checks the magic and version, that the header is a JSON object within the file, and
that every section lies inside the file without overlapping another, before anything is used.
Arrays are views of a read-only memory map of the file: nothing is copied until a device
takes them. Writing goes to a temporary file beside the target and is renamed into place.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Any

import numpy as np

from mlc.io.atomic import atomic_write
from mlc._errors import MLCIOError

MAGIC = b"MLCAOT\x00"
VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<7sBQ")
MAX_HEADER_BYTES = 64 << 20
DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool")


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write(path: str, header: dict, sections: dict[str, bytes | np.ndarray], *, durable: bool = True) -> None:
    """Write ``header`` plus ``sections`` (name -> bytes or array) atomically to ``path``
    (``durable``: fsynced before the rename, ``mlc.io.atomic``; caches that check what they read pass False)."""
    header = dict(header)
    names = list(sections)
    blobs = [_as_bytes(sections[n]) for n in names]
    # The offsets depend on the header's length, which depends on the offsets: settle by iterating.
    offsets: list[int] = []
    for _ in range(8):
        header["sections"] = [{"name": n, "offset": o, "size": len(b)} for n, b, o in zip(names, blobs, offsets or [0] * len(names))]
        encoded = json.dumps(header, sort_keys=True).encode()
        start = _aligned(_PREFIX.size + len(encoded))
        new = []
        for b in blobs:
            new.append(start)
            start = _aligned(start + len(b))
        if new == offsets:
            break
        offsets = new
    with atomic_write(path, durable=durable) as tmp, open(tmp, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, VERSION, len(encoded)))
        f.write(encoded)
        for offset, blob in zip(offsets, blobs):
            f.write(b"\0" * (offset - f.tell()))
            f.write(blob)


def _as_bytes(value: bytes | np.ndarray) -> memoryview | bytes:
    if isinstance(value, np.ndarray):
        return memoryview(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    return bytes(value)


class MLCFile:
    """A ``.mlc`` file opened for reading: ``header``, ``section(name)``, ``array(...)``."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _PREFIX.size:
                    raise MLCIOError(f"{path}: not an mlc compiled model (file of {size} bytes is shorter than the header)")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise MLCIOError(f"{path}: cannot read the compiled model: {e.strerror or e}") from e
        self.size = size
        self.header = self._read_header()
        self._sections = self._read_sections()

    def _read_header(self) -> dict:
        magic, version, length = _PREFIX.unpack_from(self._map, 0)
        if magic != MAGIC:
            raise MLCIOError(f"{self.path}: not an mlc compiled model (bad magic {bytes(magic)!r}); compile one with `mlc compile`")
        if version != VERSION:
            raise MLCIOError(f"{self.path}: compiled model format version {version}; this mlc reads version {VERSION}: compile the model again")
        if length > min(MAX_HEADER_BYTES, self.size - _PREFIX.size):
            raise MLCIOError(f"{self.path}: header length {length} runs past the end of the file ({self.size} bytes): the file is truncated or corrupt")
        try:
            header = json.loads(bytes(self._map[_PREFIX.size : _PREFIX.size + length]).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MLCIOError(f"{self.path}: the header is not valid JSON ({e}): the file is corrupt") from e
        if not isinstance(header, dict):
            raise MLCIOError(f"{self.path}: the header is not a JSON object")
        self._header_end = _PREFIX.size + length
        return header

    def _read_sections(self) -> dict[str, tuple[int, int]]:
        entries = self.header.get("sections")
        if not isinstance(entries, list):
            raise MLCIOError(f"{self.path}: header field 'sections' is missing or not a list")
        spans: dict[str, tuple[int, int]] = {}
        for i, e in enumerate(entries):
            where = f"{self.path}: header sections[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("name"), str):
                raise MLCIOError(f"{where} is not an object with a 'name'")
            offset, size = e.get("offset"), e.get("size")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, size)) or offset < 0 or size < 0:
                raise MLCIOError(f"{where} ({e['name']!r}): offset and size must be non-negative integers")
            if offset < self._header_end or offset + size > self.size:
                raise MLCIOError(f"{where} ({e['name']!r}): bytes [{offset}, {offset + size}) lie outside the data of the {self.size}-byte file")
            if e["name"] in spans:
                raise MLCIOError(f"{where}: section {e['name']!r} is listed twice")
            spans[e["name"]] = (offset, size)
        ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
        for (a, (oa, sa)), (b, (ob, _)) in zip(ordered, ordered[1:]):
            if oa + sa > ob:
                raise MLCIOError(f"{self.path}: sections {a!r} and {b!r} overlap")
        return spans

    def __contains__(self, name: str) -> bool:
        """Whether the file has a section ``name``."""
        return name in self._sections

    def section(self, name: str) -> memoryview:
        if name not in self._sections:
            raise MLCIOError(f"{self.path}: section {name!r} is missing")
        offset, size = self._sections[name]
        return memoryview(self._map)[offset : offset + size]

    def array(self, name: str, dtype: Any, shape: Any) -> np.ndarray:
        """Section ``name`` as a read-only array, checked against ``dtype`` and ``shape``."""
        where = f"{self.path}: array {name!r}"
        if dtype not in DTYPES:
            raise MLCIOError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise MLCIOError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        dt = _numpy_dtype(dtype)
        view = self.section(name)
        expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if len(view) != expected:
            raise MLCIOError(f"{where}: {len(view)} bytes stored, but {dtype} {shape} needs {expected}")
        return np.frombuffer(view, dtype=dt).reshape(shape)


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def is_mlc_file(source: Any) -> bool:
    """Whether ``source`` is a path to a ``.mlc`` file (by suffix, or by magic for other names)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = os.fspath(source)
    if path.endswith(".mlc"):
        return True
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
