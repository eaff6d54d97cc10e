"""Compiled ML Programs (``.mlmodelc`` with ``model.mil``): load, predict, describe, decompile.

The oracles: numpy for the small FluidAudio models (an argmax, a slice-and-argmax, a
transpose), and for the silero VAD models the uncompiled twin ``.mlpackage`` the author
shipped (whose protobuf coremltools wrote) run under mlc, and the twin's op list itself.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
from google.protobuf.json_format import MessageToDict

import mlc
from mlc.cli import main
from mlc.deploy.decompile import decompile
from mlc.io.compiled.coremldata import read_coremldata
from mlc.io.compiled.mil_text import read_mil_file
from mlc.io.spec import load_spec

ML_PROGRAMS = [
    "fluidaudio_argmax",
    "fluidaudio_token_duration",
    "fluidaudio_transpose_encoder",
    "silero_vad_int8",
    "silero_vad_palette_4bit",
    "silero_vad_unified_v6",
]
WITH_TWIN = ["silero_vad_int8", "silero_vad_palette_4bit", "silero_vad_unified_v6"]
PARSE_ONLY = [
    "parakeet_eou_decoder",
    "parakeet_eou_joint_decision",
    "parakeet_eou_preprocessor",
    "whisper_large_v3_turbo_954MB_prefill",
    "whisper_tiny_en_melspectrogram",
]
_DTYPES = {65552: np.float16, 65568: np.float32, 131104: np.int32, 65600: np.float64}
_MODELS: dict[str, mlc.Model] = {}


def find_one(root, pattern: str) -> str | None:
    hits = sorted(glob.glob(str(root / pattern)))
    return hits[0] if hits else None


def folder(testdata, name: str) -> str:
    path = find_one(testdata, f"{name}/*.mlmodelc")
    if path is None:
        pytest.skip(f"{name}: no .mlmodelc in {testdata}")
    return path


def twin(testdata, name: str) -> str:
    return find_one(testdata, f"{name}/*.mlpackage")


def model(path: str) -> mlc.Model:
    """One ``mlc.Model`` per path for the whole module (loading compiles)."""
    if path not in _MODELS:
        _MODELS[path] = mlc.load(path)
    return _MODELS[path]


def random_inputs(path: str, seed: int = 0, batch: int | None = None) -> dict:
    """Random inputs of the declared (default) shapes and dtypes, from a fixed seed."""
    rng = np.random.default_rng(seed)
    out = {}
    for feature in load_spec(path).spec.description.input:
        array = feature.type.multiArrayType
        shape = ([batch] if batch else []) + list(array.shape)
        out[feature.name] = rng.standard_normal(shape).astype(_DTYPES[array.dataType])
    return out


def assert_close(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        rtol = 1e-3 if want.dtype == np.float16 else 1e-5
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=rtol * 1e-2, err_msg=name)


# -- loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ML_PROGRAMS)
def test_every_compiled_ml_program_loads(compiled_testdata, name):
    path = folder(compiled_testdata, name)
    loaded = load_spec(path)
    assert loaded.spec.WhichOneof("Type") == "mlProgram"
    assert os.path.samefile(loaded.model_dir, path)
    header, _ = read_coremldata(os.path.join(path, "coremldata.bin"))
    assert loaded.spec.specificationVersion == header["specification_version"]
    assert model(path).input_description


def test_a_folder_path_with_a_trailing_slash_loads(compiled_testdata):
    path = folder(compiled_testdata, "fluidaudio_argmax")
    logits = np.random.default_rng(1).standard_normal(1025).astype(np.float16)
    loaded = mlc.load(path + "/")
    assert loaded.predict({"logits": logits})["index"][0] == np.argmax(logits)
    assert loaded.name == path


@pytest.mark.parametrize("name", WITH_TWIN)
def test_the_parsed_program_is_the_twins_op_for_op(compiled_testdata, name):
    """The protobuf parsed from model.mil equals the one coremltools wrote in the twin package
    (types, inputs, attributes, immediate values in the same fields, blob offsets)."""
    path = folder(compiled_testdata, name)
    mine = read_mil_file(os.path.join(path, "model.mil"), path).functions["main"]
    theirs = load_spec(twin(compiled_testdata, name)).spec.mlProgram.functions["main"]
    assert mine.opset == theirs.opset
    assert {i.name: MessageToDict(i) for i in mine.inputs} == {i.name: MessageToDict(i) for i in theirs.inputs}
    mine_block, their_block = mine.block_specializations[mine.opset], theirs.block_specializations[theirs.opset]
    assert list(mine_block.outputs) == list(their_block.outputs)
    by_outputs = {tuple(o.name for o in op.outputs): op for op in mine_block.operations}
    assert len(by_outputs) == len(their_block.operations)
    for op in their_block.operations:
        assert MessageToDict(by_outputs[tuple(o.name for o in op.outputs)]) == MessageToDict(op)


# -- predicting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", WITH_TWIN)
def test_a_compiled_model_predicts_what_its_twin_predicts(compiled_testdata, name):
    path = folder(compiled_testdata, name)
    inputs = random_inputs(path)
    assert_close(model(path).predict(inputs), model(twin(compiled_testdata, name)).predict(inputs))


def test_fluidaudio_models_against_numpy(compiled_testdata):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal(1025).astype(np.float16)
    out = model(folder(compiled_testdata, "fluidaudio_argmax")).predict({"logits": logits})
    assert out["index"].tolist() == [np.argmax(logits)] and out["score"].tolist() == [logits.max()]

    logits = rng.standard_normal((1, 1, 1, 1030)).astype(np.float16)
    out = model(folder(compiled_testdata, "fluidaudio_token_duration")).predict({"logits": logits})
    flat = logits.reshape(-1)
    assert out["var_17"].tolist() == [np.argmax(flat[:1025])]
    assert out["reduce_max_0"].tolist() == [flat[:1025].max()]
    assert out["var_24"].tolist() == [np.argmax(flat[1025:])]


def test_flexible_shapes_of_a_compiled_model(compiled_testdata):
    """TransposeEncoder declares x as 1 x 1...2048 x 1...2048 (FlexibleShapeInformation, shapeRange)."""
    m = model(folder(compiled_testdata, "fluidaudio_transpose_encoder"))
    for shape in [(1, 1, 1), (1, 7, 5), (1, 300, 2)]:
        x = np.random.default_rng(3).standard_normal(shape).astype(np.float16)
        np.testing.assert_array_equal(m.predict({"x": x})["var_4"], x.transpose(0, 2, 1))
    with pytest.raises(mlc.MLCError):
        m.predict({"x": np.zeros((1, 2049, 1), np.float16)})


def test_predict_batch_and_jax_function_as_on_the_twin(compiled_testdata):
    name = "silero_vad_unified_v6"
    path, package = folder(compiled_testdata, name), twin(compiled_testdata, name)
    batch = random_inputs(path, seed=4, batch=3)
    assert_close(model(path).predict_batch(batch), model(package).predict_batch(batch))
    one = random_inputs(path, seed=5)
    fn, params = model(path).jax_function()
    out = {k: np.asarray(v) for k, v in fn(params, one).items()}
    fn_twin, params_twin = model(package).jax_function()
    expected = {k: np.asarray(v) for k, v in fn_twin(params_twin, one).items()}
    assert_close(out, expected)


# -- describing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PARSE_ONLY)
def test_every_parse_only_program_parses_and_mlc_info_describes_it(compiled_testdata, name, capsys):
    path = str(compiled_testdata / "parse_only" / name)
    program = read_mil_file(os.path.join(path, "model.mil"), path)
    assert program.functions["main"].block_specializations
    with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
        meta = json.load(f)[0]
    assert main(["info", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["type"].startswith("mlProgram")
    assert list(report["inputs"]) == [f["name"] for f in meta["inputSchema"]]
    assert list(report["outputs"]) == [f["name"] for f in meta["outputSchema"]]
    assert report["unsupported_ops"] == {}
    assert report["specification_version"] == meta["specificationVersion"]


def test_mlc_info_on_a_compiled_folder(compiled_testdata, capsys):
    path = folder(compiled_testdata, "silero_vad_unified_v6")
    assert main(["info", path + "/"]) == 0
    out = capsys.readouterr().out
    assert "mlProgram (CoreML5), specification version 6" in out
    assert "audio_input: MultiArray (float32 1x576)" in out and "lstm" in out and "unsupported ops: none" in out


def test_mlc_predict_on_a_compiled_folder(compiled_testdata, capsys, tmp_path):
    logits = np.random.default_rng(6).standard_normal(1025).astype(np.float16)
    np.save(tmp_path / "logits.npy", logits)
    path = folder(compiled_testdata, "fluidaudio_argmax")
    assert main(["predict", path, "--input", f"logits={tmp_path / 'logits.npy'}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["index"] == [int(np.argmax(logits))]


def test_the_description_keeps_metadata(compiled_testdata):
    m = model(folder(compiled_testdata, "silero_vad_unified_v6"))
    theirs = load_spec(twin(compiled_testdata, "silero_vad_unified_v6")).spec.description
    mine = load_spec(folder(compiled_testdata, "silero_vad_unified_v6")).spec.description
    assert mine.metadata.author == theirs.metadata.author and mine.metadata.versionString == "6.0.0"
    assert dict(mine.metadata.userDefined) == dict(theirs.metadata.userDefined)
    assert [f.name for f in mine.input] == [f.name for f in theirs.input] == list(m.input_description)


# -- decompiling --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ML_PROGRAMS)
def test_decompiled_packages_load_in_coremltools_and_predict_identically(compiled_testdata, name, tmp_path, ct):
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    path = folder(compiled_testdata, name)
    report = decompile(path, tmp_path / f"{name}.mlpackage")
    assert report.kind == "mlProgram" and os.path.isfile(os.path.join(report.path, "Manifest.json"))
    loaded = ct.models.MLModel(report.path, skip_model_load=True)
    spec = loaded.get_spec()
    milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=loaded.weights_dir)
    original = load_spec(path).spec
    assert spec.description == original.description
    assert not any(f.attributes for f in spec.mlProgram.functions.values())  # coremlc's FlexibleShapeInformation left out
    inputs = random_inputs(path, seed=7)
    assert_close(mlc.load(report.path).predict(inputs), model(path).predict(inputs))


def test_mlc_decompile_command(compiled_testdata, tmp_path, capsys):
    path = folder(compiled_testdata, "fluidaudio_token_duration")
    out = tmp_path / "TokenDuration.mlpackage"
    assert main(["decompile", path, "-o", str(out)]) == 0
    assert f"wrote {out} (mlProgram, specification version 7" in capsys.readouterr().out
    assert load_spec(str(out)).spec.description.metadata.author == "FluidAudio"


def test_decompile_refuses_what_is_not_a_compiled_folder(compiled_testdata, tmp_path):
    with pytest.raises(mlc.MLCError, match="not a compiled .mlmodelc folder"):
        decompile(tmp_path, tmp_path / "x.mlpackage")
    with pytest.raises(mlc.MLCError, match="an ML Program can only be saved as an .mlpackage"):
        decompile(folder(compiled_testdata, "fluidaudio_argmax"), tmp_path / "x.mlmodel")
    assert not os.listdir(tmp_path)


def test_flexible_shape_information_fills_a_description_that_lacks_it(compiled_testdata, tmp_path):
    """coremlc's FlexibleShapeInformation function attribute is taken out of the program (coremltools'
    MIL loader refuses function attributes); a description from metadata.json without shapeRange
    takes the ranges from it."""
    import shutil

    copy = tmp_path / "Preprocessor.mlmodelc"
    shutil.copytree(compiled_testdata / "parse_only" / "parakeet_eou_preprocessor", copy)
    meta = json.loads((copy / "metadata.json").read_text())
    for entry in meta[0]["inputSchema"]:
        entry.pop("shapeRange", None)
    (copy / "metadata.json").write_text(json.dumps(meta))
    spec = load_spec(str(copy)).spec
    assert not spec.mlProgram.functions["main"].attributes
    ranges = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges
    assert [(r.lowerBound, r.upperBound) for r in ranges] == [(1, 1), (1, 32000)]
