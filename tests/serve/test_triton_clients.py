"""The official Triton client library (``tritonclient``, written by others for the Open Inference
Protocol) against a real ``mlc serve`` process: metadata, and inference in JSON and binary over
HTTP and over gRPC, for an ML Program, a NeuralNetwork classifier with an image input, and a
classic pipeline. The oracle is ``mlc.load(...).predict`` on the same inputs in this process:
the server must add nothing and lose nothing."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

import mlc


@pytest.fixture(scope="module")
def http(server):
    return httpclient.InferenceServerClient(server.http)


@pytest.fixture(scope="module")
def grpc(server):
    return grpcclient.InferenceServerClient(server.grpc)


@pytest.fixture(scope="module")
def local(repository):
    return {name: mlc.load(next((repository / name / "1").iterdir())) for name in ("mlprogram", "classifier", "pipeline")}


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_server_metadata(http, grpc):
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    meta = http.get_server_metadata()
    assert meta["name"] == "mlc" and meta["version"] == mlc.__version__ and "binary_tensor_data" in meta["extensions"]
    assert grpc.get_server_metadata().name == "mlc"


def test_model_metadata_from_the_core_ml_description(http, grpc, local):
    meta = http.get_model_metadata("mlprogram")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 8]}]
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"] == [1, 4]
    assert meta["versions"] == ["1"]
    g = grpc.get_model_metadata("classifier")
    assert [(t.name, t.datatype, list(t.shape)) for t in g.inputs] == [("image", "BYTES", [1])]
    assert {t.name: (t.datatype, list(t.shape)) for t in g.outputs} == {n: ("BYTES", [1]) for n in local["classifier"].output_description}
    pipe = http.get_model_metadata("pipeline")
    assert pipe["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [4]}]
    assert {t["name"]: t["datatype"] for t in pipe["outputs"]} == {"species": "INT64", "classProbability": "BYTES"}


def test_a_model_that_failed_to_load_is_not_ready_and_the_others_serve(http, grpc, server):
    assert not http.is_model_ready("broken") and not grpc.is_model_ready("broken")
    status, body = server.get("/v2/models/broken/ready")
    assert status == 503 and body["ready"] is False and "Broken.mlmodel" in body["error"]
    assert http.is_model_ready("mlprogram") and grpc.is_model_ready("classifier") and http.is_model_ready("pipeline")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_mlprogram_http(http, local, binary):
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    inp = httpclient.InferInput("x", [1, 8], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput(next(iter(local["mlprogram"].output_description)), binary_data=binary)
    result = http.infer("mlprogram", [inp], outputs=[out])
    name = out.name()
    np.testing.assert_array_equal(result.as_numpy(name), local["mlprogram"].predict({"x": x})[name])


def test_mlprogram_grpc(grpc, local):
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    inp = grpcclient.InferInput("x", [1, 8], "FP32")
    inp.set_data_from_numpy(x)
    result = grpc.infer("mlprogram", [inp])
    for name, want in local["mlprogram"].predict({"x": x}).items():
        np.testing.assert_array_equal(result.as_numpy(name), want)


def _image_input(module, png: bytes):
    inp = module.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([png], dtype=object))
    return inp


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_image_classifier_takes_encoded_images_and_returns_label_and_probabilities(http, grpc, local, protocol):
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    png = _png(3)
    want = local["classifier"].predict({"image": Image.open(io.BytesIO(png))})
    result = client.infer("classifier", [_image_input(module, png)])
    label = result.as_numpy("classLabel")
    assert label.shape == (1,) and label[0].decode() == want["classLabel"]
    probs_name = next(n for n in local["classifier"].output_description if n != "classLabel")
    probs = json.loads(result.as_numpy(probs_name)[0])
    assert probs.keys() == want[probs_name].keys()
    for k, v in want[probs_name].items():
        assert probs[k] == pytest.approx(v, rel=1e-12)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classic_pipeline(http, grpc, local, iris_rows, protocol):
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    for row in iris_rows[:5]:
        inp = module.InferInput("x", [4], "FP64")
        inp.set_data_from_numpy(row)
        result = client.infer("pipeline", [inp])
        want = local["pipeline"].predict({"x": row})
        assert result.as_numpy("species").tolist() == [want["species"]]
        probs = json.loads(result.as_numpy("classProbability")[0])
        assert {int(k): v for k, v in probs.items()} == pytest.approx(want["classProbability"], rel=1e-12)


def test_json_request_by_hand(server, local):
    """A plain JSON request (what curl sends): flat data, no binary, every output."""
    import urllib.request

    x = np.arange(8, dtype=np.float32).reshape(1, 8) / 8
    body = json.dumps({"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": x.ravel().tolist()}]}).encode()
    req = urllib.request.Request(server.url("/v2/models/mlprogram/versions/1/infer"), data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        doc = json.loads(r.read())
    assert doc["id"] == "r1" and doc["model_name"] == "mlprogram" and doc["model_version"] == "1"
    want = local["mlprogram"].predict({"x": x})
    for out in doc["outputs"]:
        np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), want[out["name"]])
