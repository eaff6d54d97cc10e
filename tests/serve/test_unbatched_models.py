"""Models that cannot share a batch run request by request, and several devices each get a
worker: a dictionary-input classic pipeline, a stateful ML Program (each request from a fresh
state), and one model served on two CPU devices."""

from __future__ import annotations

import json
import threading
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient

import mlc

from conftest import ct, torch  # noqa: F401 - skips without them


def _metric(server, name: str, **labels) -> float:
    with urllib.request.urlopen(server.url("/metrics"), timeout=30) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def dict_model(tmp_path_factory):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rows = [{"a": float(i % 3), "b": float(i % 5), "c": float(i % 7)} for i in range(60)]
    target = [r["a"] + 2 * r["b"] - r["c"] for r in rows]
    pipe = Pipeline([("vec", DictVectorizer(sparse=False)), ("scale", StandardScaler()), ("lr", LinearRegression())]).fit(rows, target)
    path = tmp_path_factory.mktemp("dict") / "Words.mlmodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.converters.sklearn.convert(pipe, "features", "target").save(str(path))
    return path


def test_dictionary_input_runs_request_by_request(dict_model, start_server):
    srv = start_server(dict_model, "--max-batch-size", "8", "--max-queue-delay-ms", "20")
    srv.wait_ready()
    local = mlc.load(dict_model)
    rows = [{"a": float(i % 3), "b": float(i), "c": 1.0} for i in range(16)]
    barrier = threading.Barrier(16)

    def one(row):
        client = httpclient.InferenceServerClient(srv.http)
        inp = httpclient.InferInput("features", [1], "BYTES")
        inp.set_data_from_numpy(np.array([json.dumps(row).encode()], dtype=object))
        barrier.wait()
        return client.infer("Words", [inp])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, rows))
    for row, result in zip(rows, results):
        want = local.predict({"features": row})
        assert result.as_numpy("target").tolist() == [want["target"]]
    labels = {"model": "Words"}
    assert _metric(srv, "mlc_batch_size_count", **labels) == 16 == _metric(srv, "mlc_batch_size_sum", **labels)


class Accumulator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(1, 4))

    def forward(self, x):
        self.acc.add_(x)
        return self.acc * 2


def test_stateful_model_starts_each_request_from_a_fresh_state(tmp_path, start_server):
    traced = torch.jit.trace(Accumulator().eval(), torch.ones(1, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 4))],
                             states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 4)), name="acc")],
                             minimum_deployment_target=ct.target.iOS18)
    path = tmp_path / "Acc.mlpackage"
    mlmodel.save(str(path))
    srv = start_server(path)
    srv.wait_ready()
    client = httpclient.InferenceServerClient(srv.http)
    x = np.arange(4, dtype=np.float16).reshape(1, 4)  # an iOS18 fp16 program declares an fp16 input
    local = mlc.load(path)
    want = local.predict({"x": x}, state=local.make_state())
    name = next(iter(want))
    for _ in range(3):  # the same answer each time: no state carried between requests
        inp = httpclient.InferInput("x", [1, 4], "FP16")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("Acc", [inp]).as_numpy(name), want[name])


def test_one_worker_per_device(repository, start_server):
    srv = start_server(repository / "mlprogram" / "1" / "Model.mlpackage", "--device", "cpu:0,cpu:1", "--max-batch-size", "1",
                       env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    srv.wait_ready()
    barrier = threading.Barrier(24)

    def one(i):
        client = httpclient.InferenceServerClient(srv.http)
        inp = httpclient.InferInput("x", [1, 8], "FP32")
        inp.set_data_from_numpy(np.full((1, 8), i, np.float32))
        barrier.wait()
        return client.infer("Model", [inp])

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(one, range(24)))
    srv.stop()
    devices = {r["device"] for r in srv.request_logs() if r["status"] == 200}
    assert len(devices) == 2, devices
