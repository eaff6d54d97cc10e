"""mlc's cache root, shared by the feature cache and XLA's persistent compilation cache."""

from __future__ import annotations

import os


def user_cache_dir() -> str:
    """mlc's cache root: ``$MLC_CACHE_DIR``, ``$XDG_CACHE_HOME/mlc`` or ``~/.cache/mlc``."""
    if os.environ.get("MLC_CACHE_DIR"):
        return os.environ["MLC_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mlc")
