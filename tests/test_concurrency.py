"""predict from many threads at once on one model, and processes sharing one compilation cache."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.hostile

import mlc
from mlc.testing import torch_models


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    module, example = torch_models.build("resnet")
    path = torch_models.convert(module, example, target="iOS16", precision="fp16", path=tmp_path_factory.mktemp("conc") / "m.mlpackage")
    return path, module, example


def _inputs(example, n):
    rng = np.random.default_rng(0)
    return [rng.normal(size=example[0].shape).astype(np.float32) for _ in range(n)]


def test_eight_threads_on_a_fresh_model_match_sequential_calls(model_path):
    """The first calls race to trace, split and compile; every result must still be right."""
    path, module, example = model_path
    xs = _inputs(example, 32)
    expected = [mlc.load(path).predict({"x": x})["y"] for x in xs]
    model = mlc.load(path)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda x: model.predict({"x": x})["y"], xs))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert model.runner.compiled_signatures() == 1


def test_threads_mixing_predict_and_predict_batch(model_path):
    path, _, example = model_path
    xs = _inputs(example, 8)
    model = mlc.load(path)
    single = [model.predict({"x": x})["y"] for x in xs]

    def work(i):
        if i % 2:
            return model.predict_batch({"x": np.stack(xs)})["y"]
        return np.stack([model.predict({"x": x})["y"] for x in xs])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(16)))
    for r in results:
        np.testing.assert_allclose(r, np.stack(single), rtol=1e-5, atol=1e-6)


PROBE = r"""
import json, sys, jax, jax.monitoring, numpy as np
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import mlc
model = mlc.load(sys.argv[1], cache_dir=sys.argv[2])
x = np.load(sys.argv[3])
y = model.predict({"x": x})["y"]
np.save(sys.argv[4], y)
print(json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits") + events.count("/mlc/trace_cache/hit")}))
"""


def test_processes_sharing_a_compilation_cache(model_path, tmp_path):
    """Two processes fill one cache folder at the same time; a third reads it back (XLA's
    executable, or mlc's trace cache beside it)."""
    path, _, example = model_path
    cache = tmp_path / "xla"
    np.save(tmp_path / "x.npy", _inputs(example, 1)[0])

    def start(i):
        return subprocess.Popen(
            [sys.executable, "-c", PROBE, str(path), str(cache), str(tmp_path / "x.npy"), str(tmp_path / f"y{i}.npy")],
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        )

    first = [start(0), start(1)]
    for p in first:
        assert p.wait(timeout=300) == 0
    third = start(2)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["hits"] >= 1
    ys = [np.load(tmp_path / f"y{i}.npy") for i in range(3)]
    np.testing.assert_array_equal(ys[0], ys[1])
    np.testing.assert_array_equal(ys[0], ys[2])
    assert not [f for f in os.listdir(cache) if f.endswith((".tmp", ".partial"))]
    assert not [f for f in os.listdir(cache / "mlc-programs") if f.endswith((".tmp", ".partial"))]
