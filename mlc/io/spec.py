"""Find and parse a model's specification: ``.mlmodel``, ``.mlpackage``, ``.mlmodelc``, MLModel or proto.

An ``.mlpackage`` is a folder with ``Manifest.json``; its ``rootModelIdentifier`` names an
item in ``itemInfoEntries`` whose ``path`` (relative to ``Data/``) is the model protobuf.
ML Program weights live in ``weights/`` beside that file and are referenced from the
program as ``@model_path/weights/<file>``. No path may leave the package. A compiled
``.mlmodelc`` folder is read by ``mlc.io.compiled``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mlc._errors import MLCIOError
from mlc.io.loaded import MAX_SPECIFICATION_VERSION, LoadedSpec, check_specification_version, inside  # noqa: F401 - re-exported
from mlc.io.proto import proto

MAX_SPEC_BYTES = 2 << 30  # protobuf's own limit on one message


def parse_model_bytes(data: bytes, where: str):
    if not data:
        raise MLCIOError(f"{where}: the file is empty, not a Core ML model")
    spec = proto("Model").Model()
    try:
        spec.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError or RuntimeError depending on backend
        raise MLCIOError(f"{where}: not a Core ML model (the protobuf does not parse: {e})") from e
    if spec.specificationVersion <= 0 or spec.WhichOneof("Type") is None:
        raise MLCIOError(f"{where}: not a Core ML model (no specification version or model type)")
    check_specification_version(spec, where)
    return spec


def _read_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_SPEC_BYTES:
            raise MLCIOError(f"{path}: {size} bytes is larger than any Core ML specification can be")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MLCIOError(f"{path}: cannot be read ({e.strerror or e})") from e


def _root_item_path(manifest_path: str) -> str:
    """The root model's ``path`` from ``Manifest.json``, every step checked."""
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except OSError as e:
        raise MLCIOError(f"{manifest_path}: cannot be read ({e.strerror or e})") from e
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise MLCIOError(f"{manifest_path}: malformed manifest, not JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise MLCIOError(f"{manifest_path}: malformed manifest, not a JSON object")
    root_id = manifest.get("rootModelIdentifier")
    if not isinstance(root_id, str):
        raise MLCIOError(f"{manifest_path}: malformed manifest, no rootModelIdentifier string")
    entries = manifest.get("itemInfoEntries")
    entry = entries.get(root_id) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        raise MLCIOError(f"{manifest_path}: malformed manifest, itemInfoEntries has no entry {root_id!r}")
    relative = entry.get("path")
    if not isinstance(relative, str) or not relative:
        raise MLCIOError(f"{manifest_path}: malformed manifest, the root model's path is not a non-empty string")
    return relative


def _package_model_path(package: str) -> str:
    manifest_path = os.path.join(package, "Manifest.json")
    if not os.path.isfile(manifest_path):
        raise MLCIOError(f"{package}: not an .mlpackage (no Manifest.json)")
    inside(package, "Manifest.json", manifest_path)
    relative = _root_item_path(manifest_path)
    data_dir = inside(package, "Data", manifest_path)
    model_path = inside(data_dir, relative, manifest_path)
    if not os.path.isfile(model_path):
        raise MLCIOError(f"{manifest_path}: root model {relative!r} is missing from the package")
    return model_path


def load_spec(source: Any, weights_dir: str | None = None) -> LoadedSpec:
    """Load a spec from a path, a coremltools ``MLModel``, or a ``Model`` proto."""
    Model = proto("Model").Model
    if isinstance(source, LoadedSpec):
        return source
    if isinstance(source, Model):
        model_dir = os.path.dirname(os.path.abspath(weights_dir)) if weights_dir else None
        check_specification_version(source, "<in-memory model>")
        return LoadedSpec(source, None, model_dir)
    if hasattr(source, "get_spec") and callable(source.get_spec):  # coremltools MLModel
        spec = source.get_spec()
        wdir = weights_dir or getattr(source, "weights_dir", None)
        path = getattr(source, "package_path", None)
        model_dir = os.path.dirname(os.path.abspath(wdir)) if wdir else None
        check_specification_version(spec, path or "<coremltools MLModel>")
        return LoadedSpec(spec, path, model_dir)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise MLCIOError(f"{path}: no such file or package")
        if os.path.isdir(path):
            from mlc.io.compiled.folder import is_compiled_folder, load_compiled

            if is_compiled_folder(path):  # an .mlmodelc, as Xcode compiles a model
                loaded = load_compiled(path)
                check_specification_version(loaded.spec, path)
                return loaded
            model_path = _package_model_path(path)
            spec = parse_model_bytes(_read_file(model_path), path)
            return LoadedSpec(spec, path, os.path.dirname(model_path))
        spec = parse_model_bytes(_read_file(path), path)
        model_dir = os.path.dirname(os.path.abspath(weights_dir)) if weights_dir else os.path.dirname(os.path.abspath(path))
        return LoadedSpec(spec, path, model_dir)
    raise MLCIOError(f"cannot load a model from {type(source).__name__}; pass a path, a coremltools MLModel or a Model proto")
