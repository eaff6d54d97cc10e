"""mlc.io.blob.BlobFile against coremltools' own blob writer and reader, and on corrupt files.

The oracle is coremltools' C++ ``_BlobStorageWriter`` (the code that writes every
``weight.bin``) and ``_BlobStorageReader``; bf16/fp8, which it cannot write, use a file
laid out by hand here from ``StorageFormat.hpp`` with ``struct``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest

import mlc
from mlc.io.blob import BLOB_CODE_BY_NAME, BlobFile, unpack_subbyte

# Element counts: 5, 13 and 1001 leave padding bits for every sub-byte width; 0 is an empty blob.
SIZES = (1, 5, 8, 13, 64, 1001)

# MIL name -> (coremltools writer suffix, numpy dtype the writer takes, value range or None for raw bits)
WRITABLE = {
    "fp16": ("fp16", np.uint16, None),  # the writer takes fp16 bit patterns as uint16
    "fp32": ("float", np.float32, None),
    "int8": ("int8", np.int8, (-128, 128)),
    "uint8": ("uint8", np.uint8, (0, 256)),
    "int16": ("int16", np.int16, (-(2**15), 2**15)),
    "uint16": ("uint16", np.uint16, (0, 2**16)),
    "int32": ("int32", np.int32, (-(2**31), 2**31)),
    "uint32": ("uint32", np.uint32, (0, 2**32)),
    "int4": ("int4", np.int8, (-8, 8)),
    "uint1": ("uint1", np.uint8, (0, 2)),
    "uint2": ("uint2", np.uint8, (0, 4)),
    "uint3": ("uint3", np.uint8, (0, 8)),
    "uint4": ("uint4", np.uint8, (0, 16)),
    "uint6": ("uint6", np.uint8, (0, 64)),
}
SUBBYTE = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}


@pytest.fixture(scope="module")
def storage(ct):
    from coremltools import libmilstoragepython

    return libmilstoragepython


def _values(name: str, n: int, rng) -> np.ndarray:
    """Random values for ``name``; floats are random bit patterns (NaNs, infs, subnormals included)."""
    suffix, dtype, bounds = WRITABLE[name]
    if bounds is None:
        bits = rng.integers(0, 2 ** (8 * np.dtype(dtype).itemsize), n, dtype=np.uint64)
        return bits.astype(np.uint16 if name == "fp16" else np.uint32).view(dtype)
    values = rng.integers(bounds[0], bounds[1], n, dtype=np.int64)
    if n >= 2:  # both ends of the range, always
        values[:2] = bounds[0], bounds[1] - 1
    return values.astype(dtype)


def _write(storage, path, blobs: list[tuple[str, np.ndarray]]) -> list[int]:
    writer = storage._BlobStorageWriter(str(path))
    offsets = [getattr(writer, f"write_{WRITABLE[name][0]}_data")(values) for name, values in blobs]
    del writer  # flushes and closes the file
    return offsets


def _expected(name: str, values: np.ndarray) -> np.ndarray:
    return values.view(np.float16) if name == "fp16" else values


def _same(actual: np.ndarray, expected: np.ndarray):
    """Exact equality, bit for bit for floats (NaN payloads included)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def _metadata(path, offset: int) -> tuple:
    """``(sentinel, mil_dtype, sizeInBytes, offset, padding_bits)`` read with struct, not with mlc."""
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<IIQQQ", f.read(32))


def _patch(path, at: int, fmt: str, *values):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(struct.pack(fmt, *values))


# -- against coremltools' writer ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(WRITABLE))
def test_reader_matches_coremltools_writer(storage, tmp_path, name):
    rng = np.random.default_rng(sorted(WRITABLE).index(name))
    blobs = [(name, _values(name, n, rng)) for n in SIZES]
    path = tmp_path / "weight.bin"
    offsets = _write(storage, path, blobs)
    blob = BlobFile(path)
    ct_reader = storage._BlobStorageReader(str(path))
    ct_read = getattr(ct_reader, f"read_{WRITABLE[name][0]}_data")
    for offset, (_, values) in zip(offsets, blobs):
        sentinel, code, size, _, padding = _metadata(path, offset)
        assert (sentinel, code) == (0xDEADBEEF, BLOB_CODE_BY_NAME[name])  # our code table is coremltools'
        if name in SUBBYTE:
            assert size * 8 - padding == len(values) * SUBBYTE[name]
        got = blob.read(offset, name, (len(values),))
        _same(got, _expected(name, values))
        ours = got.view(np.uint16) if name == "fp16" else got  # coremltools reads fp16 as uint16 bits
        _same(ours, ct_read(offset).astype(ours.dtype, copy=False))


def test_every_dtype_interleaved_in_one_file(storage, tmp_path):
    """All writable dtypes in one file, read with multi-dimensional shapes in a shuffled order."""
    rng = np.random.default_rng(7)
    blobs = [(name, _values(name, 3 * 7, rng)) for name in sorted(WRITABLE) for _ in range(2)]
    path = tmp_path / "weight.bin"
    offsets = _write(storage, path, blobs)
    assert all(o % 64 == 0 for o in offsets)
    blob = BlobFile(path)
    assert blob.count == len(blobs)
    for i in rng.permutation(len(blobs)):
        name, values = blobs[i]
        _same(blob.read(offsets[i], name, (3, 1, 7)), _expected(name, values).reshape(3, 1, 7))


def test_byte_types_are_read_only_memory_maps(storage, tmp_path):
    path = tmp_path / "weight.bin"
    values = np.arange(16, dtype=np.float32)
    (offset,) = _write(storage, path, [("fp32", values)])
    got = BlobFile(path).read(offset, "fp32", (4, 4))
    assert not got.flags.writeable and isinstance(got, np.memmap)  # a view of the file, not a copy
    with pytest.raises(ValueError):
        got[0, 0] = 1


def test_scalar_shape(storage, tmp_path):
    path = tmp_path / "weight.bin"
    (offset,) = _write(storage, path, [("int32", np.array([-7], np.int32))])
    got = BlobFile(path).read(offset, "int32", ())
    assert got.shape == () and int(got) == -7


# -- sub-byte packing ---------------------------------------------------------------------------
def _pack_lsb_first(values: np.ndarray, nbits: int) -> bytes:
    """Reference packer: element i takes bits [i*nbits, (i+1)*nbits) of a little-endian integer."""
    acc = 0
    for i, v in enumerate(values.tolist()):
        acc |= (v & ((1 << nbits) - 1)) << (i * nbits)
    return acc.to_bytes(-(-len(values) * nbits // 8), "little")


def test_unpack_subbyte_hand_example():
    # 0b1011_0001: low nibble 1, high nibble 11 (-5 as int4).
    np.testing.assert_array_equal(unpack_subbyte(np.array([0b10110001], np.uint8), 4, 2, False), [1, 11])
    np.testing.assert_array_equal(unpack_subbyte(np.array([0b10110001], np.uint8), 4, 2, True), [1, -5])
    # uint3 over two bytes: 0b11_010_001, 0b0000000_1 -> 1, 2, 7 (the third straddles the bytes), 0, ...
    np.testing.assert_array_equal(unpack_subbyte(np.array([0b11010001, 0b1], np.uint8), 3, 4, False), [1, 2, 7, 0])
    np.testing.assert_array_equal(unpack_subbyte(np.array([0b10], np.uint8), 1, 3, False), [0, 1, 0])


@pytest.mark.parametrize("name", sorted(SUBBYTE))
def test_subbyte_matches_reference_packing(storage, tmp_path, name):
    """coremltools' bytes for a sub-byte blob are exactly the LSB-first packing."""
    nbits = SUBBYTE[name]
    values = _values(name, 13, np.random.default_rng(nbits))
    path = tmp_path / "weight.bin"
    (offset,) = _write(storage, path, [(name, values)])
    _, _, size, data_offset, _ = _metadata(path, offset)
    raw = path.read_bytes()[data_offset : data_offset + size]
    assert raw == _pack_lsb_first(values, nbits)
    signed = name.startswith("int")
    _same(unpack_subbyte(np.frombuffer(raw, np.uint8), nbits, 13, signed), values.astype(np.int8 if signed else np.uint8))


# -- types coremltools cannot write: a file laid out by hand -------------------------------------
def _hand_file(path, blobs: list[tuple[int, bytes, int]]) -> list[int]:
    """Write a version-2 blob file of ``(code, data, padding_bits)`` blobs; return metadata offsets."""
    out, offsets = bytearray(struct.pack("<II", len(blobs), 2).ljust(64, b"\0")), []
    for code, data, padding in blobs:
        offsets.append(len(out))
        out += struct.pack("<IIQQQ", 0xDEADBEEF, code, len(data), len(out) + 64, padding).ljust(64, b"\0")
        out += data
        out += b"\0" * (-len(out) % 64)
    path.write_bytes(bytes(out))
    return offsets


@pytest.mark.parametrize(
    "name, code, dtype",
    [("bf16", 5, ml_dtypes.bfloat16), ("fp8e4m3fn", 16, ml_dtypes.float8_e4m3fn), ("fp8e5m2", 17, ml_dtypes.float8_e5m2)],
)
def test_types_without_a_coremltools_writer(tmp_path, name, code, dtype):
    itemsize = np.dtype(dtype).itemsize
    rng = np.random.default_rng(code)
    bits = [rng.integers(0, 256**itemsize, n).astype(f"<u{itemsize}") for n in (5, 12)]
    path = tmp_path / "weight.bin"
    offsets = _hand_file(path, [(code, b.tobytes(), 0) for b in bits])
    blob = BlobFile(path)
    _same(blob.read(offsets[0], name, (5,)), bits[0].view(dtype))
    _same(blob.read(offsets[1], name, (3, 4)), bits[1].view(dtype).reshape(3, 4))


def test_subbyte_with_zero_padding_field(tmp_path):
    """A writer that leaves the padding field 0 (the reserved word it replaced) is still read."""
    values = np.array([1, 0, 3, 2, 1], np.uint8)
    path = tmp_path / "weight.bin"
    (offset,) = _hand_file(path, [(10, _pack_lsb_first(values, 2), 0)])
    _same(BlobFile(path).read(offset, "uint2", (5,)), values)


# -- corrupt and inconsistent files --------------------------------------------------------------
@pytest.fixture
def fp32_file(storage, tmp_path):
    """A file with two fp32 blobs of 10 values; returns (path, offsets)."""
    path = tmp_path / "weight.bin"
    offsets = _write(storage, path, [("fp32", np.arange(10, dtype=np.float32)), ("fp32", np.ones(10, np.float32))])
    return path, offsets


@contextlib.contextmanager
def _raises(error, path, *fragments):
    """Like ``pytest.raises``; the message must also name ``path`` and contain every fragment."""
    with pytest.raises(error) as info:
        yield info
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.hostile
def test_header_too_short(tmp_path):
    path = tmp_path / "weight.bin"
    path.write_bytes(struct.pack("<II", 0, 2))
    with _raises(mlc.MLCIOError, path, "8 bytes", "storage header"):
        BlobFile(path)


@pytest.mark.hostile
def test_empty_file(tmp_path):
    path = tmp_path / "weight.bin"
    path.write_bytes(b"")
    with _raises(mlc.MLCIOError, path, "0 bytes"):
        BlobFile(path)


@pytest.mark.hostile
def test_missing_file_and_directory(tmp_path):
    with _raises(mlc.MLCIOError, tmp_path / "nope.bin", "does not exist"):
        BlobFile(tmp_path / "nope.bin")
    with _raises(mlc.MLCIOError, tmp_path, "not a file"):
        BlobFile(tmp_path)


@pytest.mark.hostile
@pytest.mark.parametrize("version", [0, 1, 3, 0xFFFFFFFF])
def test_wrong_storage_version(fp32_file, version):
    path, _ = fp32_file
    _patch(path, 4, "<I", version)
    with _raises(mlc.MLCIOError, path, f"storage version {version}"):
        BlobFile(path)


@pytest.mark.hostile
def test_wrong_sentinel(fp32_file):
    path, offsets = fp32_file
    _patch(path, offsets[1], "<I", 0xDEADBEEE)
    blob = BlobFile(path)
    blob.read(offsets[0], "fp32", (10,))  # the other blob is fine
    with _raises(mlc.MLCIOError, path, f"offset {offsets[1]}", "sentinel 0xDEADBEEE"):
        blob.read(offsets[1], "fp32", (10,))


@pytest.mark.hostile
@pytest.mark.parametrize("where", ["end", "last", "header", "negative", "huge"])
def test_metadata_offset_outside_file(fp32_file, where):
    path, _ = fp32_file
    size = os.path.getsize(path)
    offset = {"end": size, "last": size - 32, "header": 0, "negative": -64, "huge": 2**64 - 64}[where]
    with _raises(mlc.MLCIOError, path, "outside the file"):
        BlobFile(path).read(offset, "fp32", (10,))


@pytest.mark.hostile
@pytest.mark.parametrize("offset_delta", [1, 32, 63])
def test_unaligned_metadata_offset(fp32_file, offset_delta):
    path, offsets = fp32_file
    with _raises(mlc.MLCIOError, path, "not 64-byte aligned"):
        BlobFile(path).read(offsets[0] + offset_delta, "fp32", (10,))


@pytest.mark.parametrize(
    "field, value",
    [
        ("size", 10**6),  # data runs past the end
        ("size", 2**64 - 1),  # would wrap around in 64-bit arithmetic
        ("offset", 10**6),  # data starts past the end
        ("offset", 2**64 - 8),
    ],
)
@pytest.mark.hostile
def test_data_outside_file(fp32_file, field, value):
    path, offsets = fp32_file
    _patch(path, offsets[1] + {"size": 8, "offset": 16}[field], "<Q", value)
    with _raises(mlc.MLCIOError, path, f"offset {offsets[1]}", "outside the file"):
        BlobFile(path).read(offsets[1], "fp32", (10,))


@pytest.mark.hostile
@pytest.mark.parametrize("data_offset", [0, 64, 128, 255])
def test_data_overlapping_metadata_or_header(fp32_file, data_offset):
    path, offsets = fp32_file
    assert offsets[1] == 192
    _patch(path, offsets[1] + 16, "<Q", data_offset)
    with _raises(mlc.MLCIOError, path, f"offset {offsets[1]}", f"data offset {data_offset} overlaps"):
        BlobFile(path).read(offsets[1], "fp32", (10,))


@pytest.mark.hostile
@pytest.mark.parametrize("code", [0, 18, 99, 0xFFFFFFFF])
def test_unknown_dtype_code(fp32_file, code):
    path, offsets = fp32_file
    _patch(path, offsets[0] + 4, "<I", code)
    with _raises(mlc.MLCIOError, path, f"unknown blob data type code {code}"):
        BlobFile(path).read(offsets[0], "fp32", (10,))


@pytest.mark.hostile
@pytest.mark.parametrize("declared", ["fp16", "int32", "uint32", "bf16", "int4"])
def test_dtype_mismatch(fp32_file, declared):
    path, offsets = fp32_file
    with _raises(mlc.MLCParametersError, path, "holds fp32", f"declares {declared}"):
        BlobFile(path).read(offsets[0], declared, (10,))


@pytest.mark.hostile
@pytest.mark.parametrize("shape", [(9,), (11,), (2, 6), (), (0,), (10, 2)])
def test_size_disagrees_with_shape(fp32_file, shape):
    path, offsets = fp32_file
    with _raises(mlc.MLCParametersError, path, "40 bytes of fp32", str(shape)):
        BlobFile(path).read(offsets[0], "fp32", shape)


@pytest.mark.hostile
def test_negative_dimension(fp32_file):
    path, offsets = fp32_file
    with _raises(mlc.MLCParametersError, path, "negative"):
        BlobFile(path).read(offsets[0], "fp32", (-2, -5))


@pytest.mark.hostile
@pytest.mark.parametrize("name, shape", [("uint3", (12,)), ("uint3", (18,)), ("int4", (11,)), ("uint1", (8,))])
def test_subbyte_size_disagrees_with_shape(storage, tmp_path, name, shape):
    path = tmp_path / "weight.bin"
    (offset,) = _write(storage, path, [(name, _values(name, 13, np.random.default_rng(0)))])
    with _raises(mlc.MLCParametersError, path, f"of {name}", str(shape)):
        BlobFile(path).read(offset, name, shape)


@pytest.mark.hostile
def test_subbyte_padding_field_disagrees(storage, tmp_path):
    path = tmp_path / "weight.bin"
    (offset,) = _write(storage, path, [("uint3", _values("uint3", 13, np.random.default_rng(0)))])
    assert _metadata(path, offset)[4] == 1  # 13 * 3 = 39 bits in 5 bytes
    BlobFile(path).read(offset, "uint3", (13,))
    _patch(path, offset + 24, "<Q", 4)
    with _raises(mlc.MLCParametersError, path, "4 padding bits"):
        BlobFile(path).read(offset, "uint3", (13,))


@pytest.mark.hostile
def test_truncated_file(fp32_file):
    path, offsets = fp32_file
    with open(path, "r+b") as f:
        f.truncate(offsets[1] + 64 + 20)  # half of the second blob's data
    blob = BlobFile(path)
    blob.read(offsets[0], "fp32", (10,))
    with _raises(mlc.MLCIOError, path, "outside the file"):
        blob.read(offsets[1], "fp32", (10,))


# -- end to end: packages saved by coremltools, read through mlc ---------------------------------
_RNG = np.random.default_rng(2024)
_CONSTS = {
    "fp32": _RNG.standard_normal((3, 4)).astype(np.float32),
    "fp16": _RNG.standard_normal((3, 4)).astype(np.float16),
    "int8": _RNG.integers(-128, 128, (3, 4)).astype(np.int8),
    "uint8": _RNG.integers(0, 256, (3, 4)).astype(np.uint8),
    "int16": _RNG.integers(-(2**15), 2**15, (3, 4)).astype(np.int16),
    "uint16": _RNG.integers(0, 2**16, (3, 4)).astype(np.uint16),
    "int32": _RNG.integers(-(2**24), 2**24, (3, 4)).astype(np.int32),
}


def _program(x, h, n):
    from coremltools.converters.mil import Builder as mb

    c = _CONSTS
    return (
        mb.add(x=x, y=c["fp32"]),
        mb.add(x=h, y=c["fp16"]),
        *(mb.add(x=x, y=mb.cast(x=c[t], dtype="fp32")) for t in ("int8", "uint8", "int16", "uint16")),
        mb.add(x=n, y=c["int32"]),
    )


@pytest.fixture(scope="module")
def saved_package(ct, tmp_path_factory):
    """An iOS18 .mlpackage whose weight.bin holds one 3x4 blob of each byte type."""
    from mlc.testing.mil_program import mil_mlmodel

    model = mil_mlmodel(_program, {"x": (3, 4), "h": ((3, 4), "fp16"), "n": ((3, 4), "int32")}, target="iOS18")
    path = tmp_path_factory.mktemp("e2e") / "consts.mlpackage"
    model.save(str(path))
    return path


def _weight_file(package) -> str:
    return os.path.join(package, "Data", "com.apple.CoreML", "weights", "weight.bin")


def _spec_blob_dtypes(package) -> set[int]:
    """The MIL dtypes of the package's blob constants, read from its spec with coremltools."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    fn = spec.mlProgram.functions["main"]
    out = set()
    for op in fn.block_specializations[fn.opset].operations:
        value = op.attributes["val"] if op.type == "const" else None
        if value is not None and value.WhichOneof("value") == "blobFileValue":
            out.add(value.type.tensorType.dataType)
    return out


def test_saved_package_weights_through_mlc_load(saved_package):
    from mlc.runtime.dtypes import MIL_DTYPE_NAMES

    assert {MIL_DTYPE_NAMES[d] for d in _spec_blob_dtypes(saved_package)} == set(_CONSTS)  # all really are blobs
    model = mlc.load(saved_package, compute_precision="float32")
    zeros = {"x": np.zeros((3, 4), np.float32), "h": np.zeros((3, 4), np.float16), "n": np.zeros((3, 4), np.int32)}
    out = model.predict(zeros)
    got = [out[name] for name in model.output_description]
    order = ["fp32", "fp16", "int8", "uint8", "int16", "uint16", "int32"]
    for name, value in zip(order, got):
        np.testing.assert_array_equal(value, _CONSTS[name].astype(value.dtype), err_msg=name)


def test_saved_package_subbyte_weights(ct, tmp_path):
    """int4 and uint1..6 blobs that coremltools writes for iOS18 compression ops, read by mlc's parser."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from mlc.io.spec import load_spec
    from mlc.frontends.mil.ir import parse_program
    from mlc.testing.mil_program import mil_mlmodel

    rng = np.random.default_rng(3)
    data = {f"uint{n}": rng.integers(0, 2**n, (5, 3)).astype(types.string_to_nptype(f"uint{n}")) for n in (1, 2, 3, 4, 6)}
    data["int4"] = rng.integers(-8, 8, (5, 3)).astype(types.np_int4_dtype)

    def body(x):
        outs = [
            mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=data[f"uint{n}"], lut=np.zeros((1, 1, 2**n, 1), np.float32)))
            for n in (1, 2, 3, 4, 6)
        ]
        scale = np.ones((1, 1), np.float32)
        return (*outs, mb.add(x=x, y=mb.constexpr_blockwise_shift_scale(data=data["int4"], scale=scale)))

    path = tmp_path / "subbyte.mlpackage"
    mil_mlmodel(body, {"x": (5, 3)}, target="iOS18").save(str(path))
    loaded = load_spec(path)
    program = parse_program(loaded.spec.mlProgram, loaded.model_dir, loaded.name)
    keys = {"constexpr_lut_to_dense": "indices", "constexpr_blockwise_shift_scale": "data"}
    values = [op.inputs[keys[op.type]][0].value for op in program.functions["main"].iter_operations() if op.type in keys]
    assert len(values) == 6
    for name, value in zip(["uint1", "uint2", "uint3", "uint4", "uint6", "int4"], values):
        np.testing.assert_array_equal(value, np.asarray(data[name], dtype=value.dtype), err_msg=name)


@pytest.fixture
def package_copy(saved_package, tmp_path):
    path = tmp_path / "copy.mlpackage"
    shutil.copytree(saved_package, path)
    return path


@pytest.mark.hostile
def test_corrupt_weight_file_in_package(package_copy):
    weight = _weight_file(package_copy)
    _patch(weight, 64, "<I", 0)  # the first blob's sentinel
    with pytest.raises(mlc.MLCIOError) as info:
        mlc.load(package_copy)
    assert "weight.bin" in str(info.value) and "sentinel" in str(info.value)


@pytest.mark.hostile
def test_missing_weight_file_in_package(package_copy):
    os.remove(_weight_file(package_copy))
    with pytest.raises(mlc.MLCIOError) as info:
        mlc.load(package_copy)
    assert "weight.bin" in str(info.value) and "does not exist" in str(info.value)


@pytest.mark.hostile
def test_truncated_weight_file_in_package(package_copy):
    weight = _weight_file(package_copy)
    with open(weight, "r+b") as f:
        f.truncate(os.path.getsize(weight) - 100)
    with pytest.raises(mlc.MLCIOError) as info:
        mlc.load(package_copy)
    assert "weight.bin" in str(info.value) and "outside the file" in str(info.value)
