"""Dynamic batching, the bounded queue, a bounded load test, and SIGTERM under load."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.http as httpclient

OUTPUT = None  # the mlprogram's output name, read from its metadata


def _x(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)


def _infer(client, i: int) -> np.ndarray:
    inp = httpclient.InferInput("x", [1, 8], "FP32")
    inp.set_data_from_numpy(_x(i), binary_data=True)
    result = client.infer("mlprogram", [inp])
    return result.as_numpy(result.get_response()["outputs"][0]["name"])


def _metric(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _metrics(server) -> str:
    with urllib.request.urlopen(server.url("/metrics"), timeout=30) as r:
        return r.read().decode()


def test_concurrent_clients_get_the_results_of_sequential_calls_and_are_batched(server):
    """64 concurrent clients get what 64 sequential calls got, and the server computed some of
    them together (batch sizes > 1 in /metrics). The batched call runs the same program vmapped:
    XLA may order a batched matmul's sums differently from the single-row one, so rows agree to
    a few fp32 ulps, not bit for bit."""
    client = httpclient.InferenceServerClient(server.http)
    sequential = [_infer(client, i) for i in range(64)]
    before = _metrics(server)

    def one(i):
        return _infer(httpclient.InferenceServerClient(server.http), i)

    barrier = threading.Barrier(64)

    def together(i):
        barrier.wait()
        return one(i)

    with ThreadPoolExecutor(64) as pool:
        concurrent = list(pool.map(together, range(64)))
    for got, want in zip(concurrent, sequential):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    after = _metrics(server)
    labels = {"model": "mlprogram", "version": "1"}
    calls = _metric(after, "mlc_batch_size_count", **labels) - _metric(before, "mlc_batch_size_count", **labels)
    computed = _metric(after, "mlc_batch_size_sum", **labels) - _metric(before, "mlc_batch_size_sum", **labels)
    assert computed == 64 and calls < 64, (calls, computed)
    singles = _metric(after, "mlc_batch_size_bucket", le="1.0", **labels) - _metric(before, "mlc_batch_size_bucket", le="1.0", **labels)
    assert singles < calls  # some calls computed more than one request


def test_bounded_load(server):
    """A fixed number of requests from 16 threads: every one answered right, and counted."""
    n = 320
    before = _metrics(server)
    want = {i: _infer(httpclient.InferenceServerClient(server.http), i) for i in range(8)}

    def one(i):
        return i, _infer(httpclient.InferenceServerClient(server.http), i % 8)

    with ThreadPoolExecutor(16) as pool:
        for i, got in pool.map(one, range(n)):
            np.testing.assert_allclose(got, want[i % 8], rtol=1e-6, atol=1e-7)
    after = _metrics(server)
    ok = {"model": "mlprogram", "status": "200", "protocol": "http"}
    assert _metric(after, "mlc_requests_total", **ok) - _metric(before, "mlc_requests_total", **ok) == n + 8
    assert _metric(after, "mlc_queue_depth", model="mlprogram") == 0
    for name in ("queue", "compute", "total"):
        assert _metric(after, f"mlc_request_{name}_seconds_count", model="mlprogram") > 0


def _post(server, i: int, timeout: float = 60):
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": _x(i).ravel().tolist()}]}).encode()
    req = urllib.request.Request(server.url("/v2/models/mlprogram/infer"), data=body, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_a_full_queue_answers_503_and_the_server_goes_on(repository, start_server):
    srv = start_server(repository, "--max-queue", "1", "--max-batch-size", "1")
    srv.wait_ready()
    barrier = threading.Barrier(32)

    def one(i):
        barrier.wait()
        return _post(srv, i)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
    refused = next(doc for s, doc in results if s == 503)
    assert refused["code"] == "unavailable" and "queue holds 1" in refused["error"]
    assert _post(srv, 0)[0] == 200


def test_sigterm_under_load_loses_no_accepted_request(repository, start_server):
    """Clients keep sending while the server gets SIGTERM: every request the server accepted
    (logged as answered 200) reached its client with the right result, none failed with 5xx
    other than 503, and the server exits 0."""
    srv = start_server(repository, "--max-batch-size", "8", "--max-queue-delay-ms", "10")
    srv.wait_ready()
    want = _post(srv, 3)[1]["outputs"][0]["data"]
    outcomes: list = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, doc = _post(srv, 3, timeout=120)
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                outcomes.append(("refused", repr(e)))
                return  # the server no longer accepts connections
            outcomes.append((status, doc))

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    code = srv.stop()
    stop.set()
    for t in threads:
        t.join(60)
    assert code == 0
    answered = [doc for s, doc in outcomes if s == 200]
    assert answered
    for doc in answered:  # batched or not (see the first test for the tolerance)
        np.testing.assert_allclose(doc["outputs"][0]["data"], want, rtol=1e-6, atol=1e-7)
    assert {s for s, _ in outcomes} <= {200, 503, "refused"}, [o for o in outcomes if o[0] not in (200, 503, "refused")][:3]
    logged_ok = [r for r in srv.request_logs() if r["status"] == 200]
    assert len(logged_ok) == len(answered) + 1  # + the first request
