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
from mlc import features as F
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


def load_and_predict(folder: str):
    """``mlc.load`` and ``predict`` on example inputs (as the fuzzer does), under a time limit."""
    with fuzz.time_limit(60):
        model = mlc.load(folder, cache_dir=False)
        return model.predict({name: F.example_value(f) for name, f in model.input_description.items() if not f.optional})


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


# -- ML Programs whose text is valid but whose types or values are not ----------------------------


def edit_mil(folder: str, old: str, new: str) -> None:
    path = os.path.join(folder, "model.mil")
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


VAR_24 = "tensor<int32, [1]> var_24 = reduce_argmax(axis = var_24_axis_0, keep_dims = var_24_keep_dims_0, x = duration_logits_cast_fp16)"


def test_a_program_input_typed_string_where_the_description_has_a_multiarray_is_refused(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_flexible/mil_values): the function's input typed
    ``tensor<string, ...>`` made prediction hand jit an object array (TypeError)."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_mil(folder, "tensor<fp16, [1, 1, 1, 1030]> logits", "tensor<string, [1, 1, 1, 1030]> logits")
    with pytest.raises(mlc.MLCParametersError, match=r"input 'logits': the model description declares a multiArray, but the program's input is tensor<str"):
        load(folder)


def test_a_program_returning_a_string_tensor_is_refused(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_mel/mil_values): an output computed from a string constant
    (``expand_dims(x = conv_1_pad_type_0)``) reached jit as an object array (TypeError)."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_mil(folder, VAR_24, 'tensor<string, []> s = const()[name = tensor<string, []>("s"), val = tensor<string, []>("valid")];\n'
             "            tensor<int32, [1]> var_24 = expand_dims(axes = reduce_max_0_axes_0, x = s)")
    with pytest.raises(mlc.MLCParametersError, match="function 'main' returns 'var_24' as a string tensor"):
        load_and_predict(folder)


def test_a_dictionary_key_that_is_not_a_scalar_is_refused(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_mel/mil_values): buildInfo's keys typed
    ``tensor<string, [0x10]>`` became arrays of 16 strings, unhashable as dictionary keys."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_mil(folder, "dict<tensor<string, []>, ", "dict<tensor<string, [0x10]>, ")
    with pytest.raises(mlc.MLCParametersError, match=r"dictionary key of shape \(16,\), not a scalar"):
        load(folder)


def test_expand_dims_past_64_dimensions_is_refused_before_inserting_them(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_mel/mil_values, reported as a hang): ``expand_dims`` whose
    axes were a computed [201, 3000] tensor inserted 603,000 axes one by one into a list
    (quadratic: minutes) before the reshape refused them."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    n = 300_000
    axes = f'tensor<int32, [{n}]> many = const()[name = tensor<string, []>("many"), val = tensor<int32, [{n}]>([{", ".join(["0"] * n)}])];'
    edit_mil(folder, VAR_24, axes + "\n            tensor<int32, [1]> var_24 = expand_dims(axes = many, x = duration_logits_cast_fp16)")
    with pytest.raises(mlc.MLCError, match=f"expand_dims to rank {n + 1}: no array has more than 64 dimensions"):
        load_and_predict(folder)


# -- files that are not files ---------------------------------------------------------------------


@pytest.mark.parametrize("name,relative", [(MNIST, "coremldata.bin"), (DRAWING, "model0/coremldata.bin")])
def test_a_fifo_in_place_of_a_file_is_refused_not_waited_on(compiled_testdata, tmp_path, name, relative):
    """Found by the fuzzer (mlmodelc_mnist/structure): a FIFO named coremldata.bin in a compiled
    NeuralNetwork folder was opened, and the read waited for a writer forever."""
    folder = copy_of(compiled_testdata, name, tmp_path)
    os.remove(os.path.join(folder, relative))
    os.mkfifo(os.path.join(folder, relative))
    with pytest.raises(mlc.MLCIOError, match=f"{relative}: not a regular file"):
        load(folder)


@pytest.mark.parametrize("name", [MNIST, TOKENS, DRAWING])
def test_no_file_of_a_compiled_folder_is_waited_on(compiled_testdata, tmp_path, name):
    """Each file in turn made a FIFO: the folder loads (a file that may be absent is taken as
    absent) or is refused, and never blocks."""
    folder = copy_of(compiled_testdata, name, tmp_path)
    files = sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)
    for relative in files:
        path = os.path.join(folder, relative)
        shutil.move(path, path + ".saved")
        os.mkfifo(path)
        try:
            load(folder)
        except mlc.MLCError:
            pass
        finally:
            os.remove(path)
            shutil.move(path + ".saved", path)


def test_a_fifo_model_mil_is_not_read(tmp_path):
    from mlc.io.compiled.mil_text import read_mil_file

    os.mkfifo(tmp_path / "model.mil")
    with pytest.raises(mlc.MLCIOError, match="model.mil: not a regular file"):
        read_mil_file(tmp_path / "model.mil")


# -- JSON strings that are not text ---------------------------------------------------------------


@pytest.mark.parametrize("field,message", [("name", "holds a lone surrogate, not text"), ("bottom", "bottom '\\\\ud800' holds a lone surrogate"),
                                           ("type", "holds a lone surrogate, not text"), ("storage", "cannot name a file")])
def test_a_lone_surrogate_in_model_espresso_net_is_an_io_error(compiled_testdata, tmp_path, field, message):
    """Found by the fuzzer (mlmodelc_findfour/net): a layer named ``"\\ud800"`` (a JSON escape of
    a lone surrogate) raised UnicodeEncodeError when the protobuf layer was named; as the
    weight file's name it raised it from os.path."""
    folder = copy_of(compiled_testdata, MNIST, tmp_path)

    def change(net):
        if field == "storage":
            net["storage"] = "\ud800"
        else:
            net["layers"][0][field] = "\ud800"

    edit_json(os.path.join(folder, "model.espresso.net"), change)
    with pytest.raises(mlc.MLCIOError, match=message):
        load(folder)


def test_a_program_version_of_5000_digits_is_a_syntax_error(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_tokens/mil_values): ``program(999...)`` past Python's
    4,300-digit int conversion limit raised ValueError."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_mil(folder, "program(1.0)", "program(" + "9" * 5000 + ")")
    with pytest.raises(mlc.MLCIOError, match=r"model.mil:1:9: program version 9{20}\.\.\. is unknown"):
        load(folder)


def test_an_operation_name_that_is_not_a_scalar_is_refused(compiled_testdata, tmp_path):
    """Found by the fuzzer (mlmodelc_flexible/mil_values): an op's ``name`` typed
    ``tensor<string, [0x10]>`` (16 copies of the name) raised ValueError from ``.item()``."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_mil(folder, 'name = tensor<string, []>("op_3")', 'name = tensor<string, [0x10]>("op_3")')
    with pytest.raises(mlc.MLCParametersError, match=r"a const operation's name is a tensor of shape \(16,\), not a string"):
        load(folder)


@pytest.mark.parametrize("amounts", ["[0, 2147483647]", "[5, 0]", "[0, 4]"])
def test_a_reflect_pad_not_smaller_than_its_axis_is_refused(compiled_testdata, tmp_path, amounts):
    """Found by the fuzzer (mlmodelc_mel/mil_values, reported as a hang): a reflect pad of
    2**31 - 1 made jnp.pad reflect again and again in a Python loop. coremltools' pad: a reflect
    pad is at most the axis' size - 1; one that is (4 on an axis of 5) runs."""
    folder = copy_of(compiled_testdata, TOKENS, tmp_path)
    edit_mil(folder, VAR_24, (
        f'tensor<int32, [2]> p = const()[name = tensor<string, []>("p"), val = tensor<int32, [2]>({amounts})];\n'
        '            tensor<string, []> m = const()[name = tensor<string, []>("m"), val = tensor<string, []>("reflect")];\n'
        '            tensor<fp16, [?]> padded = pad(mode = m, pad = p, x = duration_logits_cast_fp16)[name = tensor<string, []>("padded")];\n'
        "            tensor<int32, [1]> var_24 = reduce_argmax(axis = var_24_axis_0, keep_dims = var_24_keep_dims_0, x = padded)"))
    if amounts == "[0, 4]":
        load_and_predict(folder)
    else:
        with pytest.raises(mlc.MLCError, match=r"reflect pad \(.*\) is not smaller than the padded axes of x \(5,\)"):
            load_and_predict(folder)
