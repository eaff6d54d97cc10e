"""mlc.runtime.hoist: the weight-only part of a function computed once per params (numpy is the oracle)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.runtime.hoist import HoistedFunction, split_weight_only

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float16)
B = RNG.normal(size=(1, 3)).astype(np.float32)  # added as it is (no broadcast): a forwarded param


def layer(params, inputs):
    """Weight-only work (widen fp16, transpose, scale) then the per-call part."""
    w = jnp.transpose(params["w"].astype(jnp.float32)) * 2.0
    return {"y": inputs["x"] @ w.T + params["b"]}


def expected(x, w=W, b=B):
    return x @ (w.astype(np.float32) * 2.0) + b


def test_results_match_numpy_and_weight_only_part_is_hoisted():
    f = HoistedFunction(layer)
    params = {"w": jnp.asarray(W), "b": jnp.asarray(B)}
    x = RNG.normal(size=(1, 4)).astype(np.float32)
    np.testing.assert_allclose(f(params, {"x": x})["y"], expected(x), rtol=1e-6)
    assert f.hoisted({"x": x})


def test_prepare_runs_once_per_params_object(monkeypatch):
    f = HoistedFunction(layer)
    params = {"w": jnp.asarray(W), "b": jnp.asarray(B)}
    x = np.ones((1, 4), np.float32)
    f(params, {"x": x})
    split = next(iter(f._splits.values()))
    calls = []
    original = split.prepare
    split.prepare = lambda *a: calls.append(1) or original(*a)
    for _ in range(3):
        f(params, {"x": x})
    assert calls == []
    new_w = (W * 3).astype(np.float16)
    other = {"w": jnp.asarray(new_w), "b": jnp.asarray(B)}
    np.testing.assert_allclose(f(other, {"x": x})["y"], expected(x, new_w), rtol=1e-3)
    assert calls == [1]


def test_params_used_as_they_are_are_passed_through_not_copied():
    params = {"w": jnp.asarray(W), "b": jnp.asarray(B)}
    split = split_weight_only(layer, params, {"x": np.ones((1, 4), np.float32)}, 1 << 30)
    leaves = jax.tree_util.tree_leaves(params)
    forwarded = [leaves[i] for i in split.forwards if i is not None]
    assert any(v is params["b"] for v in forwarded)  # 'b' is read as it is: no residual copy


def test_nothing_to_hoist_runs_as_one_jit():
    f = HoistedFunction(lambda p, i: {"y": i["x"] * p["s"]})
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(f({"s": jnp.float32(2)}, {"x": x})["y"], x * 2)
    assert not f.hoisted({"x": x})


def test_large_residuals_are_not_kept():
    f = HoistedFunction(layer, max_residual_bytes=8)
    params = {"w": jnp.asarray(W), "b": jnp.asarray(B)}
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(f(params, {"x": x})["y"], expected(x), rtol=1e-6)
    assert not f.hoisted({"x": x})


def test_effects_stay_in_the_per_call_part():
    """A host call reading only weights (fresh randomness) must run on every call."""
    from jax.experimental import io_callback

    counter = []

    def draw():
        counter.append(1)
        return np.float32(len(counter))

    def fn(p, i):
        return {"y": i["x"] + io_callback(draw, jax.ShapeDtypeStruct((), jnp.float32), ordered=False) * p["s"]}

    f = HoistedFunction(fn)
    x = np.zeros(2, np.float32)
    first = np.asarray(f({"s": jnp.float32(1)}, {"x": x})["y"])
    second = np.asarray(f({"s": jnp.float32(1)}, {"x": x})["y"])
    assert not np.array_equal(first, second)


def test_non_array_inputs_run_as_one_jit():
    f = HoistedFunction(lambda p, i: {"y": p["w"].T.sum() + 1})
    assert float(f({"w": jnp.ones((2, 2))}, {"label": None})["y"]) == pytest.approx(5.0)


def test_model_with_params_recomputes_the_hoisted_part(tmp_path):
    """An fp16 conv model on CPU (widening and kernel layout hoisted), then new weights."""
    import mlc
    from mlc.testing import torch_models

    module, example = torch_models.build("resnet")
    path = torch_models.convert(module, example, target="iOS16", precision="fp16", path=tmp_path / "m.mlpackage")
    model = mlc.load(path)
    x = {"x": example[0].numpy()}
    y0 = model.predict(x)["y"]
    assert model.runner.hoisted_for(x)
    zeroed = model.with_params({k: np.zeros(v.shape) for k, v in model.params.items()})
    np.testing.assert_array_equal(zeroed.predict(x)["y"], np.zeros_like(y0))
    np.testing.assert_array_equal(model.predict(x)["y"], y0)


def test_host_prepare_matches_the_compiled_prepare():
    """Layout and arithmetic-only weight parts run in numpy (no compile); same bits as XLA."""
    params = {"w": jnp.asarray(W), "b": jnp.asarray(B)}
    x = RNG.normal(size=(1, 4)).astype(np.float32)
    host, compiled = HoistedFunction(layer, host_prepare=True), HoistedFunction(layer)
    np.testing.assert_array_equal(host(params, {"x": x})["y"], compiled(params, {"x": x})["y"])
    split = next(iter(host._splits.values()))
    from mlc.runtime import host_jaxpr

    assert host_jaxpr.supported(split.known.jaxpr)
    computed = host_jaxpr.evaluate(split.known.jaxpr, list(split.known.consts), [np.asarray(v) for v in jax.tree_util.tree_leaves(params)])
    for a, b in zip(computed, split.prepare(*jax.tree_util.tree_leaves(params))):
        np.testing.assert_array_equal(a, np.asarray(b))
        assert a.dtype == b.dtype


def test_host_prepare_falls_back_to_xla_for_other_primitives():
    from mlc.runtime import host_jaxpr

    closed = jax.make_jaxpr(lambda w: jnp.tanh(w) @ w.T)(np.ones((2, 2), np.float32))
    assert not host_jaxpr.supported(closed.jaxpr)
    f = HoistedFunction(lambda p, i: {"y": i["x"] @ (jnp.tanh(p["w"]) @ p["w"].T)}, host_prepare=True)
    w = RNG.normal(size=(2, 2)).astype(np.float32)
    x = np.ones((1, 2), np.float32)
    np.testing.assert_allclose(f({"w": jnp.asarray(w)}, {"x": x})["y"], x @ (np.tanh(w) @ w.T), rtol=1e-5)
