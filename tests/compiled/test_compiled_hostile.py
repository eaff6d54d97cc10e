"""Hostile compiled folders: what the compiled-folder fuzzer found (scripts/fuzz_load.py
--targets 'mlmodelc_*', fuzz/compiled.md), each fixed and kept here, and the rules every
compiled folder follows: the specification version of the model and of each pipeline stage is
checked as an ``.mlmodel``'s is, and a folder's links never make the loader leave it or read a
folder twice.

Every case must end in an ``mlc.MLCError``; the message names the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

import mlc
from mlc.io.compiled.coremldata import read_coremldata
from mlc.io.compiled.folder import load_compiled
from mlc.runtime import limits
from mlc.testing import fuzz

pytestmark = pytest.mark.hostile

TOKENS = "fluidaudio_token_duration/TokenDurationPrediction.mlmodelc"
MNIST = "mnist_classifier/MNISTClassifier.mlmodelc"
DRAWING = "updatable_drawing_classifier/UpdatableDrawingClassifier.mlmodelc"
MEL = "parse_only/whisper_tiny_en_melspectrogram"


def copy_of(testdata, name: str, tmp_path) -> str:
    """A writable copy of a compiled test folder."""
    source = testdata / name
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    target = str(tmp_path / os.path.basename(name.rstrip("/")))
    if not target.endswith(".mlmodelc"):
        target += ".mlmodelc"
    shutil.copytree(source, target)
    for root, dirs, files in os.walk(target):
        for entry in (*dirs, *files):
            os.chmod(os.path.join(root, entry), 0o755 if entry in dirs else 0o644)
    return target


def edit_json(path: str, change) -> None:
    with open(path) as f:
        value = json.load(f)
    value = change(value) or value
    with open(path, "w") as f:
        json.dump(value, f)


def set_version(path: str, version: int) -> None:
    """Write ``version`` into a ``coremldata.bin`` header's specification version field."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    kind_end = 0x24 + struct.unpack_from("<Q", data, 0x1C)[0]
    struct.pack_into("<Q", data, kind_end, version)
    with open(path, "wb") as f:
        f.write(data)


def load(folder: str):
    """``mlc.load`` under a time limit: a hang fails the test instead of stalling the suite."""
    with fuzz.time_limit(60):
        return mlc.load(folder, cache_dir=False)


# -- findings of the fuzzer ---------------------------------------------------------------------


def test_a_metadata_schema_entry_named_by_a_list_is_an_io_error(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_tokens/metadata): an output named ``[...]`` in metadata.json
    raised TypeError (unhashable list) while the description from coremldata.bin was completed."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_json(os.path.join(folder, "metadata.json"), lambda m: m[0]["outputSchema"][0].update(name=["var_17"]))
    with pytest.raises(mlc.MLCIOError, match=r"metadata.json: outputSchema: 'name' is list, not a string"):
        load(folder)


def test_a_tensor_type_of_more_than_64_dimensions_is_refused(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_flexible/mil_values): a dictionary key typed
    ``tensor<string, [1, 1, ... 70 ones]>`` passed the size check (one element) and numpy's
    reshape raised ValueError (at most 64 dimensions) when the program was read. The error names
    the line and column where the type starts."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    path = os.path.join(folder, "model.mil")
    with open(path) as f:
        text = f.read()
    rank70 = "[" + ", ".join(["1"] * 70) + "]"
    with open(path, "w") as f:
        f.write(text.replace("dict<tensor<string, []>, ", f"dict<tensor<string, {rank70}>, ", 1))
    with pytest.raises(mlc.MLCIOError, match=r"model.mil:2:19: a tensor<string>: a shape of rank 70; no array has more than 64 dimensions"):
        load(folder)
    with pytest.raises(mlc.MLCParametersError, match="rank 65"):
        limits.check_tensor((1,) * 65, 4, "x")
    limits.check_tensor((1,) * 64, 4, "x")


# -- the specification version (a known gap, issue 21 item 6) -------------------------------------


@pytest.mark.parametrize("name", [TOKENS, MNIST])
def test_a_specification_version_newer_than_core_ml_is_refused(compiled_testdata, tmp_path, name):
    folder = copy_of(compiled_testdata, name, tmp_path)
    set_version(os.path.join(folder, "coremldata.bin"), 11)
    for loader in (load, load_compiled):  # load_compiled checks it itself, not only mlc.load
        with pytest.raises(mlc.MLCUnsupportedError, match="specificationVersion 11 is newer than any Core ML specification"):
            loader(folder)


def test_a_pipeline_stage_newer_than_core_ml_is_refused_naming_the_stage(compiled_testdata, tmp_path):
    folder = copy_of(compiled_testdata, DRAWING, tmp_path)
    assert load(folder).spec.specificationVersion == 4
    set_version(os.path.join(folder, "model1", "coremldata.bin"), 11)
    for loader in (load, load_compiled):
        with pytest.raises(mlc.MLCUnsupportedError, match=r"UpdatableDrawingClassifier.mlmodelc/model1: specificationVersion 11 is newer"):
            loader(folder)


@pytest.mark.parametrize("version", [2**31, 2**32, 2**64 - 1])
def test_an_ml_programs_specification_version_beyond_int32_is_an_io_error(compiled_testdata, tmp_path, version):
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    set_version(os.path.join(folder, "coremldata.bin"), version)
    assert read_coremldata(os.path.join(folder, "coremldata.bin"))[0]["specification_version"] == version
    with pytest.raises(mlc.MLCIOError, match=f"specification version {version} is not a Core ML version"):
        load(folder)


# -- links --------------------------------------------------------------------------------------


def test_pipeline_stages_that_link_to_one_folder_are_refused_not_read_exponentially(compiled_testdata, tmp_path):
    """Thirty nested pipelines whose ``model1`` links to their ``model0``: a few kilobytes that
    would make the loader read 2**30 stages. A folder the load has already read is refused."""
    folder = copy_of(compiled_testdata, DRAWING, tmp_path)
    pipeline_data = os.path.join(folder, "coremldata.bin")
    level = folder
    for _ in range(30):
        inner = os.path.join(level, "inner")
        os.mkdir(inner)
        shutil.copy(pipeline_data, inner)
        os.rename(os.path.join(level, "model0"), os.path.join(inner, "model0"))
        os.rename(os.path.join(level, "model1"), os.path.join(inner, "model1"))
        os.rename(inner, os.path.join(level, "model0"))
        os.symlink("model0", os.path.join(level, "model1"))
        level = os.path.join(level, "model0")
    with pytest.raises(mlc.MLCIOError, match=r"/model1: is the folder .*/model0 again \(a link\)"):
        load(folder)


@pytest.mark.parametrize("target", [".", "..", "model0"])
def test_a_stage_linking_back_into_the_pipeline_is_refused(compiled_testdata, tmp_path, target):
    folder = copy_of(compiled_testdata, DRAWING, tmp_path)
    shutil.rmtree(os.path.join(folder, "model1"))
    if target == "..":
        os.symlink("..", os.path.join(folder, "model1"))
        error, message = mlc.MLCIOError, "leaves the package"
    else:
        os.symlink(target, os.path.join(folder, "model1"))
        error, message = mlc.MLCIOError, r"model1: is the folder .* again \(a link\)"
    with pytest.raises(error, match=message):
        load(folder)


@pytest.mark.parametrize("declared,expect", [(2**40, 7), (99, None), ("7", 7), (-3, 7)])
def test_metadata_json_alone_declares_the_specification_version(compiled_testdata, tmp_path, declared, expect):
    """A folder described by metadata.json alone (no coremldata.bin): its specificationVersion
    beyond int32 raised ValueError (found in review); one that is not an int32 is ignored (the
    version comes from the opset, iOS16 -> 7), one newer than Core ML is refused."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    os.remove(os.path.join(folder, "coremldata.bin"))
    edit_json(os.path.join(folder, "metadata.json"), lambda m: m[0].update(specificationVersion=declared))
    if expect is None:
        with pytest.raises(mlc.MLCUnsupportedError, match=f"specificationVersion {declared} is newer"):
            load(folder)
    else:
        assert load(folder).spec.specificationVersion == expect
