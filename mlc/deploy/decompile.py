"""``mlc decompile``: a compiled ``.mlmodelc`` folder back into an editable Core ML file.

An ML Program becomes an ``.mlpackage``: the text program, parsed (``mlc.io.compiled``), is
the package's ``mlProgram``; the description (inputs, outputs, flexible shapes, metadata) is
the one ``coremldata.bin`` and ``metadata.json`` hold; the weights are copied blob by blob
into a new ``weights/weight.bin`` (``mlc.frontends.mil.writeback``: every blob read through
the bounds-checked reader, offsets rewritten). (The ``FlexibleShapeInformation`` function
attribute ``coremlc`` adds is already left out by the reader; the description holds the same.)
Other models (NeuralNetwork, pipelines, classic types, as the folder readers
rebuild their ``Model`` protobuf) become an ``.mlmodel``, or an ``.mlpackage`` when asked.

Everything is written atomically: a failure leaves nothing half-written and a file already at
the output path as it was.
"""

from __future__ import annotations

import dataclasses
import os

from mlc._errors import MLCIOError
from mlc.io.compiled.folder import is_compiled_folder, load_compiled
from mlc.io.spec import check_specification_version
from mlc.io.writer import check_model_path, write_mlmodel, write_mlpackage


@dataclasses.dataclass(frozen=True)
class DecompileReport:
    """What ``decompile`` wrote."""

    path: str
    kind: str  # the Model's Type: mlProgram, neuralNetwork, pipelineClassifier, ...
    specification_version: int
    bytes: int


def default_output(source: str | os.PathLike, spec) -> str:
    """``Name.mlpackage`` (ML Programs) or ``Name.mlmodel`` beside ``Name.mlmodelc``."""
    base = os.path.splitext(os.fspath(source).rstrip("/" + os.sep))[0]
    return base + (".mlpackage" if spec.WhichOneof("Type") == "mlProgram" else ".mlmodel")


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def decompile(source: str | os.PathLike, output: str | os.PathLike | None = None) -> DecompileReport:
    """Write the compiled folder ``source`` as an editable model at ``output`` (default: beside
    it, ``.mlpackage`` for ML Programs, ``.mlmodel`` otherwise)."""
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise MLCIOError(f"{source}: not a folder; decompile reads a compiled .mlmodelc folder")
    if not is_compiled_folder(source):
        raise MLCIOError(f"{source}: not a compiled .mlmodelc folder (no model.mil, model.espresso.net, coremldata.bin or model0/)")
    loaded = load_compiled(source)
    check_specification_version(loaded.spec, source)
    spec = loaded.spec
    kind = spec.WhichOneof("Type")
    path = os.fspath(output) if output is not None else default_output(source, spec)
    if os.path.abspath(path.rstrip("/" + os.sep)) == os.path.abspath(source.rstrip("/" + os.sep)):
        raise MLCIOError(f"{path}: this is the compiled folder itself; write to a new path")
    if kind == "mlProgram":
        from mlc.frontends.mil.writeback import save_mlprogram

        path = check_model_path(path, ".mlpackage", spec)
        save_mlprogram(loaded, {}, path)
    elif path.rstrip("/" + os.sep).lower().endswith(".mlpackage"):
        path = check_model_path(path, ".mlpackage", spec)
        write_mlpackage(path, spec, None)
    else:
        path = check_model_path(path, ".mlmodel", spec)
        write_mlmodel(path, spec)
    return DecompileReport(path, kind, int(spec.specificationVersion), _size(path))
