"""Bad input never takes the server down: each answers its status with the mlc error's code and
message in the protocol's error body, and the next good request works (HTTP and gRPC)."""

from __future__ import annotations

import gzip
import json
import struct
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

GOOD = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}).encode()


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(server.url(path), data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()) if r.headers.get("content-type", "").startswith("application/json") else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _tensor(**kw):
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8, **kw}]}).encode()


def _binary(header: dict, payload: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


CASES = {
    "malformed JSON": ("mlprogram", b'{"inputs": [', {}, 400, "not JSON"),
    "not an object": ("mlprogram", b"[1, 2]", {}, 400, "JSON object"),
    "no inputs": ("mlprogram", b"{}", {}, 400, "'inputs'"),
    "wrong datatype": ("mlprogram", _tensor(datatype="INT32", data=[1] * 8), {}, 400, "expects datatype FP32"),
    "unknown datatype": ("mlprogram", _tensor(datatype="FP128"), {}, 400, "unknown datatype"),
    "wrong shape": ("mlprogram", _tensor(shape=[1, 9], data=[0.5] * 9), {}, 400, "shape"),
    "shape and data disagree": ("mlprogram", _tensor(shape=[1, 8], data=[0.5] * 7), {}, 400, "holds 8 elements"),
    "non-numeric data": ("mlprogram", _tensor(data=["a"] * 8), {}, 400, "must be numbers"),
    "unknown input": ("mlprogram", json.dumps({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode(),
                      {}, 400, "no such input"),
    "missing input": ("pipeline", json.dumps({"inputs": [{"name": "y", "datatype": "FP64", "shape": [4], "data": [1.0] * 4}]}).encode(),
                      {}, 400, "no such input"),
    "unknown output": ("mlprogram", json.dumps({"inputs": json.loads(GOOD)["inputs"], "outputs": [{"name": "nope"}]}).encode(),
                       {}, 400, "no output"),
    "truncated binary tensor": ("mlprogram", *_binary({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8],
                                                                    "parameters": {"binary_data_size": 32}}]}, b"\0" * 20), 400, "truncated"),
    "binary size disagrees with shape": ("mlprogram", *_binary({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8],
                                                                            "parameters": {"binary_data_size": 28}}]}, b"\0" * 28), 400, "needs 32 bytes"),
    "header length past the body": ("mlprogram", GOOD, {"Inference-Header-Content-Length": "99999"}, 400, "Inference-Header-Content-Length"),
    "truncated BYTES element": ("classifier", *_binary({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                                     "parameters": {"binary_data_size": 8}}]}, struct.pack("<I", 100) + b"abcd"),
                                400, "truncated"),
    "non-image bytes for an image": ("classifier", *_binary({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                                          "parameters": {"binary_data_size": 14}}]}, struct.pack("<I", 10) + b"not an png"),
                                     400, "not an image"),
    "unknown model": ("nosuchmodel", GOOD, {}, 404, "no model 'nosuchmodel'"),
    "unknown version": ("mlprogram/versions/7", GOOD, {}, 404, "no version '7'"),
    "model that failed to load": ("broken", GOOD, {}, 503, "failed to load"),
    "bad gzip": ("mlprogram", b"not gzip", {"Content-Encoding": "gzip"}, 400, "gzip"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_gets_its_status_and_the_next_request_works(server, case):
    model, body, headers, status, text = CASES[case]
    got, doc = post(server, f"/v2/models/{model}/infer", body, headers)
    assert got == status, doc
    assert text in doc["error"] and doc["code"]
    assert post(server, "/v2/models/mlprogram/infer", GOOD)[0] == 200


def test_gzip_body_is_read(server):
    assert post(server, "/v2/models/mlprogram/infer", gzip.compress(GOOD), {"Content-Encoding": "gzip"})[0] == 200


def test_oversize_body_is_413(repository, start_server):
    srv = start_server(repository / "mlprogram" / "1" / "Model.mlpackage", "--max-body-bytes", "1000", "--no-warmup")
    srv.wait_ready()
    got, doc = post(srv, "/v2/models/Model/infer", GOOD + b" " * 2000)
    assert got == 413 and doc["code"] == "io" and "1000" in doc["error"]
    bomb = gzip.compress(GOOD[:-1] + b" " * 5000 + b"}")
    got, doc = post(srv, "/v2/models/Model/infer", bomb, {"Content-Encoding": "gzip"})
    assert got == 413, doc
    assert post(srv, "/v2/models/Model/infer", GOOD)[0] == 200
    client = grpcclient.InferenceServerClient(srv.grpc)
    big = grpcclient.InferInput("x", [1, 8], "FP32")
    big.set_data_from_numpy(np.zeros((1, 8), np.float32))
    with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED|larger than max"):
        client.infer("Model", [big], request_id="x" * 2000)
    assert client.infer("Model", [big]).as_numpy(next(iter(client.get_model_metadata("Model").outputs)).name).shape == (1, 4)
    assert srv.stop() == 0


@pytest.mark.parametrize("case", ["wrong datatype", "wrong shape", "unknown model", "unknown input", "non-image bytes"])
def test_grpc_bad_request_gets_its_status_and_the_next_request_works(server, case):
    client = grpcclient.InferenceServerClient(server.grpc)
    model, name, datatype, shape, value = {
        "wrong datatype": ("mlprogram", "x", "INT32", [1, 8], np.ones((1, 8), np.int32)),
        "wrong shape": ("mlprogram", "x", "FP32", [1, 9], np.ones((1, 9), np.float32)),
        "unknown model": ("nosuchmodel", "x", "FP32", [1, 8], np.ones((1, 8), np.float32)),
        "unknown input": ("mlprogram", "nope", "FP32", [1, 8], np.ones((1, 8), np.float32)),
        "non-image bytes": ("classifier", "image", "BYTES", [1], np.array([b"not an image"], dtype=object)),
    }[case]
    inp = grpcclient.InferInput(name, shape, datatype)
    inp.set_data_from_numpy(value)
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, [inp])
    want = "StatusCode.NOT_FOUND" if case == "unknown model" else "StatusCode.INVALID_ARGUMENT"
    assert info.value.status() == want
    good = grpcclient.InferInput("x", [1, 8], "FP32")
    good.set_data_from_numpy(np.ones((1, 8), np.float32))
    assert client.infer("mlprogram", [good]).get_response().model_name == "mlprogram"
