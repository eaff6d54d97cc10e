"""XLA's persistent compilation cache, kept in mlc's cache folder.

JAX keeps one persistent compilation cache per process (``jax_compilation_cache_dir``): an
executable is stored under a key made of the lowered program, the compile options and the
backend's version, and a later process that compiles the same program reads it back instead
of compiling again. That is what makes a second start of a large model fast (Core ML does the
same with its compiled ``.mlmodelc`` and device caches).

``mlc.load(..., cache_dir=)`` calls ``configure``:

- ``None`` (the default): ``<mlc cache root>/xla`` (``$MLC_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/mlc``, else ``~/.cache/mlc``), unless the process already set its own
  JAX cache folder (kept) or ``$MLC_COMPILATION_CACHE=0`` turns it off;
- a path: that folder, for this process from now on;
- ``False``: leave JAX's setting alone (no cache, unless something else turned one on).

The folder is process-wide because JAX's cache is; mlc only points it somewhere. The cache is
trusted code (JAX loads executables from it), so its folder is created private to the user.

JAX (0.10) writes an entry straight to its final name (``LRUCache.put``), so a process killed
midway, or a second process reading while the first writes, sees a torn entry; and since
``put`` skips keys that exist, a torn entry is never rewritten (every later start logs a read
error and compiles again). mlc makes those writes atomic (``_atomic_entries``): the entry is
written to a hidden temporary file in the same folder and renamed into place.
"""

from __future__ import annotations

import os
import time
import warnings

import jax

from mlc._errors import MLCParametersError
from mlc.io.atomic import atomic_write
from mlc.runtime.cache_dir import user_cache_dir

# Compiles at least this long are stored (JAX's default, 1 s, would skip most models on a GPU).
MIN_COMPILE_SECONDS = 0.1
_JAX_DEFAULT_MIN_COMPILE_SECONDS = 1.0

_set_by_mlc: str | None = None  # the folder mlc pointed JAX at, if it did


def default_dir() -> str:
    return os.path.join(user_cache_dir(), "xla")


def current_dir() -> str | None:
    """The folder JAX's persistent compilation cache uses in this process (None: off)."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir


def configure(cache_dir: str | os.PathLike | bool | None = None) -> str | None:
    """Point JAX's persistent compilation cache at ``cache_dir`` (see the module docstring);
    returns the folder in use, or None when there is none."""
    if cache_dir is False:
        return current_dir()
    if cache_dir is True:
        cache_dir = None
    if cache_dir is None:
        if os.environ.get("MLC_COMPILATION_CACHE", "1").strip() == "0":
            return current_dir()
        theirs = jax.config.jax_compilation_cache_dir
        if theirs and theirs != _set_by_mlc:
            return current_dir()  # the user configured JAX's cache themselves
        cache_dir = default_dir()
    folder = os.fspath(cache_dir)
    if not str(folder).strip():  # os.path.abspath("") would be the current folder, silently
        raise MLCParametersError("cache_dir is an empty path: give a folder, True for mlc's default folder, or False for none")
    return _use(os.path.abspath(folder))


def _use(folder: str) -> str | None:
    global _set_by_mlc
    if jax.config.jax_compilation_cache_dir == folder:
        return current_dir()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        warnings.warn(f"mlc: the compilation cache folder {folder} cannot be created ({e}); compiling without it", stacklevel=3)
        return current_dir()
    from jax.experimental.compilation_cache import compilation_cache

    had_one = jax.config.jax_compilation_cache_dir is not None
    jax.config.update("jax_compilation_cache_dir", folder)
    if had_one:
        compilation_cache.reset_cache()  # JAX opens its cache once; switch it to the new folder
    if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_DEFAULT_MIN_COMPILE_SECONDS:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    _set_by_mlc = folder
    _atomic_entries()
    return current_dir()


def _atomic_entries() -> None:
    """Replace ``LRUCache.put`` (JAX's file cache) by one that renames a complete temporary
    file into place; its checks, eviction, lock and access times are JAX's own."""
    from jax._src import lru_cache

    if getattr(lru_cache.LRUCache.put, "mlc_atomic", False):
        return
    jax_put = lru_cache.LRUCache.put

    def put(self, key: str, value: bytes) -> None:
        if not key or (self.eviction_enabled and len(value) > self.max_size):
            return jax_put(self, key, value)  # JAX's own error or warning
        final = os.path.join(os.fspath(self.path), f"{key}{lru_cache._CACHE_SUFFIX}")
        if self.eviction_enabled:
            self.lock.acquire(timeout=self.lock_timeout_secs)
        try:
            if os.path.exists(final):
                return
            self._evict_if_needed(additional_size=len(value))
            _write(final, value)
            if self.eviction_enabled:
                atime = os.path.join(os.fspath(self.path), f"{key}{lru_cache._ATIME_SUFFIX}")
                _write(atime, time.time_ns().to_bytes(8, "little"))
        finally:
            if self.eviction_enabled:
                self.lock.release()

    put.mlc_atomic = True
    lru_cache.LRUCache.put = put


def _write(path: str, data: bytes) -> None:
    """Write an entry through ``atomic_write``: renamed into place complete, not fsynced (JAX's
    own writes are not either; a kill or a concurrent reader never sees a torn entry, a power
    cut still may)."""
    with atomic_write(path, durable=False) as tmp, open(tmp, "wb") as f:
        f.write(data)
