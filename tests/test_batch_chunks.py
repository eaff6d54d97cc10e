"""predict_batch's chunks on CPU (mlc.runtime.batch_chunks): the rule, and chunked batches
computing what numpy and torch compute, run-time checks included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlc
from mlc.runtime import batch_chunks, batch_split, target
from mlc.runtime.batch_chunks import CHUNK_BYTES, SPILL_BYTES, WEIGHT_RATIO, Footprint, chunk_size, footprint

RNG = np.random.default_rng(0)
MB = 1 << 20


@pytest.fixture(autouse=True)
def _rule(monkeypatch):
    monkeypatch.delenv(batch_chunks.CHUNK_VARIABLE, raising=False)


@pytest.mark.parametrize(
    "batch,weights,activation,expected",
    [
        (16, 14 * MB, 5 * MB, 2),  # MobileNetV2: 80 MB of activations a call, 2 images in 10 MB
        (16, 47 * MB, 3 * MB, None),  # ResNet-18: a chunk would read 47 MB of weights again for 6 MB kept
        (16, 82 * MB, 4 * MB, None),  # the GPT decoder
        (32, 14 * MB, MB // 2, None),  # the LSTM: 16 MB a call stays in cache
        (6, MB, 5 * MB, None),  # 30 MB a call: in cache
        (8, MB, 20 * MB, 1),  # one example is already more than a chunk's bytes: one at a time
        (2, 0, 20 * MB, 1),
        (1, 0, 64 * MB, None),  # nothing to chunk
        (16, 0, 0, None),
    ],
)
def test_the_rule(batch, weights, activation, expected):
    assert chunk_size(batch, lambda: Footprint(weights, activation, convolutions=False)) == expected
    assert chunk_size(batch, lambda: Footprint(weights, activation, convolutions=True)) is None  # slow inside a loop


def test_the_rule_at_its_bounds():
    a = CHUNK_BYTES // 4  # four examples fill a chunk
    assert chunk_size(64, lambda: Footprint(WEIGHT_RATIO * 4 * a, a, False)) == 4
    assert chunk_size(64, lambda: Footprint(WEIGHT_RATIO * 4 * a + 1, a, False)) is None
    assert chunk_size(SPILL_BYTES // a, lambda: Footprint(0, a, False)) is None  # exactly the cache: left whole
    assert chunk_size(SPILL_BYTES // a + 1, lambda: Footprint(0, a, False)) == 4


def test_the_variable_forces_or_turns_off_chunks(monkeypatch):
    measured = []
    measure = lambda: measured.append(1) or Footprint(0, 64 * MB, False)
    monkeypatch.setenv(batch_chunks.CHUNK_VARIABLE, "0")
    assert chunk_size(16, measure) is None
    monkeypatch.setenv(batch_chunks.CHUNK_VARIABLE, "3")
    assert chunk_size(16, measure) == 3 and chunk_size(3, measure) is None
    assert measured == []  # a forced size traces nothing more
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv(batch_chunks.CHUNK_VARIABLE, bad)
        with pytest.raises(mlc.MLCParametersError, match="MLC_BATCH_CHUNK"):
            chunk_size(16, measure)


def test_footprint_counts_what_depends_on_the_inputs():
    def fn(params, inputs):
        w = params["w"].T * 2.0  # weight-only: 1 MB, not an activation
        h = inputs["x"] @ w  # (64, 1024) per example: 256 KiB
        return {"y": jnp.tanh(h).sum(axis=1)}

    params = {"w": jnp.ones((1024, 256), jnp.float32)}
    inputs = {"x": jnp.ones((5, 64, 256), jnp.float32)}
    found = footprint(fn, params, inputs)
    assert found.weights == 1024 * 256 * 4
    assert found.activation == 64 * 1024 * 4
    assert not found.convolutions

    def convolving(params, inputs):
        return {"y": jax.lax.conv(inputs["x"][None], params["k"], (1, 1), "SAME")}

    found = footprint(convolving, {"k": jnp.ones((2, 3, 3, 3))}, {"x": jnp.ones((4, 3, 8, 8))})
    assert found.convolutions and found.activation == 3 * 8 * 8 * 4  # x[None], more than the 2-channel output


def _recording_fn(seen):
    def fn(params, inputs):
        seen.append(target.vmapped_batch())
        return {"y": jnp.tanh(inputs["x"] @ params["w"]), "sum": inputs["x"].sum()}

    return fn


@pytest.mark.parametrize("n", [6, 7, 1])
def test_a_chunked_batch_computes_the_batch(monkeypatch, n):
    """Chunks of 3 (the last one filled with copies of the last example, dropped), each traced
    as a batch of 3 for the kernels' rules."""
    monkeypatch.setenv(batch_chunks.CHUNK_VARIABLE, "3")
    seen = []
    params = {"w": RNG.normal(size=(4, 5)).astype(np.float32)}
    x = RNG.normal(size=(n, 2, 4)).astype(np.float32)
    fn = batch_chunks.vmapped(_recording_fn(seen))
    with target.lowering_for("cpu", vmapped_batch=n):
        jaxpr = jax.make_jaxpr(fn)(params, {"x": x})
        out = jax.jit(fn)(params, {"x": x})
    assert ("scan" in str(jaxpr)) == (n > 3)
    assert seen[-1] == (3 if n > 3 else 1)
    np.testing.assert_allclose(out["y"], np.tanh(x @ params["w"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["sum"], x.reshape(n, -1).sum(axis=1), rtol=1e-5)
    assert out["y"].shape == (n, 2, 5) and out["sum"].shape == (n,)


def test_no_chunks_off_the_cpu(monkeypatch):
    monkeypatch.setenv(batch_chunks.CHUNK_VARIABLE, "2")
    params = {"w": np.ones((4, 5), np.float32)}
    fn = batch_chunks.vmapped(_recording_fn([]))
    with target.lowering_for("gpu", vmapped_batch=8):
        jaxpr = jax.make_jaxpr(fn)(params, {"x": np.ones((8, 2, 4), np.float32)})
    assert "scan" not in str(jaxpr)


def test_chunked_predict_batch_raises_the_run_time_checks(monkeypatch):
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_model

    monkeypatch.setenv(batch_chunks.CHUNK_VARIABLE, "2")
    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "1")
    build = lambda data, updates, indices: mb.scatter(data=data, indices=indices, updates=updates, validate_indices=True)
    model = mil_model(build, {"data": ((2, 3), "fp32"), "updates": ((2, 3), "fp32"), "indices": ((2,), "int32")})
    n = 5
    data = np.zeros((n, 2, 3), np.float32)
    updates = RNG.normal(size=(n, 2, 3)).astype(np.float32)
    indices = np.array([[1, 0]] * n, np.int32)
    (out,) = model.predict_batch({"data": data, "updates": updates, "indices": indices}).values()
    np.testing.assert_array_equal(out, updates[:, ::-1])  # row 1 takes updates[0], row 0 updates[1]
    for bad_row in (1, n - 1):  # in a full chunk, and in the one filled with its copies
        wrong = indices.copy()
        wrong[bad_row, 0] = 2
        with pytest.raises(mlc.MLCPredictionError, match="validate_indices"):
            model.predict_batch({"data": data, "updates": updates, "indices": wrong})


@pytest.fixture(scope="module")
def wide_conv_model(tmp_path_factory):
    """Small weights, large activations (64 x 128x128 floats, 4 MiB an image): chunked by the rule."""
    torch = pytest.importorskip("torch")
    from mlc.testing.torch_models import convert

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)
    )
    path = convert(module.eval(), (torch.zeros(1, 3, 128, 128),), path=str(tmp_path_factory.mktemp("chunks") / "wide.mlpackage"))
    return module, path


@pytest.fixture()
def chunks(monkeypatch):
    """The chunk size of every batch traced in chunks, in order."""
    sizes = []
    original = batch_chunks._in_chunks
    monkeypatch.setattr(batch_chunks, "_in_chunks", lambda *a: sizes.append(a[-1]) or original(*a))
    return sizes


def _torch_outputs(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x[:, 0])).numpy()


def test_the_rule_chunks_a_model_whose_activations_leave_the_cache_and_it_matches_torch(wide_conv_model, chunks, monkeypatch):
    module, path = wide_conv_model
    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "1")
    model = mlc.load(path, cache_dir=False)
    n = 9  # 37 MB of the largest activation in one call: chunks of two, the last one padded
    x = RNG.normal(size=(n, 1, 3, 128, 128)).astype(np.float32)
    expected = _torch_outputs(module, x)
    (out,) = model.predict_batch({"x": x}).values()
    assert chunks == [2]
    np.testing.assert_allclose(out.reshape(n, -1), expected, rtol=1e-4, atol=1e-5)
    (small,) = model.predict_batch({"x": x[:4]}).values()  # 17 MB: one vmapped call
    assert chunks == [2]
    np.testing.assert_allclose(small.reshape(4, -1), expected[:4], rtol=1e-4, atol=1e-5)


def test_a_model_with_an_xla_convolution_is_not_chunked(chunks, monkeypatch):
    """8 -> 64 channels, 3x3 (too few channels for Winograd: XLA's convolution), 4 MiB an
    example: chunks would pay by their bytes, but XLA:CPU runs a convolution in a loop slowly."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.convolutions import torch_conv
    from mlc.testing.mil_program import mil_model

    monkeypatch.setenv(batch_split.SPLIT_VARIABLE, "1")
    w = (RNG.normal(size=(64, 8, 3, 3)) * 0.1).astype(np.float32)
    model = mil_model(lambda x: mb.conv(x=x, weight=w, pad_type="same"), {"x": ((1, 8, 128, 128), "fp32")})
    x = RNG.normal(size=(9, 1, 8, 128, 128)).astype(np.float32)
    (out,) = model.predict_batch({"x": x}).values()
    assert chunks == []
    np.testing.assert_allclose(out[:, 0], torch_conv(x[:, 0], w, padding=[(1, 1), (1, 1)]), rtol=1e-4, atol=1e-4)


def test_batch_scoring_on_one_cpu_device_runs_in_chunks(wide_conv_model, chunks, tmp_path):
    """mlc.deploy.batch (scripts/batch_predict.py) on one device: the same rule, the same results."""
    from mlc.deploy import batch

    module, path = wide_conv_model
    model = mlc.load(path, cache_dir=False)
    n = 11  # two steps of 9: the second padded by the predictor, both chunked in twos
    x = RNG.normal(size=(n, 1, 3, 128, 128)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    predictor = batch.BatchPredictor(model, batch_size=9, devices=[model.runner.device])
    results = predictor.predict(batch.open_inputs(model, str(tmp_path / "x.npz")))
    assert chunks == [2] and predictor._fn.compiled_signatures() == 1
    (name,) = results.outputs
    np.testing.assert_allclose(np.asarray(results.outputs[name]).reshape(n, -1), _torch_outputs(module, x), rtol=1e-4, atol=1e-5)
