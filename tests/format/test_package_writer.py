"""Saving ML Programs with new weights: ``BlobWriter``, ``write_mlpackage`` / ``write_mlmodel``
and ``mlc.frontends.mil.writeback``.

Oracles: coremltools' C++ blob writer and reader (``libmilstoragepython``), its package reader
(``libmodelpackage``), ``MLModel`` and its MIL proto loader (``frontend/milproto``), and torch
computing the network with the changed weights.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import shutil
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

import mlc
from mlc.io.blob import BlobFile, BlobWriter
from mlc.io.spec import LoadedSpec
from mlc.io.writer import write_mlmodel, write_mlpackage
from mlc.frontends.mil.writeback import mlprogram_with_params, save_mlprogram

X = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)


# -- fixtures: tiny models made with coremltools -------------------------------------------------
@pytest.fixture(scope="module")
def storage(ct):
    from coremltools import libmilstoragepython

    return libmilstoragepython


@pytest.fixture(scope="module")
def torch_net():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    return net, torch.jit.trace(net, torch.zeros(1, 8))


def _convert(ct, traced, target, precision):
    return ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=(1, 8))],
        convert_to="mlprogram",
        minimum_deployment_target=target,
        compute_precision=precision,
    )


@pytest.fixture(scope="module")
def models(ct, torch_net, tmp_path_factory):
    """Saved packages: fp32 and fp16 (iOS15), int8 weights (iOS16 attributes, iOS18 inputs),
    and a two-function package sharing one weight file."""
    import coremltools.optimize.coreml as cto

    folder = tmp_path_factory.mktemp("models")
    quantize = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(weight_threshold=0))
    made = {
        "fp32": _convert(ct, torch_net[1], ct.target.iOS15, ct.precision.FLOAT32),
        "fp16": _convert(ct, torch_net[1], ct.target.iOS15, ct.precision.FLOAT16),
        "int8_ios16": cto.linear_quantize_weights(_convert(ct, torch_net[1], ct.target.iOS16, ct.precision.FLOAT32), quantize),
        "int8_ios18": cto.linear_quantize_weights(_convert(ct, torch_net[1], ct.target.iOS18, ct.precision.FLOAT32), quantize),
    }
    paths = {}
    for name, model in made.items():
        paths[name] = str(folder / f"{name}.mlpackage")
        model.save(paths[name])
    functions = ct.utils.MultiFunctionDescriptor()
    functions.add_function(paths["fp32"], "main", "a")
    functions.add_function(paths["fp32"], "main", "b")
    functions.default_function_name = "a"
    paths["multi"] = str(folder / "multi.mlpackage")
    ct.utils.save_multifunction(functions, paths["multi"])
    return paths


def _torch_out(torch_net, params: dict[str, np.ndarray], names: dict[str, str]) -> np.ndarray:
    """The network's output on ``X`` with its weights set from ``params`` (``names``: torch -> mlc)."""
    import torch

    net = copy.deepcopy(torch_net[0])
    net.load_state_dict({k: torch.from_numpy(np.array(params[names[k]], np.float32)) for k in net.state_dict()})
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


def _names(params: dict) -> dict[str, str]:
    """torch state-dict key -> mlc params key (``var_0_weight`` or ``var_0_weight_to_fp16``)."""
    def find(layer, kind):
        return next(k for k in params if k.startswith(f"var_{layer}_{kind}"))

    return {f"{layer}.{kind}": find(layer, kind) for layer in (0, 2) for kind in ("weight", "bias")}


def _ct_consts(ct, path: str, function: str = "main") -> dict[str, np.ndarray]:
    """Every const of ``function`` as coremltools' own MIL proto loader reads it."""
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    spec = ct.utils.load_spec(path)
    weights = os.path.join(path, "Data", "com.apple.CoreML", "weights")
    program = milproto_load.load(spec, spec.specificationVersion, weights)
    ops = program.functions[function].find_ops(op_type="const")
    return {op.outputs[0].name: np.asarray(op.outputs[0].val) for op in ops}


def _tree(folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, folder)] = f.read()
    return files


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# -- BlobWriter ----------------------------------------------------------------------------------
BLOBS = [
    ("fp32", np.array([0.0, 1.0, -2.5, np.inf], np.float32), "float"),
    ("fp16", np.array([1.0, -0.5, 65504.0], np.float16), "fp16"),
    ("uint4", np.array([1, 2, 3, 15, 0], np.uint8), "uint4"),  # 20 bits: 4 padding bits
    ("int8", np.arange(-64, 65, dtype=np.int8), "int8"),
    ("int32", np.array([-(2**31), 7], np.int32), "int32"),
    ("uint1", np.array([1, 0, 1], np.uint8), "uint1"),
]


def _pack(values: np.ndarray, nbits: int) -> tuple[bytes, int]:
    """LSB-first packing and its padding bits (``StorageFormat.hpp``), written out by hand."""
    acc = sum((int(v) & ((1 << nbits) - 1)) << (i * nbits) for i, v in enumerate(values))
    size = -(-len(values) * nbits // 8)
    return acc.to_bytes(size, "little"), size * 8 - len(values) * nbits


def _add_all(writer: BlobWriter) -> list[int]:
    offsets = []
    for name, values, _ in BLOBS:
        if name in ("uint4", "uint1"):
            data, padding = _pack(values, int(name[-1]))
            offsets.append(writer.add(name, data, padding_bits=padding))
        else:
            offsets.append(writer.add(name, values.tobytes()))
    return offsets


def test_blob_writer_bytes_are_coremltools_bytes(storage, tmp_path):
    ct_writer = storage._BlobStorageWriter(str(tmp_path / "ct.bin"))
    ct_offsets = [
        getattr(ct_writer, f"write_{suffix}_data")(values.view(np.uint16) if name == "fp16" else values)
        for name, values, suffix in BLOBS
    ]
    del ct_writer  # flushes and closes the file
    writer = BlobWriter()
    assert _add_all(writer) == ct_offsets
    assert writer.tobytes() == (tmp_path / "ct.bin").read_bytes()


def test_blob_writer_read_back_by_coremltools_and_blob_file(storage, tmp_path):
    path = tmp_path / "weight.bin"
    writer = BlobWriter()
    offsets = _add_all(writer)
    bf16 = np.array([1.5, -3.0], ml_dtypes.bfloat16)  # no coremltools writer or reader for bf16
    bf16_offset = writer.add(5, bf16)
    writer.write(path)
    reader, blob = storage._BlobStorageReader(str(path)), BlobFile(path)
    assert blob.count == len(BLOBS) + 1
    for offset, (name, values, suffix) in zip(offsets, BLOBS):
        expected = values.view(np.uint16) if name == "fp16" else values  # coremltools reads fp16 bits
        np.testing.assert_array_equal(getattr(reader, f"read_{suffix}_data")(offset), expected)
        _same_bits(blob.read(offset, name, values.shape), values)
    _same_bits(blob.read(bf16_offset, "bf16", (2,)), bf16)


def test_blob_writer_without_blobs_is_a_header():
    assert BlobWriter().tobytes() == (0).to_bytes(4, "little") + (2).to_bytes(4, "little") + bytes(56)


@pytest.mark.parametrize(
    "dtype, data, padding",
    [("fp64", b"\0" * 8, 0), (99, b"", 0), ("fp32", b"\0" * 6, 0), ("fp16", b"\0" * 2, 3), ("uint4", b"\0", 8)],
)
def test_blob_writer_refuses_what_the_format_cannot_hold(dtype, data, padding):
    with pytest.raises(mlc.MLCParametersError):
        BlobWriter().add(dtype, data, padding_bits=padding)


# -- package and file writers --------------------------------------------------------------------
def test_package_layout_is_what_coremltools_reads(ct, models, tmp_path):
    source = mlc.load(models["fp32"])
    out = str(tmp_path / "copy.mlpackage")
    spec, weights = mlprogram_with_params(source.loaded_spec, {})
    write_mlpackage(out, spec, weights)
    from coremltools import libmodelpackage

    package = libmodelpackage.ModelPackage(out)
    assert libmodelpackage.ModelPackage.isValid(out)
    assert os.path.samefile(package.getRootModel().path(), os.path.join(out, "Data", "com.apple.CoreML", "model.mlmodel"))
    ours, theirs = (json.load(open(os.path.join(p, "Manifest.json"))) for p in (out, models["fp32"]))

    def entries(manifest):
        items = manifest["itemInfoEntries"]
        return manifest["fileFormatVersion"], items[manifest["rootModelIdentifier"]], sorted(items.values(), key=str)

    assert entries(ours) == entries(theirs)
    assert ct.models.MLModel(out, skip_model_load=True).get_spec() == spec
    # Unchanged weights, copied in program order: coremltools' own weight file, byte for byte.
    assert open(_weight_file(out), "rb").read() == open(_weight_file(models["fp32"]), "rb").read()


def test_package_without_weights_has_no_weights_item(ct, tmp_path):
    spec = ct.proto.Model_pb2.Model(specificationVersion=1)
    spec.identity.SetInParent()
    out = str(tmp_path / "identity.mlpackage")
    write_mlpackage(out + "/", spec)  # a trailing separator names the same package
    manifest = json.load(open(os.path.join(out, "Manifest.json")))
    assert [e["name"] for e in manifest["itemInfoEntries"].values()] == ["model.mlmodel"]
    assert sorted(_tree(out)) == ["Data/com.apple.CoreML/model.mlmodel", "Manifest.json"]
    assert mlc.load(out).spec == spec


def test_write_mlmodel_round_trips_and_checks_suffixes(ct, models, tmp_path):
    spec = ct.proto.Model_pb2.Model(specificationVersion=1)
    spec.identity.SetInParent()
    write_mlmodel(tmp_path / "identity.mlmodel", spec)
    assert ct.utils.load_spec(str(tmp_path / "identity.mlmodel")) == spec
    with pytest.raises(mlc.MLCIOError, match=r"must end in \.mlmodel"):
        write_mlmodel(tmp_path / "identity.mlpackage", spec)
    with pytest.raises(mlc.MLCIOError, match=r"must end in \.mlpackage"):
        write_mlpackage(tmp_path / "identity.mlmodel", spec)
    program = mlc.load(models["fp32"]).spec
    for path in (tmp_path / "p.mlmodel", tmp_path / "p.bin"):
        with pytest.raises(mlc.MLCIOError, match="ML Program can only be saved as an .mlpackage"):
            write_mlmodel(path, program)
    with pytest.raises(mlc.MLCIOError, match="ML Program can only be saved as an .mlpackage"):
        write_mlpackage(tmp_path / "p.mlmodel", program)
    pipeline = ct.proto.Model_pb2.Model(specificationVersion=program.specificationVersion)
    pipeline.pipeline.models.add().CopyFrom(program)
    with pytest.raises(mlc.MLCIOError, match="ML Program can only be saved as an .mlpackage"):
        write_mlmodel(tmp_path / "pipeline.mlmodel", pipeline)
    assert sorted(os.listdir(tmp_path)) == ["identity.mlmodel"]


def test_package_writer_refuses_to_replace_a_file_or_a_foreign_folder(ct, tmp_path):
    spec = ct.proto.Model_pb2.Model(specificationVersion=1)
    spec.identity.SetInParent()
    (tmp_path / "file.mlpackage").write_bytes(b"mine")
    (tmp_path / "folder.mlpackage").mkdir()
    (tmp_path / "folder.mlpackage" / "notes.txt").write_text("mine")
    for name in ("file.mlpackage", "folder.mlpackage"):
        with pytest.raises(mlc.MLCIOError, match="cannot save to"):
            write_mlpackage(tmp_path / name, spec)
    assert (tmp_path / "file.mlpackage").read_bytes() == b"mine"
    assert _tree(str(tmp_path / "folder.mlpackage")) == {"notes.txt": b"mine"}


# -- writing params back -------------------------------------------------------------------------
def test_fp32_changed_weights_match_torch(ct, models, torch_net, tmp_path):
    source = mlc.load(models["fp32"])
    before = source.spec.SerializeToString()
    names = _names(source.params)
    changed = {k: np.asarray(v) * 2 for k, v in source.params.items() if k.endswith("weight")}
    out = str(tmp_path / "fp32.mlpackage")
    save_mlprogram(source.loaded_spec, changed, out)
    assert source.spec.SerializeToString() == before  # the loaded spec is never changed

    ct.models.MLModel(out, skip_model_load=True)
    ct_consts, ct_original = _ct_consts(ct, out), _ct_consts(ct, models["fp32"])
    for key, value in source.params.items():
        _same_bits(ct_consts[key], changed.get(key, value))
    assert ct_consts.keys() == ct_original.keys()
    for key in ct_consts.keys() - changed.keys():  # biases and small consts: bit-exact
        _same_bits(ct_consts[key], ct_original[key])

    saved = mlc.load(out)
    expected = _torch_out(torch_net, {**{k: np.asarray(v) for k, v in source.params.items()}, **changed}, names)
    np.testing.assert_allclose(saved.predict({"x": X})["var_10"], expected, rtol=1e-5, atol=1e-5)


def test_every_param_of_both_const_kinds_is_written(ct, models, tmp_path):
    """fp32 consts live in the blob (weights, first bias) and inline (``floats``, last bias)."""
    source = mlc.load(models["fp32"])
    kinds = {op.outputs[0].name: op.attributes["val"].WhichOneof("value") for op in _const_ops(source.spec)}
    assert {kinds[k] for k in source.params} == {"blobFileValue", "immediateValue"}
    changed = {k: np.asarray(v) + 1 for k, v in source.params.items()}
    spec, weights = mlprogram_with_params(source.loaded_spec, changed)
    assert len(weights) == sum(kind == "blobFileValue" for kind in kinds.values())
    out = str(tmp_path / "all.mlpackage")
    write_mlpackage(out, spec, weights)
    ct_consts = _ct_consts(ct, out)
    for key, value in changed.items():
        _same_bits(ct_consts[key], value.astype(np.float32))


def _const_ops(spec, function: str = "main"):
    block = next(iter(spec.mlProgram.functions[function].block_specializations.values()))
    return [op for op in block.operations if op.type == "const"]


def test_fp16_weights_are_rounded_to_fp16(ct, models, torch_net, tmp_path):
    source = mlc.load(models["fp16"])
    kinds = {op.outputs[0].name: op.attributes["val"].WhichOneof("value") for op in _const_ops(source.spec)}
    assert {kinds[k] for k in source.params} == {"blobFileValue", "immediateValue"}  # fp16 inline: bytes
    changed = {k: np.asarray(v) * 2.001 for k, v in source.params.items()}  # not exact in fp16
    out = str(tmp_path / "fp16.mlpackage")
    save_mlprogram(source.loaded_spec, changed, out)

    rounded = {k: v.astype(np.float16) for k, v in changed.items()}
    ct_consts = _ct_consts(ct, out)
    for key, value in rounded.items():
        _same_bits(ct_consts[key], value)
    saved = mlc.load(out)
    for key, value in rounded.items():
        _same_bits(np.asarray(saved.params[key]).astype(np.float16), value)
    (fn, _), (saved_fn, saved_params) = source.jax_function(), saved.jax_function()
    in_memory = jax.jit(fn)({k: jax.numpy.asarray(v, source.params[k].dtype) for k, v in rounded.items()}, {"x": X})
    _same_bits(jax.jit(saved_fn)(saved_params, {"x": X})["var_10"], in_memory["var_10"])
    expected = _torch_out(torch_net, rounded, _names(source.params))
    np.testing.assert_allclose(saved.predict({"x": X})["var_10"], expected, rtol=1e-2, atol=1e-2)


def test_fp16_overflow_is_refused(models):
    source = mlc.load(models["fp16"])
    key = next(k for k in source.params if "weight" in k)
    with pytest.raises(mlc.MLCParametersError, match="beyond fp16's range"):
        mlprogram_with_params(source.loaded_spec, {key: np.full(source.params[key].shape, 1e6, np.float32)})


def test_quantized_ios18_data_is_copied_bit_exactly(ct, models, tmp_path):
    """iOS18 constexpr ops take their compressed data as inline blob inputs: copied, not params."""
    source = mlc.load(models["int8_ios18"])
    changed = {"var_0_bias": np.asarray(source.params["var_0_bias"]) - 1}
    out = str(tmp_path / "int8.mlpackage")
    save_mlprogram(source.loaded_spec, changed, out)
    saved = mlc.load(out)
    (fn, params), (saved_fn, saved_params) = source.jax_function(), saved.jax_function()
    _same_bits(jax.jit(saved_fn)(saved_params, {"x": X})["var_10"], jax.jit(fn)({**params, **changed}, {"x": X})["var_10"])
    assert _blobs(out) == _blobs(models["int8_ios18"]) - _blobs(models["int8_ios18"], "var_0_bias") + _blobs(out, "var_0_bias")


def _weight_file(package: str) -> str:
    return os.path.join(package, "Data", "com.apple.CoreML", "weights", "weight.bin")


def _blobs(package: str, const: str | None = None) -> collections.Counter:
    """``(dtype code, bytes, padding bits)`` of every blob the package's program references (or of
    one const's), read with struct and the program's text form, not with mlc's walker."""
    spec = mlc.load(package).spec
    if const is None:
        offsets = {int(m) for m in re.findall(r'blobFileValue \{\s*fileName: "[^"]+"\s*offset: (\d+)', str(spec))}
    else:
        offsets = {op.attributes["val"].blobFileValue.offset for op in _const_ops(spec) if op.outputs[0].name == const}
    data = open(_weight_file(package), "rb").read()
    found = collections.Counter()
    for offset in offsets:
        sentinel, code, size, start, padding = struct.unpack_from("<IIQQQ", data, offset)
        assert sentinel == 0xDEADBEEF
        found[code, data[start : start + size], padding] += 1
    return found


def test_multifunction_packages_keep_sharing_weights(models, tmp_path):
    """Both functions name the same blobs; one changed function gets its own, the other keeps them."""
    source = mlc.load(models["multi"], function_name="b")
    original = BlobFile(_weight_file(models["multi"])).count
    changed = {"var_0_weight": np.asarray(source.params["var_0_weight"]) * 2}
    _, shared = mlprogram_with_params(source.loaded_spec, changed)
    _, split = mlprogram_with_params(source.loaded_spec, changed, function_name="b")
    assert (len(shared), len(split)) == (original, original + 1)
    out = str(tmp_path / "multi.mlpackage")
    save_mlprogram(source.loaded_spec, changed, out, function_name="b")
    a, b = (mlc.load(out, function_name=f) for f in ("a", "b"))
    np.testing.assert_array_equal(np.asarray(b.params["var_0_weight"]), changed["var_0_weight"])
    np.testing.assert_array_equal(np.asarray(a.params["var_0_weight"]), np.asarray(source.params["var_0_weight"]))
    with pytest.raises(mlc.MLCParametersError, match="no function 'c'"):
        mlprogram_with_params(source.loaded_spec, changed, function_name="c")


def test_saving_over_the_loaded_package(models, tmp_path):
    """The new package replaces the one its blobs are being copied from."""
    path = str(tmp_path / "fp32.mlpackage")
    shutil.copytree(models["fp32"], path)
    source = mlc.load(path)
    expected = source.predict({"x": X})["var_10"]
    changed = {"var_2_bias": np.asarray(source.params["var_2_bias"]) + 1}
    save_mlprogram(source.loaded_spec, changed, path)
    np.testing.assert_allclose(mlc.load(path).predict({"x": X})["var_10"], expected + 1, rtol=1e-6, atol=1e-6)
    assert os.listdir(tmp_path) == ["fp32.mlpackage"]


# -- refusals and atomicity ------------------------------------------------------------------------
def test_compressed_ios16_attributes_are_refused(models, tmp_path):
    source = mlc.load(models["int8_ios16"])
    keys = [k for k in source.params if "@" in k]
    assert keys  # constexpr_affine_dequantize's quantized_data, scale, zero_point
    for key in keys:
        with pytest.raises(mlc.MLCUnsupportedError, match="compressed weights cannot be written back"):
            mlprogram_with_params(source.loaded_spec, {key: np.asarray(source.params[key])})
    out = str(tmp_path / "int8.mlpackage")  # the unchanged bias is fine; the attributes' blobs are copied
    save_mlprogram(source.loaded_spec, {"var_0_bias": np.asarray(source.params["var_0_bias"])}, out)
    assert _blobs(out) == _blobs(models["int8_ios16"])


def test_a_const_feeding_a_constexpr_op_is_refused(ct, models):
    """An iOS18 program whose compressed data is a const op (coremltools inlines it; moved here)."""
    loaded = mlc.load(models["int8_ios18"]).loaded_spec
    spec = ct.proto.Model_pb2.Model()
    spec.CopyFrom(loaded.spec)
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    index, constexpr = next((i, op) for i, op in enumerate(block.operations) if op.type.startswith("constexpr_"))
    binding = constexpr.inputs["data"].arguments[0]
    const = ct.proto.MIL_pb2.Operation(type="const")
    const.outputs.add(name="packed_data", type=binding.value.type)
    const.attributes["val"].CopyFrom(binding.value)
    const.attributes["name"].CopyFrom(ct.converters.mil.backend.mil.helper.create_scalar_value("packed_data"))
    block.operations.insert(index, const)
    binding.name = "packed_data"
    moved = LoadedSpec(spec, loaded.path, loaded.model_dir)
    data = mlc.load(spec, weights_dir=os.path.join(loaded.model_dir, "weights")).params["packed_data"]
    with pytest.raises(mlc.MLCUnsupportedError, match="compressed weights cannot be written back"):
        mlprogram_with_params(moved, {"packed_data": np.asarray(data)})


def test_unknown_keys_shapes_and_models_are_refused(ct, models, tmp_path):
    source = mlc.load(models["fp32"])
    weight = np.asarray(source.params["var_0_weight"])
    with pytest.raises(mlc.MLCParametersError, match="'no_such_const' names no const"):
        mlprogram_with_params(source.loaded_spec, {"no_such_const": weight})
    with pytest.raises(mlc.MLCParametersError, match=r"shape \(8, 16\); the const is declared \(16, 8\)"):
        mlprogram_with_params(source.loaded_spec, {"var_0_weight": weight.T})
    with pytest.raises(mlc.MLCIOError, match="ML Program can only be saved as an .mlpackage"):
        save_mlprogram(source.loaded_spec, {}, tmp_path / "fp32.mlmodel")
    spec = ct.proto.Model_pb2.Model(specificationVersion=1)
    spec.identity.SetInParent()
    with pytest.raises(mlc.MLCUnsupportedError, match="ML Programs only"):
        mlprogram_with_params(LoadedSpec(spec, None, None), {})
    assert os.listdir(tmp_path) == []


def test_a_failed_save_leaves_the_existing_package_and_no_temporary_files(models, tmp_path, monkeypatch):
    path = str(tmp_path / "fp32.mlpackage")
    shutil.copytree(models["fp32"], path)
    before = _tree(path)
    source = mlc.load(models["fp32"])
    weight = np.asarray(source.params["var_0_weight"])
    with pytest.raises(mlc.MLCParametersError):
        save_mlprogram(source.loaded_spec, {"var_2_bias": np.zeros(4), "var_0_weight": weight[:, :4]}, path)

    def fail_midway(self, target):
        with open(target, "wb") as f:
            f.write(b"half a weight file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BlobWriter, "write", fail_midway)
    with pytest.raises(mlc.MLCIOError, match="No space left on device"):
        save_mlprogram(source.loaded_spec, {"var_0_weight": weight * 2}, path)
    assert _tree(path) == before
    assert os.listdir(tmp_path) == ["fp32.mlpackage"]
