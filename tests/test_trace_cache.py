"""mlc.runtime.trace_cache: what tracing produces, stored beside XLA's cache and read back.

A hit must predict exactly (bit for bit) what a miss and a load without any cache predict; a
damaged entry is ignored (traced again, rewritten), never an error or a wrong result; another
model content or load option finds another entry; ``cache_dir=False`` reads and writes nothing.
The events of ``jax.monitoring`` (``trace_cache.HIT`` ...) are the evidence of what happened."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.monitoring
import numpy as np
import pytest

import mlc
from mlc.runtime import trace_cache

_events: list[str] = []
jax.monitoring.register_event_listener(lambda name, **kw: _events.append(name))


def counts() -> dict[str, int]:
    names = {"hit": trace_cache.HIT, "miss": trace_cache.MISS, "bad": trace_cache.BAD_ENTRY, "stored": trace_cache.STORED}
    return {k: _events.count(v) for k, v in names.items()}


class Events:
    """The trace cache's events during a block."""

    def __enter__(self):
        self.before = counts()
        return self

    def __exit__(self, *exc):
        after = counts()
        self.delta = {k: after[k] - self.before[k] for k in after}


@pytest.fixture(scope="module")
def mlprogram(tmp_path_factory):
    """An ML Program with 3x3 stride-1 convolutions (Winograd on CPU: computed residuals)."""
    from mlc.testing import torch_models

    module, example = torch_models.build("resnet")
    path = torch_models.convert(module, example, target="iOS16", path=tmp_path_factory.mktemp("tc") / "m.mlpackage")
    x = np.random.default_rng(0).standard_normal(tuple(example[0].shape)).astype(np.float32)
    return str(path), {"x": x}


def _nn_classifier(path: str, seed: int = 0) -> str:
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from mlc.io.proto import import_coremltools

    ct = import_coremltools()
    rng = np.random.default_rng(seed)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(3, 8, 8))], [("probs", None)], mode="classifier")
    builder.add_convolution("conv", kernel_channels=3, output_channels=4, height=3, width=3, stride_height=1, stride_width=1,
                            border_mode="same", groups=1, W=rng.standard_normal((3, 3, 3, 4)).astype(np.float32),
                            b=rng.standard_normal(4).astype(np.float32), has_bias=True, input_name="x", output_name="c")
    builder.add_activation("relu", "RELU", "c", "r")
    builder.add_flatten("flat", mode=0, input_name="r", output_name="f")
    builder.add_inner_product("fc", W=rng.standard_normal((3, 256)).astype(np.float32), b=rng.standard_normal(3).astype(np.float32),
                              input_channels=256, output_channels=3, has_bias=True, input_name="f", output_name="logits")
    builder.add_softmax("softmax", "logits", "probs")
    builder.set_class_labels(["cat", "dog", "fish"], predicted_feature_name="label", prediction_blob="probs")
    ct.models.utils.save_spec(builder.spec, path)
    return path


@pytest.fixture(scope="module")
def nn_classifier(tmp_path_factory):
    path = _nn_classifier(str(tmp_path_factory.mktemp("tc") / "c.mlmodel"))
    return path, {"x": np.random.default_rng(1).standard_normal((3, 8, 8)).astype(np.float32)}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert a[k] == b[k]
        elif isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k]


def _entries(folder) -> list[str]:
    sub = os.path.join(folder, trace_cache.SUBFOLDER)
    return sorted(n for n in os.listdir(sub) if n.endswith(trace_cache.SUFFIX)) if os.path.isdir(sub) else []


@pytest.mark.parametrize("which", ["mlprogram", "nn_classifier"])
def test_a_hit_predicts_exactly_what_a_miss_and_no_cache_predict(which, request, tmp_path):
    path, feeds = request.getfixturevalue(which)
    folder = str(tmp_path / "xla")
    off = mlc.load(path, cache_dir=False).predict(feeds)
    with Events() as fill:
        filled = mlc.load(path, cache_dir=folder).predict(feeds)
    assert fill.delta["miss"] == 1 and fill.delta["stored"] == 1 and fill.delta["hit"] == 0
    assert len(_entries(folder)) == 1
    with Events() as hit:
        model = mlc.load(path, cache_dir=folder)
        again = model.predict(feeds)
    assert hit.delta["hit"] == 1 and hit.delta["stored"] == 0
    _same(off, filled)
    _same(off, again)
    assert model.runner.compiled_signatures() == 1
    for _ in range(2):  # later calls run the loaded function too, through predict's plan (mlc.call_plan)
        _same(off, model.predict(feeds))
    assert len(model._plans) == 1 and model._plans[next(iter(model._plans))].runner is model.runner


def test_a_batched_call_has_its_own_entry(mlprogram, tmp_path):
    path, feeds = mlprogram
    folder = str(tmp_path / "xla")
    batch = {"x": np.stack([feeds["x"], 2 * feeds["x"]])}
    off = mlc.load(path, cache_dir=False).predict_batch(batch)
    filled = mlc.load(path, cache_dir=folder).predict_batch(batch)
    with Events() as hit:
        again = mlc.load(path, cache_dir=folder).predict_batch(batch)
    assert hit.delta["hit"] == 1
    _same(off, filled)
    _same(off, again)


def test_a_fresh_process_hits_and_predicts_the_same(mlprogram, tmp_path):
    path, feeds = mlprogram
    folder = str(tmp_path / "xla")
    np.save(tmp_path / "x.npy", feeds["x"])
    code = (
        "import json, sys, numpy as np, jax, jax.monitoring\n"
        "events = []\n"
        "jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))\n"
        "import mlc\n"
        "y = mlc.load(sys.argv[1], cache_dir=sys.argv[2]).predict({'x': np.load(sys.argv[3])})\n"
        "np.savez(sys.argv[4], **y)\n"
        "print(json.dumps({e: events.count(e) for e in set(events) if e.startswith('/mlc/')}))\n"
    )
    runs = []
    for i in range(2):
        out = subprocess.run([sys.executable, "-c", code, path, folder, str(tmp_path / "x.npy"), str(tmp_path / f"y{i}.npz")],
                             capture_output=True, text=True, timeout=300, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0].get(trace_cache.STORED) == 1 and not runs[0].get(trace_cache.HIT)
    assert runs[1].get(trace_cache.HIT) == 1 and not runs[1].get(trace_cache.STORED)
    off = mlc.load(path, cache_dir=False).predict(feeds)
    for i in range(2):
        with np.load(tmp_path / f"y{i}.npz") as y:
            _same(off, dict(y))


def _damage(path: str, how: str) -> None:
    size = os.path.getsize(path)
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "empty":
        open(path, "wb").close()
    elif how == "garbage":
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    else:  # a flipped byte at a fraction of the file: the header, the executable, a residual
        with open(path, "r+b") as f:
            at = {"header": 40, "middle": size // 2, "end": size - 1}[how]
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.hostile
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "header", "middle", "end"])
def test_a_damaged_entry_is_ignored_and_rewritten(how, mlprogram, tmp_path):
    path, feeds = mlprogram
    folder = str(tmp_path / "xla")
    off = mlc.load(path, cache_dir=False).predict(feeds)
    mlc.load(path, cache_dir=folder).predict(feeds)
    (entry,) = _entries(folder)
    _damage(os.path.join(folder, trace_cache.SUBFOLDER, entry), how)
    with Events() as damaged:
        out = mlc.load(path, cache_dir=folder).predict(feeds)
    assert damaged.delta["hit"] == 0 and damaged.delta["bad"] == 1 and damaged.delta["stored"] == 1
    _same(off, out)
    with Events() as after:
        out = mlc.load(path, cache_dir=folder).predict(feeds)
    assert after.delta["hit"] == 1
    _same(off, out)


def test_another_content_or_option_is_another_entry(nn_classifier, tmp_path, monkeypatch):
    path, feeds = nn_classifier
    folder = str(tmp_path / "xla")
    mlc.load(path, cache_dir=folder).predict(feeds)
    assert len(_entries(folder)) == 1
    mlc.load(path, cache_dir=folder, compute_precision="float32").predict(feeds)
    assert len(_entries(folder)) == 2
    monkeypatch.setenv("MLC_CONV_ALGORITHM", "direct")
    mlc.load(path, cache_dir=folder).predict(feeds)
    assert len(_entries(folder)) == 3
    monkeypatch.delenv("MLC_CONV_ALGORITHM")
    mlc.load(path, cache_dir=folder, max_tensor_bytes=1 << 30).predict(feeds)
    assert len(_entries(folder)) == 4
    # the same file name, other weights written in its place: a miss, and the new weights' outputs
    copy = str(tmp_path / "c.mlmodel")
    shutil.copy(path, copy)
    mlc.load(copy, cache_dir=folder).predict(feeds)
    assert len(_entries(folder)) == 4  # same content, another path: the same entry
    _nn_classifier(copy, seed=1)
    with Events() as changed:
        out = mlc.load(copy, cache_dir=folder).predict(feeds)
    assert changed.delta["hit"] == 0 and changed.delta["stored"] == 1
    _same(mlc.load(copy, cache_dir=False).predict(feeds), out)
    assert len(_entries(folder)) == 5


def test_cache_dir_false_reads_and_writes_nothing(nn_classifier, tmp_path, monkeypatch):
    path, feeds = nn_classifier
    folder = str(tmp_path / "xla")
    mlc.load(path, cache_dir=folder).predict(feeds)  # an entry exists, and JAX's cache folder is set
    before = sorted(os.listdir(os.path.join(folder, trace_cache.SUBFOLDER)))
    with Events() as off:
        mlc.load(path, cache_dir=False).predict(feeds)
    assert off.delta == {"hit": 0, "miss": 0, "bad": 0, "stored": 0}
    assert sorted(os.listdir(os.path.join(folder, trace_cache.SUBFOLDER))) == before
    monkeypatch.setenv(trace_cache.ENV, "0")
    with Events() as disabled:
        mlc.load(path, cache_dir=folder).predict(feeds)
    assert disabled.delta == {"hit": 0, "miss": 0, "bad": 0, "stored": 0}


def test_other_weights_never_use_the_loaded_weights_entry(nn_classifier, tmp_path):
    path, feeds = nn_classifier
    folder = str(tmp_path / "xla")
    mlc.load(path, cache_dir=folder).predict(feeds)
    model = mlc.load(path, cache_dir=folder)
    new = {k: np.asarray(v) * 0.5 for k, v in model.params.items()}
    expected = mlc.load(path, cache_dir=False).with_params(new).predict(feeds)
    with Events() as trained:
        out = model.with_params(new).predict(feeds)
    assert trained.delta["hit"] == 0 and trained.delta["stored"] == 0
    _same(expected, out)


def test_a_model_that_is_not_a_file_uses_no_entry(nn_classifier, tmp_path):
    from mlc.io.spec import load_spec

    path, feeds = nn_classifier
    spec = load_spec(path).spec
    with Events() as mem:
        mlc.load(spec, cache_dir=str(tmp_path / "xla")).predict(feeds)
    assert mem.delta == {"hit": 0, "miss": 0, "bad": 0, "stored": 0}
