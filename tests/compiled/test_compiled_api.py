"""The rest of mlc's API on a compiled folder works as on its uncompiled twin: ``mlc compile``
(a ``.mlc`` file), ``as_flax``, and ``mlc.finetune`` (the same data and optimizer train the
compiled model and its twin to the same predictions)."""

from __future__ import annotations

import numpy as np
import pytest

import mlc

jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

SILERO = "silero_vad_unified_v6/silero-vad-unified-v6.0.0"


@pytest.fixture(scope="module")
def silero(compiled_testdata):
    return mlc.load(compiled_testdata / f"{SILERO}.mlmodelc"), mlc.load(compiled_testdata / f"{SILERO}.mlpackage")


def _inputs(model, seed=0, batch=None):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    return {n: (0.1 * rng.standard_normal(lead + f.shape)).astype(np.float32) for n, f in model.input_description.items()}


def test_mlc_compile_of_a_compiled_folder(silero, tmp_path):
    compiled, _ = silero
    compiled.compile(tmp_path / "silero.mlc")
    aot = mlc.load(tmp_path / "silero.mlc")
    x = _inputs(compiled)
    want = compiled.predict(x)
    got = aot.predict(x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_as_flax_holds_the_twins_weights(silero):
    compiled, twin = silero
    a, b = compiled.as_flax(), twin.as_flax()
    assert sorted(compiled.params) == sorted(twin.params)
    for key in compiled.params:
        np.testing.assert_array_equal(np.asarray(compiled.params[key]), np.asarray(twin.params[key]))
    assert type(a) is type(b)


def test_finetune_trains_the_compiled_folder_as_its_twin(silero):
    compiled, twin = silero
    data = _inputs(compiled, seed=1, batch=8)
    data = {n: v[:, None] if v.ndim == 2 else v for n, v in data.items()}  # (8, 1, n): one declared-shape example per row
    data["target"] = np.full((8, 1, 1), 0.9, np.float32)
    out = next(iter(compiled.output_description))

    def loss(outputs, batch):
        return jnp.mean((outputs[out].reshape(batch["target"].shape) - batch["target"]) ** 2)

    tasks = [mlc.finetune(m, data, loss=loss, optimizer=optax.sgd(0.05), epochs=2, batch_size=4, seed=0) for m in (compiled, twin)]
    x = _inputs(compiled, seed=2)
    a, b = (t.model.predict(x)[out] for t in tasks)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, compiled.predict(x)[out])  # training changed it
