"""What the server serves: one model file, or a model repository folder.

A repository is laid out as Triton and KServe lay theirs out::

    models/
      classifier/            <- the model's name
        1/                   <- a version: a folder named by a positive integer
          Classifier.mlpackage   (or .mlmodel, .mlmodelc, .mlc: exactly one model per version)
        2/ ...
      detector/ ...

A single model file is served under its file name without the suffix, as version ``1``.
A request without a version gets the highest version that is ready.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from mlc._errors import MLCIOError

MODEL_SUFFIXES = (".mlpackage", ".mlmodel", ".mlmodelc", ".mlc")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    name: str
    version: str
    path: str


def is_model_path(path: Path) -> bool:
    return path.suffix in MODEL_SUFFIXES


def find_models(source: str | os.PathLike) -> list[ModelSource]:
    """The models of a model file or a repository folder, by name and version.

    A repository entry that is not laid out as above is an error naming it (a server that
    silently serves fewer models than the folder holds is worse than one that does not start).
    """
    path = Path(source)
    if not path.exists():
        raise MLCIOError(f"{path}: no such model file or repository folder")
    if is_model_path(path):
        return [ModelSource(path.name[: -len(path.suffix)], "1", str(path))]
    if not path.is_dir():
        raise MLCIOError(f"{path}: not a model ({', '.join(MODEL_SUFFIXES)}) or a model repository folder")
    found = []
    for model_dir in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
        if not model_dir.is_dir():
            raise MLCIOError(f"{model_dir}: a model repository holds one folder per model, not files")
        versions = [v for v in model_dir.iterdir() if not v.name.startswith(".")]
        bad = [v.name for v in versions if not (v.is_dir() and v.name.isdigit() and int(v.name) > 0)]
        if bad or not versions:
            raise MLCIOError(
                f"{model_dir}: a model folder holds version folders named 1, 2, ...; "
                + (f"found {bad[0]!r}" if bad else "it has none")
            )
        for version in sorted(versions, key=lambda v: int(v.name)):
            models = [m for m in version.iterdir() if is_model_path(m)]
            if len(models) != 1:
                raise MLCIOError(
                    f"{version}: a version folder holds exactly one model ({', '.join(MODEL_SUFFIXES)}), found {len(models)}"
                )
            found.append(ModelSource(model_dir.name, str(int(version.name)), str(models[0])))
    if not found:
        raise MLCIOError(f"{path}: the model repository holds no model")
    return found
