"""Compiled pipelines and classic models -> the ``Model`` proto their uncompiled twin holds.

A compiled folder that is not an ML Program is one of (its root ``coremldata.bin`` says which;
``coremldata.py`` reads the header):

* kind ``spec``: the header is followed by a whole protobuf ``Model`` (Create ML's
  ``textClassifier``, ``visionFeaturePrint``, ``glmClassifier`` stages, ...): that ``Model``
  is the model. mlc refuses the types that rely on an Apple framework by name when it lowers
  them, exactly as for their ``.mlmodel`` twins.
* a ``model.espresso.net``: a NeuralNetwork, ``mlc.io.compiled.espresso``.
* format 200, kind ``generic.model0v<x>...``: a ``pipelineClassifier``. The description
  follows the header; the trailer is two uint64s (the number of stages, the format again).
  Stage ``i`` is the folder ``model<i>/``, itself a compiled model read by ``load_pipeline``
  (so pipelines nest, up to ``mlc.runtime.limits.MAX_NESTING``). The stages keep Model.proto's
  default names (``model0``, ``model1``, ...), as the folders do. Each stage is a folder of its
  own: a stage that links to a folder the load has already read (``model1 -> model0``,
  ``model0 -> .``) is refused, or a few kilobytes of links would make the loader read
  2**depth stages.
* format 404, kind ``notreesyet``: a ``kNearestNeighborsClassifier`` (below).

A model (the pipeline or a stage) is updatable when its folder has ``updateParameters/`` (or its
``metadata.json`` says ``isUpdatable``), as the updatable drawing classifier's pipeline and kNN
stage are and its NeuralNetwork stage is not.

kNN classifier (format 404). The description follows the header, then a trailer
(little-endian; learnt from one updatable kNN, ``UpdatableDrawingClassifier``)::

    offset  size  field                         seen    meaning
    0       8     number of dimensions          128     nearestNeighborsIndex.numberOfDimensions
    8       4     index type                    0       linearIndex (the twin's)
    12      4     label type                    100     string labels (101 would be int64, as in
                                                        a compiled NeuralNetwork classifier)
    16      8     stored examples               0       an empty index
    24      4     (unknown)                     0
    28      4     (unknown)                     110     (the distance? squaredEuclidean, the only one)
    32      4     (unknown)                     0
    36      8+n   default label                 "unknown"  defaultStringLabel
    ...     8     weighting                     1       inverseDistanceWeighting (the twin's)

``modelParameters/numberOfNeighbors/coremldata.bin`` is the ``Int64Parameter`` protobuf of
``numberOfNeighbors``; ``modelParameters/coremldata.bin`` and ``updateParameters/coremldata.bin``
hold 8 zero bytes. Fields whose meaning could not be learnt must hold the values seen, and a
kNN that stores examples is refused: Apple ships updatable kNNs empty, and the layout of stored
examples is not known (a compiled kNN that was updated on a device would hold them).
"""

from __future__ import annotations

import os
import struct

from mlc._errors import MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.io.compiled.coremldata import fill_description, parse_description, parse_model, read_coremldata, read_metadata_json
from mlc.io.compiled.espresso import is_espresso_folder, load_espresso
from mlc.io.loaded import inside
from mlc.io.proto import proto
from mlc.runtime import limits

PIPELINE_CLASSIFIER = 200
KNN_CLASSIFIER = 404
KNN_STRING_LABELS = 100
KNN_LINEAR_INDEX = 0
KNN_INVERSE_DISTANCE = 1
MAX_STAGES = 1 << 16

__all__ = ["load_pipeline"]


def load_pipeline(folder: str, where: str, *, depth: int = 0, _read: dict[str, str] | None = None):
    """The ``Model`` proto of the compiled pipeline or classic model in ``folder`` (``where``
    names it in messages): a pipeline with its stages, a kNN classifier, a NeuralNetwork, or the
    whole ``Model`` a ``coremldata.bin`` of kind ``spec`` carries."""
    folder = os.fspath(folder)
    if depth > limits.MAX_NESTING:
        raise MLCParametersError(f"{where}: pipelines nest more than {limits.MAX_NESTING} deep")
    read = {} if _read is None else _read  # real path of every model folder this load has read -> its name
    real = os.path.realpath(folder)
    if real in read:
        raise MLCIOError(f"{where}: is the folder {read[real]} again (a link); each pipeline stage is a folder of its own")
    read[real] = where
    if is_espresso_folder(folder):
        return load_espresso(folder, where)
    data_where = f"{where}/coremldata.bin"
    if not os.path.isfile(os.path.join(folder, "coremldata.bin")):
        raise MLCIOError(f"{where}: the compiled model has no coremldata.bin, so its type and description are unknown")
    header, payload = read_coremldata(inside(folder, "coremldata.bin", where), data_where)
    if header["full_model"]:
        model = parse_model(payload, data_where)
        if model.specificationVersion <= 0:
            raise MLCIOError(f"{data_where}: the Model has no specification version")
        return model
    fmt = header["format"]
    if fmt == PIPELINE_CLASSIFIER:
        return _pipeline_classifier(folder, where, header, payload, depth, read)
    if fmt == KNN_CLASSIFIER:
        return _knn_classifier(folder, where, header, payload)
    if os.path.isfile(os.path.join(folder, "model.mil")):
        raise MLCUnsupportedError(f"{where}: a compiled ML Program inside a pipeline is not read by mlc yet")
    raise MLCUnsupportedError(
        f"{data_where}: compiled model format {fmt} (kind {header['kind']!r}) is not one mlc reads "
        f"({PIPELINE_CLASSIFIER}: pipelineClassifier, {KNN_CLASSIFIER}: kNearestNeighborsClassifier, "
        "a NeuralNetwork, or a whole Model)"
    )


def _base(folder: str, where: str, header: dict, payload: bytes):
    """A ``Model`` with the version and description of a ``generic`` ``coremldata.bin``,
    completed from ``metadata.json``, and its updatability."""
    model = proto("Model").Model()
    if not 0 < header["specification_version"] < 1 << 31:
        raise MLCIOError(f"{where}/coremldata.bin: specification version {header['specification_version']} is not a Core ML version")
    model.specificationVersion = header["specification_version"]
    model.description.CopyFrom(parse_description(payload, f"{where}/coremldata.bin"))
    updatable = os.path.isdir(os.path.join(folder, "updateParameters"))
    if os.path.isfile(os.path.join(folder, "metadata.json")):
        meta_where = f"{where}/metadata.json"
        meta = read_metadata_json(inside(folder, "metadata.json", where), meta_where)
        fill_description(model.description, meta, meta_where)
        updatable = updatable or meta.get("isUpdatable") in ("1", 1, True)
    model.isUpdatable = updatable
    return model


def _u64s(data: bytes, count: int, where: str) -> tuple[int, ...]:
    if len(data) != 8 * count:
        raise MLCIOError(f"{where}: the trailer after the description is {len(data)} bytes, not {8 * count}")
    return struct.unpack(f"<{count}Q", data)


def _pipeline_classifier(folder: str, where: str, header: dict, payload: bytes, depth: int, read: dict[str, str]):
    model = _base(folder, where, header, payload)
    stages, fmt = _u64s(header["trailer"], 2, f"{where}/coremldata.bin")
    if fmt != header["format"]:
        raise MLCIOError(f"{where}/coremldata.bin: the trailer's format {fmt} differs from the header's {header['format']}")
    if not 0 < stages <= MAX_STAGES:
        raise MLCIOError(f"{where}/coremldata.bin: the pipeline has {stages} stages")
    pipeline = model.pipelineClassifier.pipeline
    for i in range(stages):
        name = f"model{i}"
        stage_folder = inside(folder, name, where)
        if not os.path.isdir(stage_folder):
            raise MLCIOError(f"{where}: the pipeline has {stages} stages but no folder {name}/")
        pipeline.models.add().CopyFrom(load_pipeline(stage_folder, f"{where}/{name}", depth=depth + 1, _read=read))
    return model


class _Fields:
    """Reads a trailer field by field, bounds-checked."""

    def __init__(self, data: bytes, where: str):
        self.data, self.at, self.where = data, 0, where

    def read(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise MLCIOError(f"{self.where}: the trailer ends inside {what} (byte {self.at} of {len(self.data)})")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def expect(self, fmt: str, what: str, seen: int, meaning: str = "") -> int:
        at = self.at
        value = self.read(fmt, what)
        if value != seen:
            raise MLCUnsupportedError(
                f"{self.where}: {what} (trailer byte {at}) is {value}; mlc reads only {seen}{meaning}, "
                "the value every compiled kNN seen holds"
            )
        return value

    def string(self, what: str) -> str:
        n = self.read("<Q", f"the length of {what}")
        if n > len(self.data) - self.at:
            raise MLCIOError(f"{self.where}: {what} is {n} bytes from byte {self.at}, past the end of the trailer ({len(self.data)} bytes)")
        raw = self.data[self.at : self.at + n]
        self.at += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MLCIOError(f"{self.where}: {what} is not UTF-8 ({e})") from e


def _zero_file(folder: str, relative: str, where: str) -> None:
    """A ``coremldata.bin`` that must hold only zeros (what every file seen holds)."""
    path = os.path.join(folder, relative)
    if not os.path.isfile(path):
        return
    full = inside(folder, relative, where)
    size = os.path.getsize(full)
    if size > 4096:
        raise MLCUnsupportedError(f"{where}/{relative}: {size} bytes where mlc knows only 8 zero bytes (stored examples?)")
    with open(full, "rb") as f:
        data = f.read()
    if any(data):
        raise MLCUnsupportedError(
            f"{where}/{relative}: holds data mlc cannot read (8 zero bytes in every compiled kNN seen; "
            "a kNN that stores examples is not read)"
        )


def _knn_classifier(folder: str, where: str, header: dict, payload: bytes):
    """A ``kNearestNeighborsClassifier`` (see the module docstring for the trailer)."""
    model = _base(folder, where, header, payload)
    knn = model.kNearestNeighborsClassifier
    t = _Fields(header["trailer"], f"{where}/coremldata.bin")
    dims = t.read("<Q", "the number of dimensions")
    if not 0 < dims <= 1 << 24:
        raise MLCIOError(f"{t.where}: the kNN has {dims} dimensions")
    t.expect("<I", "the index type", KNN_LINEAR_INDEX, " (linearIndex)")
    t.expect("<I", "the label type", KNN_STRING_LABELS, " (string labels)")
    t.expect("<Q", "the number of stored examples", 0, " (an empty index)")
    t.expect("<I", "an unknown field", 0)
    t.expect("<I", "an unknown field", 110, " (squaredEuclideanDistance?)")
    t.expect("<I", "an unknown field", 0)
    default = t.string("the default label")
    t.expect("<Q", "the weighting scheme", KNN_INVERSE_DISTANCE, " (inverseDistanceWeighting)")
    if t.at != len(t.data):
        raise MLCIOError(f"{t.where}: {len(t.data) - t.at} unexpected bytes after the kNN trailer's last field")
    index = knn.nearestNeighborsIndex
    index.numberOfDimensions = dims
    index.linearIndex.SetInParent()
    index.squaredEuclideanDistance.SetInParent()
    knn.stringClassLabels.SetInParent()
    knn.defaultStringLabel = default
    knn.inverseDistanceWeighting.SetInParent()
    _zero_file(folder, os.path.join("modelParameters", "coremldata.bin"), where)
    _zero_file(folder, os.path.join("updateParameters", "coremldata.bin"), where)
    k_path = os.path.join("modelParameters", "numberOfNeighbors", "coremldata.bin")
    if not os.path.isfile(os.path.join(folder, k_path)):
        raise MLCIOError(f"{where}: the kNN has no {k_path}, so its number of neighbours is unknown")
    full = inside(folder, k_path, where)
    if os.path.getsize(full) > 4096:
        raise MLCIOError(f"{where}/{k_path}: {os.path.getsize(full)} bytes is too large for a number of neighbours")
    with open(full, "rb") as f:
        data = f.read()
    try:
        knn.numberOfNeighbors.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError or RuntimeError depending on backend
        raise MLCIOError(f"{where}/{k_path}: not an Int64Parameter protobuf ({e})") from e
    if knn.numberOfNeighbors.defaultValue <= 0:
        raise MLCIOError(f"{where}/{k_path}: the number of neighbours is {knn.numberOfNeighbors.defaultValue}")
    return model
