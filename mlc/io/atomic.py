"""Write files so that a failure midway never leaves a half-written file in place.

``atomic_write(path)`` yields a path inside a fresh hidden folder beside ``path``
(``.<name>.<random>.tmp/<name>``); the caller writes a file or a whole folder (an
``.mlpackage``) there. Only when the block finishes is the new one synced to disk and renamed
over ``path``, so an exception, a ``KeyboardInterrupt`` or a killed process leaves whatever
was at ``path`` as it was. An exception or interrupt removes the temporary folder; a killed
process cannot clean up, so it may leave one behind, always a dot-name in the same folder,
which later writes ignore.

Replacing a folder: on Linux (``renameat2(RENAME_EXCHANGE)``) and macOS (``renamex_np(RENAME_SWAP)``)
the new and the old folder swap in one atomic step; elsewhere, or on a file system that cannot
swap, the old folder is renamed aside (``.<name>.<random>.tmp.old``) and the new one renamed in,
with the old one put back if that fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# fsync failures that mean "this file system does not sync", not "the data is lost"
_NO_SYNC = {errno.EINVAL, errno.EBADF, errno.EROFS, getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL)}


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, durable: bool = True):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    Works for files and for folders (an ``.mlpackage``): the old one stays intact until the
    new one is complete; a folder is only ever replaced by a folder (``IsADirectoryError``).
    ``durable`` (the default) fsyncs every file and folder written before the rename, and the
    containing folder after it, so a power cut cannot leave a renamed but empty file either;
    caches whose torn entries are detected and rebuilt pass ``False``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    target = os.path.join(tmp, os.path.basename(path))
    try:
        yield target
        if durable:
            _sync_tree(target)
        if os.path.isdir(path) and not os.path.islink(path):
            if not os.path.isdir(target):  # a file never replaces (and deletes) a folder
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", path)
            _replace_folder(target, path, tmp + ".old")
        else:
            os.replace(target, path)
        if durable:
            _sync_folder(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap it holds the old folder


def _replace_folder(new: str, path: str, aside: str) -> None:
    """Put the folder ``new`` at ``path``, where a folder is; ``new`` then holds the old one
    (swapped) or the old one is removed (renamed ``aside`` first)."""
    if _swap(new, path):
        return
    os.rename(path, aside)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(aside, path)  # put the old package back
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _swap_function():
    """A function ``(a, b) -> bool`` exchanging two paths atomically, or None on this platform."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            renameat2 = libc.renameat2  # glibc >= 2.28
            renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            renameat2.restype = ctypes.c_int
            at_fdcwd, rename_exchange = -100, 2
            return lambda a, b: renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
        if sys.platform == "darwin":
            renamex_np = libc.renamex_np  # macOS 10.12+
            renamex_np.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            renamex_np.restype = ctypes.c_int
            rename_swap = 2
            return lambda a, b: renamex_np(os.fsencode(a), os.fsencode(b), rename_swap) == 0
    except (AttributeError, OSError, TypeError):
        pass
    return None


_SWAP = _swap_function()


def _swap(a: str, b: str) -> bool:
    """Exchange ``a`` and ``b`` in one step; False where that cannot be done (nothing moved)."""
    return _SWAP is not None and _SWAP(a, b)


def _sync_tree(target: str) -> None:
    """fsync ``target`` (a file), or every file and folder under it (a folder)."""
    if not os.path.isdir(target) or os.path.islink(target):
        if not os.path.islink(target):
            _sync_file(target)
        return
    for root, dirs, files in os.walk(target, topdown=False):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                _sync_file(file)
        _sync_folder(root)


def _sync_file(path: str) -> None:
    """Flush ``path``'s data to the disk; an I/O error raises (the write is abandoned)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows' fsync wants a writable handle
    try:
        if fcntl is not None and hasattr(fcntl, "F_FULLFSYNC"):  # macOS: fsync alone stops at the drive's cache
            try:
                fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
                return
            except OSError:
                pass
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_SYNC:
            raise
    finally:
        os.close(fd)


def _sync_folder(path: str) -> None:
    """fsync a folder so the names in it are on disk; best effort (not every system can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
