"""Fixtures for ``mlc serve``'s tests: a model repository made here, and real server processes
on 127.0.0.1 (free ports chosen by the server itself, read from its first line)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")
pytest.importorskip("tritonclient.http")

from mlc.testing import torch_models  # noqa: E402

LISTENING = re.compile(r"mlc serve: listening http=(\S+)(?: grpc=(\S+))?")


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        return torch.softmax(self.b(torch.relu(self.a(x))), -1)


class TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 3)

    def forward(self, image):
        return torch.softmax(self.fc(torch.relu(self.conv(image)).mean((2, 3))), -1)


def write_mlprogram(path: Path) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_models.convert(MLP().eval(), (torch.zeros(1, 8),), target="iOS17", path=path)
    return path


def write_nn_image_classifier(path: Path) -> Path:
    torch.manual_seed(1)
    traced = torch.jit.trace(TinyConv().eval(), torch.zeros(1, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(
            traced, inputs=[ct.ImageType(name="image", shape=(1, 3, 16, 16), scale=1 / 255.0)],
            classifier_config=ct.ClassifierConfig(["red", "green", "blue"]), convert_to="neuralnetwork",
        )
    mlmodel.save(str(path))
    return path


def write_pipeline(path: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500, multi_class="ovr"))]).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.converters.sklearn.convert(pipe, "x", "species")
    mlmodel.save(str(path))
    return path


@pytest.fixture(scope="session")
def repository(tmp_path_factory) -> Path:
    """``mlprogram``, ``classifier`` (NeuralNetwork, image input), ``pipeline`` (classic), and
    ``broken`` (a file that is no model: it must be reported not ready while the others serve)."""
    root = tmp_path_factory.mktemp("repository")
    for name, write, file in (("mlprogram", write_mlprogram, "Model.mlpackage"), ("classifier", write_nn_image_classifier, "Model.mlmodel"),
                              ("pipeline", write_pipeline, "Model.mlmodel")):
        (root / name / "1").mkdir(parents=True)
        write(root / name / "1" / file)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "Broken.mlmodel").write_bytes(b"this is not a Core ML model")
    return root


class Server:
    """A running ``mlc serve`` process."""

    def __init__(self, source, *args: str, env: dict | None = None):
        cmd = [sys.executable, "-m", "mlc.cli", "serve", str(source), "--port", "0", "--grpc-port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})
        self.log_lines: list[str] = []
        line = self.proc.stdout.readline()
        match = LISTENING.search(line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"mlc serve did not start: {line!r} {self.proc.stderr.read()}")
        self.http, self.grpc = match.group(1), match.group(2)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self):
        for line in self.proc.stderr:
            self.log_lines.append(line)

    def url(self, path: str) -> str:
        return f"http://{self.http}{path}"

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlc serve exited with {self.proc.returncode}: {''.join(self.log_lines)}")
            try:
                if self.get("/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"mlc serve was not ready in {timeout} s: {''.join(self.log_lines)}")

    def request_logs(self) -> list[dict]:
        out = []
        for line in list(self.log_lines):
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "infer":
                    out.append(record)
        return out

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def start_server():
    """``start_server(source, *args)``: a ``Server`` for this test, stopped after it."""
    started = []

    def start(source, *args: str, env: dict | None = None) -> Server:
        srv = Server(source, *args, env=env)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def server(repository):
    srv = Server(repository, "--max-batch-size", "16", "--max-queue-delay-ms", "20")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def iris_rows() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data[::10].astype(np.float64)
