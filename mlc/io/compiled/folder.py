"""A compiled ``.mlmodelc`` folder -> ``LoadedSpec``: the ``Model`` protobuf its twin would hold.

What the folder holds decides how it is read:

* ``model.mil``: an ML Program. The text program (``mil_text``) becomes ``mlProgram``; the
  description comes from ``coremldata.bin``, completed from ``metadata.json`` (or from
  ``metadata.json`` alone when there is no ``coremldata.bin``); ``@model_path`` is the folder,
  so ``weights/weight.bin`` is read where it lies.
* ``model.espresso.net``: a NeuralNetwork, read by ``mlc.io.compiled.espresso``.
* ``model0/``, ``model1/``, ... or a root ``coremldata.bin`` that carries a whole ``Model``:
  a pipeline or another model type, read by ``mlc.io.compiled.pipeline``.

Every file read is inside the folder (``mlc.io.loaded.inside``, symlinks resolved). The model's
``specificationVersion``, and every pipeline stage's, is checked as an ``.mlmodel``'s is
(``mlc.io.loaded.check_specification_version``): one newer than any Core ML mlc knows is refused.
"""

from __future__ import annotations

import os

from mlc._errors import MLCIOError, MLCUnsupportedError
from mlc.io.compiled.coremldata import (
    description_from_metadata,
    fill_description,
    parse_description,
    parse_model,
    read_coremldata,
    read_metadata_json,
)
from mlc.io.compiled.mil_text import read_mil_file
from mlc.io.loaded import LoadedSpec, check_specification_version, inside
from mlc.io.proto import proto

MARKERS = ("model.mil", "model.espresso.net", "coremldata.bin", "model0")

# Function.opset -> the lowest specificationVersion that can hold it (iOS15 = 6 ... iOS26 = 10).
_OPSET_SPEC_VERSION = {"CoreML5": 6, "CoreML6": 7, "CoreML7": 8, "CoreML8": 9, "CoreML9": 10}


def is_compiled_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder laid out as a compiled model (without an ``.mlpackage`` manifest)."""
    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "Manifest.json")):
        return False
    return any(os.path.exists(os.path.join(path, marker)) for marker in MARKERS)


def load_compiled(path: str | os.PathLike) -> LoadedSpec:
    """Load a compiled ``.mlmodelc`` folder as the ``Model`` protobuf its uncompiled twin holds."""
    path = os.fspath(path)
    path = path.rstrip("/" + os.sep) or path  # "Model.mlmodelc/" names the model Model.mlmodelc
    where = path
    if not os.path.isdir(path):
        raise MLCIOError(f"{where}: not a folder, so not a compiled .mlmodelc")
    folder = os.path.abspath(path)
    if os.path.isfile(os.path.join(folder, "model.mil")):
        sources: dict = {}
        return _checked(LoadedSpec(load_ml_program(folder, where, sources), path, folder, sources), where)
    if os.path.isfile(os.path.join(folder, "model.espresso.net")):
        try:
            from mlc.io.compiled.espresso import load_espresso
        except ModuleNotFoundError as e:
            if e.name != "mlc.io.compiled.espresso":
                raise
            raise MLCUnsupportedError(f"{where}: compiled NeuralNetwork models are not supported yet") from e
        return _checked(LoadedSpec(load_espresso(folder, where), path, folder), where)
    if os.path.isdir(os.path.join(folder, "model0")) or _root_holds_model(folder, where):
        try:
            from mlc.io.compiled.pipeline import load_pipeline
        except ModuleNotFoundError as e:
            if e.name != "mlc.io.compiled.pipeline":
                raise
            raise MLCUnsupportedError(f"{where}: compiled pipelines and classic models are not supported yet") from e
        return _checked(LoadedSpec(load_pipeline(folder, where), path, folder), where)
    raise MLCIOError(
        f"{where}: not a compiled Core ML model: the folder has no model.mil (ML Program), model.espresso.net "
        "(NeuralNetwork), model0/ (pipeline) or coremldata.bin holding a model"
    )


_PIPELINES = {"pipeline": lambda p: p.models, "pipelineClassifier": lambda p: p.pipeline.models, "pipelineRegressor": lambda p: p.pipeline.models}


def _checked(loaded: LoadedSpec, where: str) -> LoadedSpec:
    """``loaded``, once its model and every pipeline stage in it (nested stages included) have a
    specification version mlc knows (``check_specification_version``)."""
    pending = [(loaded.spec, where)]
    while pending:
        spec, at = pending.pop()
        check_specification_version(spec, at)
        kind = spec.WhichOneof("Type")
        if kind in _PIPELINES:
            pending.extend((stage, f"{at}/model{i}") for i, stage in enumerate(_PIPELINES[kind](getattr(spec, kind))))
    return loaded


def _root_holds_model(folder: str, where: str) -> bool:
    data = os.path.join(folder, "coremldata.bin")
    if not os.path.isfile(data):
        return False
    header, _ = read_coremldata(inside(folder, "coremldata.bin", where), f"{where}/coremldata.bin")
    return bool(header["full_model"])


def load_description(folder: str, where: str):
    """``(ModelDescription, specificationVersion or 0)`` from ``coremldata.bin`` and ``metadata.json``."""
    description, version = None, 0
    data_path = os.path.join(folder, "coremldata.bin")
    if os.path.isfile(data_path):
        header, payload = read_coremldata(inside(folder, "coremldata.bin", where), f"{where}/coremldata.bin")
        if header["full_model"]:
            model = parse_model(payload, f"{where}/coremldata.bin")
            description, version = model.description, int(model.specificationVersion)
        else:
            description = parse_description(payload, f"{where}/coremldata.bin")
            version = int(header["specification_version"])
            if version >= 1 << 31:
                raise MLCIOError(f"{where}/coremldata.bin: specification version {version} is not a Core ML version")
    meta_path = os.path.join(folder, "metadata.json")
    if os.path.isfile(meta_path):
        meta_where = f"{where}/metadata.json"
        meta = read_metadata_json(inside(folder, "metadata.json", where), meta_where)
        if description is None:
            description = description_from_metadata(meta, meta_where)
        else:
            fill_description(description, meta, meta_where)
        if not version:
            declared = meta.get("specificationVersion", 0)
            version = declared if isinstance(declared, int) and not isinstance(declared, bool) and 0 < declared < 1 << 31 else 0
    if description is None:
        raise MLCIOError(f"{where}: the folder has neither coremldata.bin nor metadata.json, so the model's inputs and outputs are unknown")
    return description, version


def load_ml_program(folder: str, where: str, sources: dict | None = None):
    """The ``Model`` protobuf of a compiled ML Program folder (``model.mil``); ``sources``
    receives where each operation was written (``mil_text.parse_mil_text``)."""
    program = read_mil_file(inside(folder, "model.mil", where), model_dir=folder, where=f"{where}/model.mil", sources=sources)
    description, version = load_description(folder, where)
    model = proto("Model").Model()
    model.description.CopyFrom(description)
    model.mlProgram.CopyFrom(program)
    lowest = max((_OPSET_SPEC_VERSION.get(fn.opset, 6) for fn in program.functions.values()), default=6)
    model.specificationVersion = max(version, lowest)
    _order_inputs(model)
    _flexible_shapes(model)
    return model


def _flexible_shapes(model) -> None:
    """Take out the ``FlexibleShapeInformation`` function attribute ``coremlc`` adds (coremltools
    never writes function attributes, and its MIL loader refuses them); the description says
    the same, and where it does not (a folder described by ``metadata.json`` alone) the
    attribute's ``RangeDims`` and ``EnumeratedShapes`` fill the inputs' shape flexibility."""
    inputs = {f.name: f for f in model.description.input}
    for fn in model.mlProgram.functions.values():
        if "FlexibleShapeInformation" not in fn.attributes:
            continue
        info = fn.attributes["FlexibleShapeInformation"]
        del fn.attributes["FlexibleShapeInformation"]
        for kind, table in _flexible_entries(info):
            for name, value in table:
                array = inputs[name].type.multiArrayType if name in inputs else None
                if array is None or array.WhichOneof("ShapeFlexibility") is not None:
                    continue
                if kind == "RangeDims" and value and all(len(r) == 2 for r in value) and len(value) == len(array.shape):
                    for low, high in value:
                        size_range = array.shapeRange.sizeRanges.add()
                        size_range.lowerBound, size_range.upperBound = max(low, 0), high
                elif kind == "EnumeratedShapes" and value and all(isinstance(s, list) for s in value):
                    for shape in value:
                        array.enumeratedShapes.shapes.add().shape.extend(shape)


def _flexible_entries(info):
    """``(kind, [(input name, value as nested int lists)])`` per entry of FlexibleShapeInformation
    (a tuple of (kind, dict) tuples); entries of another form are passed over."""
    if info.immediateValue.WhichOneof("value") != "tuple":
        return
    for entry in info.immediateValue.tuple.values:
        pair = entry.immediateValue.tuple.values if entry.immediateValue.WhichOneof("value") == "tuple" else []
        if len(pair) != 2 or not pair[0].immediateValue.tensor.strings.values:
            continue
        kind = pair[0].immediateValue.tensor.strings.values[0]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        table = []
        for kv in pair[1].immediateValue.dictionary.values:
            keys = kv.key.immediateValue.tensor.strings.values
            if keys:
                key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
                table.append((key, _ints(kv.value)))
        yield kind, table


def _ints(value):
    """A Value of int tensors (nested in lists or tuples) as nested Python lists."""
    immediate = value.immediateValue
    kind = immediate.WhichOneof("value")
    if kind in ("list", "tuple"):
        return [_ints(v) for v in getattr(immediate, kind).values]
    if kind == "tensor":
        ints = list(immediate.tensor.ints.values) or list(immediate.tensor.longInts.values)
        dims = [d.constant.size for d in value.type.tensorType.dimensions]
        if len(dims) == 2 and dims[0] * dims[1] == len(ints):  # a [n, 2] tensor of ranges
            return [ints[i * dims[1] : (i + 1) * dims[1]] for i in range(dims[0])]
        return ints
    return []


def _order_inputs(model) -> None:
    """Put each function's inputs in the description's order (``coremlc`` sorts them by name;
    the description keeps the order the model was made with)."""
    order = {f.name: i for i, f in enumerate(model.description.input)}
    for fn in model.mlProgram.functions.values():
        inputs = sorted(fn.inputs, key=lambda nv: order.get(nv.name, len(order)))
        copies = [type(nv)() for nv in inputs]
        for copy, nv in zip(copies, inputs):
            copy.CopyFrom(nv)
        del fn.inputs[:]
        fn.inputs.extend(copies)
