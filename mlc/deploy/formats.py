"""What the command line and the batch scorer share about files and printed results."""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # image files, any case


def jsonable(value: Any) -> Any:
    """A model output as JSON takes it: arrays as lists, numpy scalars as numbers, dicts with
    string keys, a PIL image as its mode and size."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if hasattr(value, "mode") and hasattr(value, "size"):  # PIL image
        return {"image": {"mode": value.mode, "size": list(value.size)}}
    return value
