"""``linkedModel`` (LinkedModel.proto): a stage whose model lives in another file.

``linkedModelFileName`` names the file (e.g. ``FeatureExtractor.mlmodelc``) and
``linkedModelSearchPath`` lists folders separated by ``:``, relative to the folder of the
model that links it (empty means ``.``). Core ML links compiled ``.mlmodelc`` bundles, whose
format is private; mlc looks for the source model of the same name instead (``.mlmodel`` or
``.mlpackage``) when the named file is a ``.mlmodelc`` or is absent. Absolute paths, paths that
leave the linking model's folder and the ``$BUNDLE_...`` search locations are refused.
"""

from __future__ import annotations

import os

from mlc._errors import MLCIOError, MLCUnsupportedError
from mlc.frontends.classic.lowering import lower_stage
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.io.spec import inside, load_spec

SOURCE_SUFFIXES = (".mlmodel", ".mlpackage")


def _base_folder(ctx: StageContext) -> str:
    path = ctx.loaded.path
    if not path or not os.path.exists(path):
        raise MLCIOError(f"{ctx.where} (linkedModel): a linked model resolves against the folder of the model file; "
                         "load the model from a path, not from memory")
    return os.path.dirname(os.path.abspath(path.rstrip(os.sep)))


def _candidates(file_name: str) -> list[str]:
    stem, suffix = os.path.splitext(file_name)
    names = [] if suffix == ".mlmodelc" else [file_name]
    return names + [stem + s for s in SOURCE_SUFFIXES if stem + s != file_name]


def _find(ctx: StageContext, file_name: str, search_path: str) -> str:
    base = _base_folder(ctx)
    tried = []
    for folder in (search_path or ".").split(":"):
        folder = folder or "."
        if folder.startswith("$"):
            raise MLCUnsupportedError(f"{ctx.where} (linkedModel): search location {folder!r} is an app bundle; mlc searches folders only")
        for name in _candidates(file_name):
            path = inside(base, os.path.join(folder, name), f"{ctx.where} (linkedModel)")
            tried.append(path)
            if os.path.exists(path):
                return path
    raise MLCIOError(f"{ctx.where} (linkedModel): linked model {file_name!r} not found; looked for {', '.join(tried)}")


@model_type("linkedModel")
def linked_model(ctx: StageContext) -> Stage:
    message = ctx.message
    if message.WhichOneof("LinkType") != "linkedModelFile":
        ctx.fail("LinkedModel.LinkType is not set")
    link = message.linkedModelFile
    file_name = link.linkedModelFileName.defaultValue
    if not file_name:
        ctx.fail("linkedModelFileName is empty")
    path = _find(ctx, file_name, link.linkedModelSearchPath.defaultValue)
    loaded = load_spec(path)
    stage = lower_stage(StageContext(loaded.spec, loaded, f"{ctx.where} > linked model {path}"))
    inputs = [f.name for f in loaded.spec.description.input]
    missing = [n for n in inputs if n not in ctx.inputs]
    if missing:
        ctx.fail(f"the linked model {path} reads input {missing[0]!r}, which the linking stage does not declare")

    def fn(params: dict, values: dict) -> dict:
        return stage.fn(params, {n: values[n] for n in inputs if n in values})

    return Stage(fn, stage.params, host=stage.host, eager=stage.eager, op_histogram=stage.op_histogram)
