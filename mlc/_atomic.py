"""Write files so that a failure midway never leaves a half-written file in place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    Works for files and for folders (an ``.mlpackage``): the old one stays intact until the
    new one is complete.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    target = os.path.join(tmp, os.path.basename(path))
    try:
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            old = tmp + ".old"
            os.rename(path, old)
            try:
                os.rename(target, path)
            except BaseException:
                os.rename(old, path)  # put the old package back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
