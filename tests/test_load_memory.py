"""Loading memory-maps an ML Program's weights instead of copying them (issue 9).

``scripts/measure_load_memory.py`` measures a few hundred MB (``bench/load_memory.md``); here a
~50 MB package is loaded in a fresh process, sampled from outside, so a change that copies the
weights at load (an fp16 weight widened to fp32, a ``device_put`` that copies an unaligned
array, a ``.copy()`` in the parser) fails: one copy of the weights is 1x, the bound is 0.5x.
"""


import numpy as np
import pytest

from mlc.testing.scripts import load_script

BOUND = 0.5  # anonymous memory grown during mlc.load, as a multiple of the weight bytes

pytestmark = pytest.mark.hostile


def _script():
    return load_script("measure_load_memory")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision, layers", [("fp32", 3), ("fp16", 6)])  # 48 MB, 48 MB
def test_load_does_not_copy_weights(tmp_path, precision, layers):
    script = _script()
    path = tmp_path / f"mlp-{precision}.mlpackage"
    script.build_mlpackage(str(path), layers, 2048, fp16=precision == "fp16")
    r = script.measure(path)
    assert r["weight_mib"] > 40
    assert r["load"]["peak_anon_ratio"] < BOUND, r
    assert r["outputs_finite"], r


def test_fp16_weights_are_fp32_params_when_read(tmp_path):
    """An fp16 weight is held as stored until ``params`` is read; predictions, ``params``,
    ``with_params`` and ``save`` are what they were when load widened it."""
    import mlc

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8)).astype(np.float16)
    script = _script()
    path = tmp_path / "m.mlpackage"
    script.build_mlpackage(str(path), 2, 8, fp16=True)
    model = mlc.load(str(path), device="cpu")
    x = {"x": rng.standard_normal((1, 8)).astype(np.float32)}
    before = model.predict(x)
    held = {k: v.dtype for k, v in model.runner.held_params.items()}
    assert set(held.values()) == {np.dtype(np.float16)}
    public = model.params
    assert {v.dtype for v in public.values()} == {np.dtype(np.float32)}
    after = model.predict(x)  # now with the widened params: the same numbers
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    key = next(k for k, v in public.items() if v.shape == (8, 8))
    fresh = mlc.load(str(path), device="cpu")
    trained = fresh.with_params({key: w.astype(np.float32)})
    assert trained.params[key].dtype == np.float32
    assert fresh.runner.held_params[key].dtype == np.float16  # with_params widened nothing it was not given
    trained.save(tmp_path / "trained.mlpackage")
    again = mlc.load(str(tmp_path / "trained.mlpackage"), device="cpu")
    np.testing.assert_array_equal(np.asarray(again.params[key]), w.astype(np.float32))
    out, ref = again.predict(x), trained.predict(x)
    for name in out:
        np.testing.assert_array_equal(out[name], ref[name])
