"""predict_batch's batch split over the CPU's cores (mlc.runtime.batch_split).

Oracles: numpy for the splitter on its own; torch and scikit-learn for whole models."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import mlc
from mlc.runtime import batch_split
from mlc.runtime.batch_split import BatchSplitter, bounds, parts_for

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("batch,parts", [(32, 2), (33, 2), (7, 3), (8, 8), (5, 4)])
def test_bounds_cover_the_batch_in_near_equal_parts(batch, parts):
    ranges = bounds(batch, parts)
    assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_parts_for_the_platform_the_batch_and_the_variable(monkeypatch):
    monkeypatch.delenv(batch_split.SPLIT_VARIABLE, raising=False)
    monkeypatch.setattr(batch_split, "available_cores", lambda: 2)
    assert parts_for(32, "cpu") == 2
    assert parts_for(32, "gpu") == 1  # one device computes the whole batch
    assert parts_for(3, "cpu") == 1  # fewer than MIN_PART examples a part
    monkeypatch.setattr(batch_split, "available_cores", lambda: 64)
    assert parts_for(1000, "cpu") == batch_split.MAX_PARTS
    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "1")
    assert parts_for(32, "cpu") == 1 and batch_split.forced()
    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "4")
    assert parts_for(32, "cpu") == 4
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(batch_split.SPLIT_VARIABLE, bad)
        with pytest.raises(mlc.MLCParametersError, match="MLC_BATCH_SPLIT"):
            parts_for(32, "cpu")


class Recorder:
    """A batched call: rows times a weight, an id per row; records its threads and sizes."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.threads, self.sizes = seconds, [], []
        self.w = RNG.normal(size=(5, 3)).astype(np.float32)

    def __call__(self, inputs):
        self.threads.append(threading.get_ident())
        self.sizes.append(len(inputs["x"]))
        time.sleep(self.seconds)
        return {"y": inputs["x"] @ self.w, "ids": inputs["ids"] * 2, "scalar_rows": inputs["x"].sum(axis=1)}


def _inputs(n):
    return {"x": RNG.normal(size=(n, 5)).astype(np.float32), "ids": np.arange(n)}


def _expected(call, inputs):
    return {"y": inputs["x"] @ call.w, "ids": inputs["ids"] * 2, "scalar_rows": inputs["x"].sum(axis=1)}


def _equal(got, expected):
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(np.asarray(got[k]), expected[k], rtol=1e-6)


def test_a_slow_call_splits_after_its_first_batch_and_runs_parts_at_once():
    call, splitter = Recorder(seconds=batch_split.MIN_SECONDS * 2), BatchSplitter()
    first = _inputs(9)
    _equal(splitter(call, first, 2, key="p"), _expected(call, first))
    assert call.sizes == [5, 4, 5]  # each size once, then the first size again, timed
    assert set(call.threads) == {threading.get_ident()}  # the first batch: in the calling thread
    call.threads, call.sizes = [], []
    second = _inputs(9)
    _equal(splitter(call, second, 2, key="p"), _expected(call, second))
    assert sorted(call.sizes) == [4, 5] and len(set(call.threads)) == 2


def test_a_fast_call_stays_one_call():
    call, splitter = Recorder(), BatchSplitter()
    for _ in range(3):
        inputs = _inputs(32)
        _equal(splitter(call, inputs, 2, key="p"), _expected(call, inputs))
    assert call.sizes == [16, 16, 32, 32]  # the first batch in parts (one timed), then whole


def test_force_splits_without_timing_and_other_params_decide_again():
    call, splitter = Recorder(), BatchSplitter()
    splitter(call, _inputs(8), 2, key="p", force=True)
    call.sizes = []
    inputs = _inputs(8)
    _equal(splitter(call, inputs, 2, key="p", force=True), _expected(call, inputs))
    assert call.sizes == [4, 4]
    call.sizes = []
    splitter(call, _inputs(8), 2, key="other params", force=True)
    assert call.sizes == [4, 4]  # a first batch again: in order, in this thread


def test_what_does_not_split_runs_as_one_call():
    call, splitter = Recorder(), BatchSplitter()
    ragged = {"x": RNG.normal(size=(8, 5)).astype(np.float32), "ids": np.arange(6)}  # no common batch axis
    out = splitter(call, ragged, 2, force=True)
    assert call.sizes == [8]  # passed whole
    np.testing.assert_array_equal(out["ids"], ragged["ids"] * 2)

    sizes = []

    def no_batch_axis(inputs):
        sizes.append(len(inputs["x"]))
        return {"total": np.float32(inputs["x"].sum())}

    inputs = _inputs(8)
    out = splitter(no_batch_axis, inputs, 2, key="q", force=True)  # outputs without a batch axis: whole call
    np.testing.assert_allclose(out["total"], inputs["x"].sum(), rtol=1e-5)
    sizes.clear()
    out = splitter(no_batch_axis, inputs, 2, key="q", force=True)
    np.testing.assert_allclose(out["total"], inputs["x"].sum(), rtol=1e-5)
    assert sizes == [8]  # remembered: whole from the start, not parts first


def test_an_error_in_a_part_reaches_the_caller():
    splitter = BatchSplitter()

    def failing(inputs):
        if len(inputs["x"]) and inputs["ids"][0] > 0:
            raise mlc.MLCPredictionError("part refused")
        return {"y": inputs["x"]}

    splitter(lambda i: {"y": i["x"]}, _inputs(8), 2, key="p", force=True)
    with pytest.raises(mlc.MLCPredictionError, match="part refused"):
        splitter(failing, _inputs(8), 2, key="p", force=True)


# -- whole models: the split batch predicts what torch / scikit-learn predict -------------------


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from mlc.testing.torch_models import convert

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    path = convert(module.eval(), (torch.zeros(1, 3, 6, 6),), path=str(tmp_path_factory.mktemp("split") / "conv.mlpackage"))
    return module, path


@pytest.mark.parametrize("n", [7, 32])
def test_predict_batch_split_matches_torch(conv_model, monkeypatch, n):
    import torch

    module, path = conv_model
    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "3")
    model = mlc.load(path, cache_dir=False)
    x = RNG.normal(size=(n, 1, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x[:, 0])).numpy()
    for _ in range(2):  # the first batch in order, the second at once
        out = model.predict_batch({"x": x})
        (name,) = out
        np.testing.assert_allclose(out[name].reshape(n, -1), expected, rtol=1e-5, atol=1e-5)
    assert len(model.runner._splitter._split) == 1


def test_classic_model_in_double_splits_in_64_bit_mode(monkeypatch):
    """Worker threads enter the runner's 64-bit mode (thread-local in JAX) as the caller does."""
    ct = pytest.importorskip("coremltools")
    from sklearn.linear_model import LinearRegression

    x = RNG.normal(size=(40, 3))
    reg = LinearRegression().fit(x, x @ np.array([1.5, -2.0, 0.25]) + 1e-9 * RNG.normal(size=40))
    model = mlc.load(ct.converters.sklearn.convert(reg, ["a", "b", "c"], "y"), cache_dir=False)
    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "2")
    feeds = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}
    for _ in range(2):
        out = model.predict_batch(feeds)
        np.testing.assert_allclose(out["y"], reg.predict(x), rtol=1e-12, atol=1e-12)
