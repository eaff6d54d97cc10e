"""Compiled pipelines and classic models (``model0/``, ``model1/``, ..., kNN stages, root
``coremldata.bin`` files that carry a whole ``Model``).

Oracle: the uncompiled twin ``.mlmodel`` each author shipped, its protobuf and its predictions
and updates under mlc. The updatable drawing classifier (a NeuralNetwork embedding + an empty
updatable kNN) must update like its twin: the same training examples give the same stored
examples and the same predictions after. Create ML's textClassifier and visionFeaturePrint
pipelines are refused by name, as their twins are.
"""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pytest
from PIL import Image

import mlc
from mlc.io.compiled.coremldata import read_coremldata
from mlc.io.compiled.pipeline import load_pipeline
from mlc.io.spec import load_spec

DRAWING = "updatable_drawing_classifier/UpdatableDrawingClassifier"
TEXT = "iclaw_followup_maxent/FollowUpClassifier_MaxEnt"
SCARYCAT = "scarycat_ovr_sphynx_v22/ScaryCatScreeningML_OvR_sphynx_v22"


def paths(testdata, name: str) -> tuple[str, str]:
    folder, twin = str(testdata / f"{name}.mlmodelc"), str(testdata / f"{name}.mlmodel")
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} is absent")
    return folder, twin


def writable_copy(folder: str, tmp_path) -> str:
    target = str(tmp_path / os.path.basename(folder))
    shutil.copytree(folder, target)
    for root, dirs, files in os.walk(target):
        for name in [*dirs, *files, "."]:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    return target


def sketches(kind: str, n: int, seed: int) -> list[Image.Image]:
    """28x28 white-on-black sketches of one kind (lines, boxes, crosses) with random placement."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = np.zeros((28, 28), np.uint8)
        lo, hi = sorted(rng.integers(4, 24, 2))
        hi = max(hi, lo + 6)
        w = int(rng.integers(2, 4))
        if kind == "line":
            a[lo : lo + w, 3:25] = 255
        elif kind == "box":
            a[lo:hi, lo:hi] = 255
            a[lo + w : hi - w, lo + w : hi - w] = 0
        else:
            a[3:25, lo : lo + w] = 255
            a[lo : lo + w, 3:25] = 255
        out.append(Image.fromarray(a, "L"))
    return out


def test_drawing_classifier_is_its_twin(compiled_testdata):
    folder, twin = paths(compiled_testdata, DRAWING)
    spec = load_pipeline(folder, folder)
    reference = load_spec(twin).spec
    assert spec.WhichOneof("Type") == "pipelineClassifier"
    assert (spec.specificationVersion, spec.isUpdatable, spec.description) == (
        reference.specificationVersion, reference.isUpdatable, reference.description,
    )
    stages, twin_stages = spec.pipelineClassifier.pipeline.models, reference.pipelineClassifier.pipeline.models
    assert [s.WhichOneof("Type") for s in stages] == ["neuralNetwork", "kNearestNeighborsClassifier"]
    assert [s.isUpdatable for s in stages] == [s.isUpdatable for s in twin_stages] == [False, True]
    assert stages[0].description == twin_stages[0].description
    assert stages[1] == twin_stages[1]  # the kNN stage, field for field
    assert list(spec.pipelineClassifier.pipeline.names) == list(reference.pipelineClassifier.pipeline.names)


def test_drawing_classifier_predicts_and_updates_like_its_twin(compiled_testdata):
    folder, twin = paths(compiled_testdata, DRAWING)
    try:
        compiled = mlc.load(folder)
    except mlc.MLCError as e:
        if "not an .mlpackage" not in str(e) and "not supported yet" not in str(e):
            raise
        compiled = mlc.load(load_pipeline(folder, folder))  # mlc.load does not read .mlmodelc yet
    reference = mlc.load(twin)
    kinds = ("line", "box", "cross")
    queries = [image for i, kind in enumerate(kinds) for image in sketches(kind, 2, seed=100 + i)]
    for image in queries[:2]:  # empty kNN: the default label, as the twin
        assert compiled.predict({"drawing": image}) == reference.predict({"drawing": image}) == {
            "label": "unknown", "labelProbs": {"unknown": 1.0},
        }
    examples = [{"drawing": image, "label": kind} for i, kind in enumerate(kinds) for image in sketches(kind, 4, seed=i)]
    updated, updated_twin = mlc.update(compiled, examples), mlc.update(reference, examples)
    assert updated.state == updated_twin.state == "completed"
    assert updated.result.metrics == updated_twin.result.metrics == {"examples": 12}
    knn = updated.model.spec.pipelineClassifier.pipeline.models[1].kNearestNeighborsClassifier
    knn_twin = updated_twin.model.spec.pipelineClassifier.pipeline.models[1].kNearestNeighborsClassifier
    assert list(knn.stringClassLabels.vector) == list(knn_twin.stringClassLabels.vector)
    stored = np.array([s.vector for s in knn.nearestNeighborsIndex.floatSamples])
    stored_twin = np.array([s.vector for s in knn_twin.nearestNeighborsIndex.floatSamples])
    np.testing.assert_allclose(stored, stored_twin, rtol=1e-5, atol=1e-6)
    labels = []
    for image in queries:
        a, b = updated.model.predict({"drawing": image}), updated_twin.model.predict({"drawing": image})
        assert a["label"] == b["label"]
        assert a["labelProbs"].keys() == b["labelProbs"].keys()
        for key in b["labelProbs"]:
            assert a["labelProbs"][key] == pytest.approx(b["labelProbs"][key], rel=1e-5, abs=1e-6)
        labels.append(a["label"])
    assert len(set(labels)) > 1  # the examples taught it something


@pytest.mark.parametrize(
    "name, type_name, framework",
    [(TEXT, "textClassifier", "Natural Language framework"), (SCARYCAT, "visionFeaturePrint", "Vision framework")],
)
def test_apple_framework_models_are_their_twins_and_refused_by_name(compiled_testdata, name, type_name, framework):
    folder, twin = paths(compiled_testdata, name)
    spec = load_pipeline(folder, folder)
    assert spec == load_spec(twin).spec  # the whole Model, stages and all
    with pytest.raises(mlc.MLCUnsupportedError) as twin_error:
        mlc.load(twin)
    assert type_name in str(twin_error.value) and framework in str(twin_error.value)
    refusal = str(twin_error.value).removeprefix(twin)
    with pytest.raises(mlc.MLCUnsupportedError) as error:
        mlc.load(spec)
    assert str(error.value).removeprefix("<in-memory model>") == refusal
    try:
        mlc.load(folder)
    except mlc.MLCUnsupportedError as e:
        if "not supported yet" not in str(e):
            assert str(e) == folder + refusal
    else:
        raise AssertionError(f"mlc.load({folder!r}) did not refuse a {type_name}")


# -- malformed kNN stages and pipelines ----------------------------------------------------------------
def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _knn_trailer_offset(path: str) -> int:
    header, _ = read_coremldata(path)
    return header["payload_offset"] + header["payload_length"]


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        (16, (3).to_bytes(8, "little"), mlc.MLCUnsupportedError, r"number of stored examples \(trailer byte 16\) is 3; mlc reads only 0"),
        (12, (101).to_bytes(4, "little"), mlc.MLCUnsupportedError, r"label type \(trailer byte 12\) is 101; mlc reads only 100"),
        (36, (999).to_bytes(8, "little"), mlc.MLCIOError, r"the default label is 999 bytes from byte 44, past the end"),
        (51, (0).to_bytes(8, "little"), mlc.MLCUnsupportedError, r"weighting scheme \(trailer byte 51\) is 0"),
    ],
    ids=["stored examples", "int64 labels", "default label past the end", "another weighting"],
)
def test_knn_trailer_fields_mlc_cannot_read_are_refused(compiled_testdata, tmp_path, field, value, error, message):
    folder = writable_copy(paths(compiled_testdata, DRAWING)[0], tmp_path)
    data = os.path.join(folder, "model1", "coremldata.bin")
    _patch(data, _knn_trailer_offset(data) + field, value)
    with pytest.raises(error, match=message):
        load_pipeline(folder, "Drawing")


def test_stored_examples_missing_stages_and_nesting_are_refused(compiled_testdata, tmp_path):
    folder = writable_copy(paths(compiled_testdata, DRAWING)[0], tmp_path)
    _patch(os.path.join(folder, "model1", "modelParameters", "coremldata.bin"), 0, b"\x01")
    with pytest.raises(mlc.MLCUnsupportedError, match=r"model1/modelParameters/coremldata.bin: holds data mlc cannot read"):
        load_pipeline(folder, "Drawing")
    _patch(os.path.join(folder, "model1", "modelParameters", "coremldata.bin"), 0, b"\x00")
    with open(os.path.join(folder, "model1", "modelParameters", "numberOfNeighbors", "coremldata.bin"), "wb") as f:
        f.write(b"\xff\xff")
    with pytest.raises(mlc.MLCIOError, match="numberOfNeighbors/coremldata.bin: not an Int64Parameter protobuf"):
        load_pipeline(folder, "Drawing")
    shutil.rmtree(os.path.join(folder, "model1"))
    with pytest.raises(mlc.MLCIOError, match=r"Drawing: the pipeline has 2 stages but no folder model1/"):
        load_pipeline(folder, "Drawing")
    with pytest.raises(mlc.MLCParametersError, match="nest more than"):
        load_pipeline(folder, "Drawing", depth=10_000)
