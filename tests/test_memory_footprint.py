"""What the runner holds after predictions: one copy of each weight-only value (issue 22, memory).

Counted in bytes of the arrays held (jax arrays, numpy arrays, resident pages of a weight file),
never RSS over time: ``scripts/memory_profile.py`` measures the processes (``bench/memory.md``).
"""

from __future__ import annotations

import mmap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.runtime import hoist, host_jaxpr
from mlc.runtime.hoist import HoistedFunction, ResidualStore
from mlc.testing.scripts import load_script

RNG = np.random.default_rng(0)


def _computed(f: HoistedFunction) -> list:
    """The computed residuals ``f`` holds (not the params it forwards)."""
    out = []
    for (params, values), split in zip(f._prepared.values(), f._splits.values()):
        out += [v for v, fw in zip(values, split.forwards) if fw is None]
    return out


def _nbytes(arrays) -> int:
    return sum(a.nbytes for a in {id(a): a for a in arrays}.values())


# -- a weight-only value that is only an expansion is recomputed, not held -------------------------


def attention_like(params, inputs):
    """A causal mask (constant) broadcast to the batch, and a transposed weight."""
    x = inputs["x"]  # (n, 64, 64)
    mask = jnp.tril(jnp.ones((64, 64), bool))
    scores = jnp.where(jnp.broadcast_to(mask, x.shape), x, 0.0)
    return {"y": scores @ params["w"].T}


def test_a_broadcast_mask_is_recomputed_per_call_not_held():
    w = RNG.normal(size=(64, 64)).astype(np.float32)
    params = {"w": jnp.asarray(w)}
    x = RNG.normal(size=(256, 64, 64)).astype(np.float32)  # the mask broadcast: 4 MiB
    f = HoistedFunction(attention_like, host_prepare=True)
    y = f(params, {"x": x})["y"]
    expected = np.where(np.tril(np.ones((64, 64), bool)), x, np.float32(0)) @ w.T
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-4)
    held = _computed(f)
    # the transposed weight and the (64, 64) mask at most, not the mask broadcast to (256, 64, 64)
    assert _nbytes(held) <= w.nbytes + 64 * 64, [(a.shape, a.dtype) for a in held]


def test_the_expansion_rule_keeps_winograd_sized_and_widening_values():
    """Values up to 4x what they are computed from stay hoisted (transforms, fp16 -> fp32)."""

    def widen(params, inputs):
        w = params["w"].astype(jnp.float32)  # 2x its source
        return {"y": inputs["x"] @ w}

    w = RNG.normal(size=(1024, 1024)).astype(np.float16)
    f = HoistedFunction(widen, host_prepare=True)
    x = RNG.normal(size=(1, 1024)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(f({"w": jnp.asarray(w)}, {"x": x})["y"]), x @ w.astype(np.float32), rtol=1e-4, atol=1e-3)
    assert [a.dtype for a in _computed(f)] == [np.float32]


# -- predict and predict_batch share what they compute alike --------------------------------------


def layer(params, inputs):
    return {"y": inputs["x"] @ jnp.transpose(params["w"]) + params["b"]}


@pytest.mark.parametrize("host_prepare", [True, False])
def test_call_and_batch_functions_hold_one_copy_of_a_shared_residual(host_prepare):
    w = RNG.normal(size=(256, 512)).astype(np.float32)
    b = RNG.normal(size=(256,)).astype(np.float32)
    params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    store = ResidualStore()
    call = HoistedFunction(layer, host_prepare=host_prepare, store=store)
    batch = HoistedFunction(jax.vmap(layer, in_axes=(None, 0)), host_prepare=host_prepare, store=store)
    x1 = RNG.normal(size=(1, 512)).astype(np.float32)
    x8 = RNG.normal(size=(8, 1, 512)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(call(params, {"x": x1})["y"]), x1 @ w.T + b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(batch(params, {"x": x8})["y"]), x8 @ w.T + b, rtol=1e-4, atol=1e-4)
    held = _computed(call) + _computed(batch)
    kernels = [a for a in held if a.nbytes == w.nbytes]  # the transposed weight, in each function
    assert len(kernels) == 2 and kernels[0] is kernels[1]
    assert _nbytes(held) <= w.nbytes + 4 * b.nbytes  # once, beside the bias as each shapes it
    other = {"w": jnp.asarray(w * 2), "b": params["b"]}  # other params: computed afresh, not the stored value
    np.testing.assert_allclose(np.asarray(batch(other, {"x": x8})["y"]), x8 @ (2 * w).T + b, rtol=1e-4, atol=1e-4)


def test_a_different_computation_is_not_shared():
    store = ResidualStore()
    w = RNG.normal(size=(32, 32)).astype(np.float32)
    params = {"w": jnp.asarray(w)}
    f = HoistedFunction(lambda p, i: {"y": i["x"] @ p["w"].T}, host_prepare=True, store=store)
    g = HoistedFunction(lambda p, i: {"y": i["x"] @ (p["w"] * 2.0).T}, host_prepare=True, store=store)
    x = np.ones((1, 32), np.float32)
    np.testing.assert_allclose(np.asarray(f(params, {"x": x})["y"]), x @ w.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g(params, {"x": x})["y"]), x @ (2 * w).T, rtol=1e-4, atol=1e-4)
    assert _computed(f)[0] is not _computed(g)[0]


# -- the pages of a memory-mapped weight that only the weight-only part reads are dropped ----------


def _resident_bytes(path) -> int:
    """Resident bytes of this process's mappings of ``path`` (``/proc/self/smaps``)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split()[0] if line.split() else ""
            if "-" in first and ":" not in first:
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED") or not __import__("os").path.exists("/proc/self/smaps"), reason="Linux only")
def test_memory_mapped_weight_pages_leave_once_read(tmp_path):
    w = RNG.normal(size=(512, 1024)).astype(np.float32)  # 2 MiB
    path = tmp_path / "weight.bin"
    w.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=w.shape)
    params = {"w": jax.device_put(mapped)}
    f = HoistedFunction(lambda p, i: {"y": i["x"] @ (p["w"] * 2.0)}, host_prepare=True)  # weight-only: w * 2
    x = RNG.normal(size=(1, 512)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(params["w"]).sum(), w.sum(), rtol=1e-5)  # pages in
    assert _resident_bytes(path) >= w.nbytes // 2
    np.testing.assert_allclose(np.asarray(f(params, {"x": x})["y"]), x @ (w * 2), rtol=1e-4, atol=1e-3)
    assert _resident_bytes(path) < w.nbytes // 8
    np.testing.assert_array_equal(np.asarray(params["w"]), w)  # still there: read from the file again
    np.testing.assert_allclose(np.asarray(f(params, {"x": x})["y"]), x @ (w * 2), rtol=1e-4, atol=1e-3)


def test_anonymous_memory_is_never_released():
    """An array not in a read-only file mapping (a decoded weight) keeps its values."""
    a = RNG.normal(size=(256, 256)).astype(np.float32)
    keep = a.copy()
    hoist._PageRelease([a])(0)
    np.testing.assert_array_equal(a, keep)


def test_host_evaluation_releases_each_argument_after_its_last_read():
    def fn(a, b):
        c = jnp.transpose(a)
        return c + 1.0, b  # b is a result: never released

    closed = jax.make_jaxpr(fn)(np.ones((2, 3), np.float32), np.ones((3,), np.float32))
    released = []
    out = host_jaxpr.evaluate(closed.jaxpr, list(closed.consts), [np.ones((2, 3), np.float32), np.ones((3,), np.float32)], release=released.append)
    assert released == [0]
    np.testing.assert_array_equal(out[0], np.full((3, 2), 2.0, np.float32))


# -- a model: predictions, params, with_params and save unchanged -----------------------------------


def test_model_holds_one_copy_and_its_api_is_unchanged(tmp_path):
    import mlc

    script = load_script("measure_load_memory")
    path = tmp_path / "mlp.mlpackage"
    script.build_mlpackage(str(path), 3, 256, fp16=False)
    model = mlc.load(str(path), device="cpu", cache_dir=False)
    name = next(iter(model.input_description))
    x1 = {name: RNG.normal(size=(1, 256)).astype(np.float32)}
    x4 = {name: RNG.normal(size=(4, 1, 256)).astype(np.float32)}
    y1, y4 = model.predict(x1), model.predict_batch(x4)
    runner = model.runner
    held = _computed(runner._jitted) + _computed(runner._batched)
    kernels = sum(v.nbytes for v in runner.held_params.values() if v.ndim == 2)
    others = sum(v.nbytes for v in runner.held_params.values() if v.ndim != 2)
    # the transposed kernels once, not per function (besides small values each shapes its own way)
    assert kernels <= _nbytes(held) <= kernels + 2 * others, (_nbytes(held), kernels, others)
    fresh = mlc.load(str(path), device="cpu", cache_dir=False)  # the same numbers as a model that never shared
    for out, again in ((y1, fresh.predict(x1)), (y4, fresh.predict_batch(x4))):
        for k in out:
            np.testing.assert_array_equal(out[k], again[k])
    params = model.params
    key = next(k for k, v in params.items() if v.ndim == 2)
    changed = model.with_params({key: np.asarray(params[key]) * 0.5})
    assert not np.array_equal(changed.predict(x1)[next(iter(y1))], y1[next(iter(y1))])
    np.testing.assert_array_equal(model.predict(x1)[next(iter(y1))], y1[next(iter(y1))])
    model.save(str(tmp_path / "again.mlpackage"))
    reloaded = mlc.load(str(tmp_path / "again.mlpackage"), device="cpu", cache_dir=False)
    for k in y1:
        np.testing.assert_array_equal(reloaded.predict(x1)[k], y1[k])
