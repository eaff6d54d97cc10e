"""``model.espresso.weights``: the weight blobs of a compiled NeuralNetwork (espresso) folder.

Layout, learnt from Apple's files (all integers little-endian, no alignment)::

    offset        size      field
    0             8         count     uint64, the number of blobs
    8 + 16*i      8         id        uint64, blob i's id (the integer a layer's ``blob_*`` key holds)
    16 + 16*i     8         size      uint64, blob i's size in bytes (0 for an unused id)
    8 + 16*count            the blobs' bytes, back to back, in the table's order

In every file seen the table lists ids ``0 .. count-1`` in order, so "table order" and "id order"
are the same; ids are looked up through the table, not assumed. Blob 0 (56 zero bytes) and the
even ids between a layer's blobs are empty or zero-filled placeholders no layer names.

A blob holds raw little-endian ``float32`` (``blob_weights``, ``blob_biases``, batch-norm
parameters) or ``float16`` (``blob_weights_f16``) values. The file is memory-mapped; each blob's
extent is checked against the file and each read against the size the layer declares, before
anything is copied.
"""

from __future__ import annotations

import os

import numpy as np

from mlc._errors import MLCIOError
from mlc.runtime import limits

ENTRY = np.dtype([("id", "<u8"), ("size", "<u8")])
DTYPES = {"fp32": np.dtype("<f4"), "fp16": np.dtype("<f2")}


class EspressoWeights:
    """The blob table of a ``model.espresso.weights`` file; ``array`` reads one blob."""

    def __init__(self, path: str, where: str):
        self.where = where
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise MLCIOError(f"{where}: cannot be read ({e.strerror or e})") from e
        if size < 8:
            raise MLCIOError(f"{where}: {size} bytes is shorter than the weight file's 8-byte blob count")
        try:
            self._data = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise MLCIOError(f"{where}: cannot be read ({e})") from e
        count = int(self._data[:8].view("<u8")[0])
        table_end = 8 + ENTRY.itemsize * count  # Python integers: no overflow
        if table_end > size:
            raise MLCIOError(
                f"{where}: the file says it holds {count} blobs, whose table alone needs {table_end} bytes, "
                f"but the file has {size}"
            )
        table = self._data[8:table_end].view(ENTRY)
        self.blobs: dict[int, tuple[int, int]] = {}  # id -> (offset, size)
        offset = table_end
        for i, (blob_id, blob_size) in enumerate(table.tolist()):
            if blob_id in self.blobs:
                raise MLCIOError(f"{where}: blob id {blob_id} is listed twice in the blob table (entry {i})")
            if blob_size > size - offset:
                raise MLCIOError(
                    f"{where}: blob {blob_id} (entry {i} of {count}) is {blob_size} bytes from byte {offset}, "
                    f"past the end of the file ({size} bytes): the file is truncated or corrupt"
                )
            self.blobs[blob_id] = (offset, blob_size)
            offset += blob_size

    def size(self, blob_id: int) -> int:
        return self._entry(blob_id, "a layer")[1]

    def _entry(self, blob_id, what: str) -> tuple[int, int]:
        if not isinstance(blob_id, int) or isinstance(blob_id, bool) or blob_id not in self.blobs:
            known = f"ids {min(self.blobs)}..{max(self.blobs)}" if self.blobs else "no blobs"
            raise MLCIOError(f"{what}: blob id {blob_id!r} is not in {self.where} ({known})")
        return self.blobs[blob_id]

    def array(self, blob_id, dtype: str, count: int, what: str, *, at_least: bool = False) -> np.ndarray:
        """Blob ``blob_id``'s values as ``dtype`` ("fp32" / "fp16"), a copy.

        The blob must hold exactly ``count`` values (``at_least``: at least ``count``, and all
        its values are returned); ``what`` names the layer and key in messages."""
        offset, nbytes = self._entry(blob_id, what)
        item = DTYPES[dtype]
        limits.check_tensor((count,), item.itemsize, what)
        need = count * item.itemsize
        if nbytes % item.itemsize or (nbytes < need if at_least else nbytes != need):
            holds = f"{nbytes} bytes ({nbytes / item.itemsize:g} {dtype} values)"
            raise MLCIOError(f"{what}: blob {blob_id} holds {holds}, the layer needs {'at least ' if at_least else ''}{count}")
        return np.array(self._data[offset : offset + nbytes].view(item))
