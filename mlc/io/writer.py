"""Write a ``Model`` proto back to disk: an ``.mlmodel`` file or an ``.mlpackage`` folder.

A package is laid out as coremltools' ``ModelPackage`` (``modelpackage/src/ModelPackage.cpp``)
writes it::

    Name.mlpackage/
        Manifest.json                      fileFormatVersion, itemInfoEntries, rootModelIdentifier
        Data/com.apple.CoreML/model.mlmodel
        Data/com.apple.CoreML/weights/weight.bin   (ML Programs with blob constants)

Each item of ``itemInfoEntries`` is keyed by a UUID and names its ``author``,
``description``, ``name`` and ``path`` (relative to ``Data/``); ``rootModelIdentifier``
is the model specification's UUID. Every write is atomic (``mlc.io.atomic.atomic_write``):
a file or package already at the path is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import uuid

from mlc.io.atomic import atomic_write
from mlc._errors import MLCIOError
from mlc.io.blob import BlobWriter
from mlc.io.pipelines import PIPELINES, pipeline_message

AUTHOR = "com.apple.CoreML"
MODEL_ITEM = ("model.mlmodel", "com.apple.CoreML/model.mlmodel", "CoreML Model Specification")
WEIGHTS_ITEM = ("weights", "com.apple.CoreML/weights", "CoreML Model Weights")
WEIGHT_FILE = "weight.bin"  # programs name it ``@model_path/weights/weight.bin``


def contains_mlprogram(spec) -> bool:
    """Whether ``spec`` is an ML Program or a pipeline with one among its models."""
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        return True
    if kind in PIPELINES:
        return any(contains_mlprogram(m) for m in pipeline_message(spec).models)
    return False


def _normalized(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return path.rstrip("/" + os.sep) or path


def check_model_path(path: str | os.PathLike, suffix: str, spec=None) -> str:
    """``path`` without trailing separators, after checking its suffix fits what is written there.

    ``suffix`` is ``.mlmodel`` or ``.mlpackage``; an ML Program (``spec``) only fits a package,
    since its weights live in a file beside the specification.
    """
    path = _normalized(path)
    actual = os.path.splitext(path)[1].lower()
    if spec is not None and contains_mlprogram(spec) and (suffix != ".mlpackage" or actual != ".mlpackage"):
        raise MLCIOError(
            f"cannot save to {path!r}: an ML Program can only be saved as an .mlpackage (its weights are a "
            f"separate file); use a path ending in .mlpackage"
        )
    if actual != suffix:
        raise MLCIOError(f"cannot save to {path!r}: the path must end in {suffix} (it ends in {actual or 'no suffix'!r})")
    return path


def _serialized(spec, path: str) -> bytes:
    try:
        return spec.SerializeToString()
    except Exception as e:  # protobuf's EncodeError, or ValueError past 2 GiB
        raise MLCIOError(f"cannot save to {path!r}: the specification does not serialize ({e})") from e


def write_mlmodel(path: str | os.PathLike, spec) -> None:
    """Write ``spec`` (a ``Model`` proto, not an ML Program) to the ``.mlmodel`` file ``path``."""
    path = check_model_path(path, ".mlmodel", spec)
    if os.path.isdir(path):
        raise MLCIOError(f"cannot save to {path!r}: a folder is in the way")
    data = _serialized(spec, path)
    try:
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
    except OSError as e:
        raise MLCIOError(f"cannot save to {path!r}: {e.strerror or e}") from e


def manifest(with_weights: bool) -> dict:
    """``Manifest.json``'s content for a package holding a model and, maybe, its weights."""
    items = [MODEL_ITEM] + ([WEIGHTS_ITEM] if with_weights else [])
    ids = [str(uuid.uuid4()) for _ in items]
    entries = {
        item_id: {"author": AUTHOR, "description": description, "name": name, "path": item_path}
        for item_id, (name, item_path, description) in zip(ids, items)
    }
    return {"fileFormatVersion": "1.0.0", "itemInfoEntries": entries, "rootModelIdentifier": ids[0]}


def _check_replaceable(path: str) -> None:
    """Refuse to replace a file, or a non-empty folder that is not a package."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise MLCIOError(f"cannot save to {path!r}: a file that is not an .mlpackage folder is in the way")
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "Manifest.json")):
        raise MLCIOError(f"cannot save to {path!r}: the folder is not an .mlpackage (no Manifest.json); it is left as it is")


def _write_package_files(root: str, data: bytes, weights: BlobWriter | None) -> None:
    model_dir = os.path.join(root, "Data", "com.apple.CoreML")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "model.mlmodel"), "wb") as f:
        f.write(data)
    if weights is not None:
        os.makedirs(os.path.join(model_dir, "weights"))
        weights.write(os.path.join(model_dir, "weights", WEIGHT_FILE))
    with open(os.path.join(root, "Manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest(weights is not None), f, indent=4, sort_keys=True)


def write_mlpackage(path: str | os.PathLike, spec, weights: BlobWriter | None = None) -> None:
    """Write ``spec`` and its weight file (``weights``, referenced from the program as
    ``@model_path/weights/weight.bin``) as the ``.mlpackage`` folder ``path``."""
    path = check_model_path(path, ".mlpackage", spec)
    _check_replaceable(path)
    data = _serialized(spec, path)
    try:
        with atomic_write(path) as tmp:
            _write_package_files(tmp, data, weights)
    except OSError as e:
        raise MLCIOError(f"cannot save to {path!r}: {e.strerror or e}") from e
