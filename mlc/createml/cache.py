"""A cache of image features, so a second training on the same images does not extract again.

Features live in memory for the process and on disk under
``<cache root>/features/<extractor fingerprint>/<key[:2]>/<key>.npy``, one small file per image
(or augmented copy). A key is the SHA-256 of the image file's bytes plus the name of the
transform that made the copy, so renaming or moving files keeps their features, and a changed
file or a different extractor never reads stale ones. Files are written to a temporary name in
the same folder and renamed into place (``mlc.io.atomic.atomic_write``), so concurrent writers and
interrupted runs never leave a torn file. The cache root is ``$MLC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlc``, else
``~/.cache/mlc``. A disk that cannot be written turns the disk cache off with one warning;
training goes on.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np

from mlc.io.atomic import atomic_write
from mlc.runtime.cache_dir import user_cache_dir# noqa: F401  (re-exported: the feature cache's root)


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    """Features by key for one extractor; ``root=False`` keeps them in memory only."""

    def __init__(self, fingerprint: str, root: str | os.PathLike | bool | None = None):
        self.memory: dict[str, np.ndarray] = {}
        if root is False:
            self.folder = None
        else:
            root = user_cache_dir() if root in (None, True) else os.fspath(root)
            self.folder = os.path.join(root, "features", fingerprint)
        self.hits = 0
        self.misses = 0

    def _file(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], f"{key}.npy")

    def get(self, key: str) -> np.ndarray | None:
        value = self.memory.get(key)
        if value is None and self.folder is not None:
            value = self._read(self._file(key))
            if value is not None:
                self.memory[key] = value
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    @staticmethod
    def _read(path: str) -> np.ndarray | None:
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # absent or unreadable: extracted again and rewritten
        return value if value.ndim == 1 and value.dtype == np.float32 else None

    def put(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, np.float32).reshape(-1)
        self.memory[key] = value
        if self.folder is None:
            return
        path = self._file(key)
        try:
            # not fsynced: an entry a power cut tears is unreadable, so extracted again and rewritten
            with atomic_write(path, durable=False) as tmp, open(tmp, "wb") as f:
                np.save(f, value, allow_pickle=False)
        except OSError as e:
            warnings.warn(f"mlc: the feature cache at {self.folder!r} cannot be written ({e}); caching in memory only", stacklevel=2)
            self.folder = None
