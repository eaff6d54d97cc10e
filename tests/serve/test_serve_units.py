"""The serving pieces on their own: the repository layout, the tensor codecs, the gRPC
messages (checked against the descriptors tritonclient ships), padded batch sizes, metadata
shapes of flexible features."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mlc import features as F
from mlc._errors import MLCIOError
from mlc.serve import coreml_io, grpc_messages
from mlc.serve.batcher import bucket
from mlc.serve.errors import BadRequest
from mlc.serve.repository import find_models
from mlc.serve.tensors import from_raw, from_values, to_raw


def _touch_model(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_repository_layout(tmp_path):
    _touch_model(tmp_path / "a" / "1" / "A.mlmodel")
    _touch_model(tmp_path / "a" / "10" / "A.mlpackage")
    _touch_model(tmp_path / "b" / "2" / "B.mlc")
    found = [(m.name, m.version) for m in find_models(tmp_path)]
    assert found == [("a", "1"), ("a", "10"), ("b", "2")]
    single = _touch_model(tmp_path / "Single.mlmodel")
    assert [(m.name, m.version) for m in find_models(single)] == [("Single", "1")]


@pytest.mark.parametrize("layout, message", [
    ({"a/x/A.mlmodel": b""}, "version folders"),
    ({"a/1/A.mlmodel": b"", "a/1/B.mlmodel": b""}, "exactly one model"),
    ({"a/1/readme.txt": b""}, "exactly one model"),
    ({"loose.txt": b""}, "one folder per model"),
])
def test_repository_layout_errors(tmp_path, layout, message):
    for rel, data in layout.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    with pytest.raises(MLCIOError, match=message):
        find_models(tmp_path)


def test_missing_source(tmp_path):
    with pytest.raises(MLCIOError, match="no such model"):
        find_models(tmp_path / "nope")


def test_raw_round_trip():
    t = from_values("x", "FP16", (2, 2), [1.5, -2, 3, 4], "x")
    assert t.data.dtype == np.float16 and from_raw("x", "FP16", (2, 2), to_raw(t), "x").data.tolist() == t.data.tolist()
    b = from_values("s", "BYTES", (2,), ["héllo", "w"], "s")
    assert to_raw(b) == struct.pack("<I", 6) + "héllo".encode() + struct.pack("<I", 1) + b"w"
    assert from_raw("s", "BYTES", (2,), to_raw(b), "s").data.tolist() == [b"h\xc3\xa9llo", b"w"]


@pytest.mark.parametrize("datatype, values, message", [
    ("INT32", [1.5], "must be integers"),
    ("UINT8", [300], "out of UINT8's range"),
    ("BOOL", [1], "true or false"),
    ("FP32", [[1, 2], [3]], "holds 1 elements"),
])
def test_json_values_are_checked(datatype, values, message):
    with pytest.raises(BadRequest, match=message):
        from_values("x", datatype, (1,), values, "x")


def test_bytes_with_trailing_garbage_is_refused():
    with pytest.raises(BadRequest, match="after its 1 elements"):
        from_raw("s", "BYTES", (1,), struct.pack("<I", 1) + b"ab", "s")


def test_grpc_messages_match_tritonclients_descriptors():
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    checked = 0
    for full, cls in grpc_messages.CLASSES.items():
        outer, _, inner = full.partition(".")
        theirs = service_pb2.DESCRIPTOR.message_types_by_name[outer]
        if inner:
            theirs = theirs.nested_types_by_name[inner]
        for field in cls.DESCRIPTOR.fields:
            other = theirs.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), (full, field.name)
            if field.message_type is not None:
                assert field.message_type.full_name == other.message_type.full_name
            checked += 1
    assert checked == 56
    service = service_pb2.DESCRIPTOR.services_by_name[grpc_messages.SERVICE]
    for method, (req, resp) in grpc_messages.METHODS.items():
        m = service.methods_by_name[method]
        assert (m.input_type.name, m.output_type.name) == (req, resp)


def test_bucket():
    assert [bucket(n, 64) for n in (1, 2, 3, 5, 9, 33, 64)] == [1, 2, 4, 8, 16, 64, 64]
    assert bucket(5, 6) == 6


def test_metadata_of_flexible_features():
    ranged = F.Feature("x", "multiArray", dtype=np.dtype(np.float32), shape=(1, 3), shape_ranges=((1, 1), (1, -1)))
    enumerated = F.Feature("y", "multiArray", dtype=np.dtype(np.float16), shape=(1, 2), enumerated_shapes=((1, 2), (1, 5)))
    assert coreml_io.tensor_metadata(ranged) == {"name": "x", "datatype": "FP32", "shape": [1, -1]}
    assert coreml_io.tensor_metadata(enumerated) == {"name": "y", "datatype": "FP16", "shape": [1, -1]}
    image = F.Feature("im", "image", shape=(8, 8), color_space="RGB")
    assert coreml_io.tensor_metadata(image) == {"name": "im", "datatype": "BYTES", "shape": [1]}


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mlc.cli", "serve", *args], capture_output=True, text=True, timeout=120)


def test_cli_refuses_a_missing_model(tmp_path):
    done = _cli(str(tmp_path / "nope.mlpackage"), "--port", "0", "--grpc-port", "-1")
    assert done.returncode == 2 and "no such model file" in done.stderr


def test_cli_refuses_a_port_in_use(tmp_path):
    import socket

    model = _touch_model(tmp_path / "a" / "1" / "A.mlmodel")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = _cli(str(model), "--port", str(port), "--grpc-port", "-1")
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_cli_checks_its_numbers():
    done = _cli("x.mlmodel", "--max-batch-size", "0")
    assert done.returncode == 2 and "--max-batch-size must be at least 1" in done.stderr


def test_the_http_socket_is_tcp_with_nagle_off():
    """asyncio disables Nagle only on sockets created as IPPROTO_TCP; with it on, each response on
    a kept-alive connection after the first waited ~40 ms for the client's delayed ACK (uvicorn
    writes a response's head and body separately). Accepted connections inherit TCP_NODELAY."""
    import socket

    from mlc.serve.server import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()
