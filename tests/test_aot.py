"""``mlc compile`` / ``.mlc`` artifacts (mlc.deploy.aot, mlc.io.mlc_file): round trips against torch,
numpy and scikit-learn, loading without coremltools, and every malformed file refused."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import mlc
from mlc import cli
from mlc.io import mlc_file
from mlc.testing import torch_models


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A ResNet-style CNN as an ML Program (fp16 weights), its .mlc, torch module and example."""
    folder = tmp_path_factory.mktemp("aot")
    module, example = torch_models.build("resnet")
    path = torch_models.convert(module, example, target="iOS16", precision="fp16", path=folder / "cnn.mlpackage")
    compiled = folder / "cnn.mlc"
    assert mlc.load(path).compile(compiled).batched
    return path, compiled, module, example


def _torch(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_compiled_cnn_matches_torch_and_the_package(cnn):
    path, compiled, module, example = cnn
    x = example[0].numpy()
    model = mlc.load(compiled)
    assert model.spec is None and model.program.batched is not None
    y = model.predict({"x": x})["y"]
    # fp16 weights and activations rounded as Core ML stores them; computed in fp32 on CPU
    np.testing.assert_allclose(y, _torch(module, x), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(y, mlc.load(path).predict({"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_compiled_file_holds_prepared_weights_not_a_prepare_module(cnn):
    """The weight-only results are computed when compiling and stored as the compiled model's
    params (``prepared/<i>``); loading runs no weight-only module."""
    path, compiled, _, example = cnn
    f = mlc_file.MLCFile(str(compiled))
    assert "prepare" not in f and "run" in f
    keys = f.header["param_keys"]
    assert any(k.startswith("prepared/") for k in keys)
    assert all(set(r) == {"param"} for r in f.header["residuals"])
    model = mlc.load(compiled)
    assert sorted(model.params) == keys
    x = example[0].numpy()
    np.testing.assert_allclose(model.predict({"x": x})["y"], mlc.load(path).predict({"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_compiled_model_hits_the_trace_cache_and_predicts_the_same(cnn, tmp_path):
    import jax.monitoring

    from mlc.runtime import trace_cache

    _, compiled, _, example = cnn
    x = example[0].numpy()
    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    off = mlc.load(compiled, cache_dir=False).predict({"x": x})["y"]
    filled = mlc.load(compiled, cache_dir=str(tmp_path / "xla")).predict({"x": x})["y"]
    assert events.count(trace_cache.STORED) == 1
    hit = mlc.load(compiled, cache_dir=str(tmp_path / "xla")).predict({"x": x})["y"]
    assert events.count(trace_cache.HIT) == 1
    np.testing.assert_array_equal(off, filled)
    np.testing.assert_array_equal(off, hit)


def test_compiled_predict_batch_any_size(cnn):
    _, compiled, module, example = cnn
    model = mlc.load(compiled)
    rng = np.random.default_rng(0)
    for n in (1, 3):
        xs = rng.normal(size=(n, *example[0].shape)).astype(np.float32)
        ys = model.predict_batch({"x": xs})["y"]
        assert ys.shape[0] == n
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(y, _torch(module, x), rtol=2e-2, atol=2e-2)


def test_compiled_model_describes_itself(cnn):
    path, compiled, _, _ = cnn
    source, model = mlc.load(path), mlc.load(compiled)
    assert str(model.input_description) == str(source.input_description)
    assert str(model.output_description) == str(source.output_description)
    assert model.short_description == source.short_description
    assert model.user_defined_metadata == source.user_defined_metadata
    assert model.name == "cnn.mlpackage"


@pytest.mark.hostile
def test_wrong_input_shape_is_a_feature_type_error(cnn):
    _, compiled, _, example = cnn
    model = mlc.load(compiled)
    with pytest.raises(mlc.MLCFeatureTypeError, match="shape"):
        model.predict({"x": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(mlc.MLCFeatureTypeError, match="'z'"):
        model.predict({"x": example[0].numpy(), "z": np.zeros(1)})


def test_compiled_model_cannot_be_saved(cnn, tmp_path):
    model = mlc.load(cnn[1])
    with pytest.raises(mlc.MLCUnsupportedError, match="compiled"):
        model.save(tmp_path / "back.mlpackage")
    assert not (tmp_path / "back.mlpackage").exists()


def test_loads_and_runs_without_coremltools(cnn, tmp_path):
    """A subprocess in which importing coremltools or protobuf fails."""
    _, compiled, module, example = cnn
    x = example[0].numpy()
    np.save(tmp_path / "x.npy", x)
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('coremltools', 'google'):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import numpy as np, mlc
y = mlc.load({str(compiled)!r}).predict({{'x': np.load({str(tmp_path / 'x.npy')!r})}})['y']
np.save({str(tmp_path / 'y.npy')!r}, y)
assert not any(m.startswith(('coremltools', 'google.protobuf')) for m in sys.modules)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _torch(module, x), rtol=2e-2, atol=2e-2)


def _classifier_model(tmp_path):
    """A NeuralNetwork classifier: innerProduct + softmax over labels, its weights, as .mlmodel."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(4))], [("probs", None)], mode="classifier")
    builder.add_inner_product("fc", w, b, 4, 3, has_bias=True, input_name="x", output_name="logits")
    builder.add_softmax("sm", "logits", "probs")
    builder.set_class_labels(["cat", "dog", "eel"], predicted_feature_name="label", prediction_blob="probs")
    path = tmp_path / "clf.mlmodel"
    from mlc.io.writer import write_mlmodel

    write_mlmodel(str(path), builder.spec)
    return path, w, b


def test_compiled_classifier_labels_and_probabilities(tmp_path):
    path, w, b = _classifier_model(tmp_path)
    mlc.load(path).compile(tmp_path / "clf.mlc")
    model = mlc.load(tmp_path / "clf.mlc")
    x = np.array([0.5, -1.0, 2.0, 0.1], np.float32)
    logits = w @ x + b
    p = np.exp(logits - logits.max())
    p /= p.sum()
    out = model.predict({"x": x})
    assert out["label"] == ["cat", "dog", "eel"][int(np.argmax(p))]
    np.testing.assert_allclose([out["probs"][k] for k in ("cat", "dog", "eel")], p, rtol=1e-5)
    batch = model.predict_batch({"x": np.stack([x, -x])})
    assert batch["label"][0] == out["label"] and len(batch["probs"]) == 2


def test_compiled_classic_model_computes_in_double(tmp_path):
    from sklearn.linear_model import LinearRegression

    from mlc.io.proto import import_coremltools

    ct = import_coremltools()
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    reg = LinearRegression().fit(X, y)
    ct.converters.sklearn.convert(reg, ["a", "b", "c"], "t").save(str(tmp_path / "lin.mlmodel"))
    mlc.load(tmp_path / "lin.mlmodel").compile(tmp_path / "lin.mlc")
    model = mlc.load(tmp_path / "lin.mlc")
    got = model.predict({"a": X[0, 0], "b": X[0, 1], "c": X[0, 2]})["t"]
    assert got == pytest.approx(reg.predict(X[:1])[0], rel=1e-12)


def test_cli_compile_then_predict(cnn, tmp_path, capsys):
    path, _, module, example = cnn
    out = tmp_path / "cli.mlc"
    assert cli.main(["compile", str(path), "-o", str(out), "--platform", "cpu", "--no-batch"]) == 0
    assert "wrote" in capsys.readouterr().out
    x = example[0].numpy()
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", str(out), "--input", f"x={tmp_path / 'x.npy'}", "--save", str(tmp_path / "y.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["y"], _torch(module, x), rtol=2e-2, atol=2e-2)
    with pytest.raises(mlc.MLCUnsupportedError, match="no batched"):
        mlc.load(out).predict_batch({"x": x[None]})


@pytest.mark.hostile
def test_cli_compile_bad_suffix_writes_nothing(cnn, tmp_path, capsys):
    assert cli.main(["compile", str(cnn[0]), "-o", str(tmp_path / "x.mlpackage")]) == 2
    assert "[parameters]" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


@pytest.mark.hostile
def test_platform_not_compiled_for_is_refused(cnn, tmp_path):
    out = tmp_path / "tpu.mlc"
    mlc.load(cnn[0]).compile(out, platforms=("tpu",))
    with pytest.raises(mlc.MLCUnsupportedError, match="compiled for tpu"):
        mlc.load(out)


@pytest.mark.hostile
def test_failed_compile_keeps_the_old_file(cnn, tmp_path, monkeypatch):
    out = tmp_path / "keep.mlc"
    out.write_bytes(b"old contents")
    from mlc.deploy import aot

    def boom(*a, **k):
        raise mlc.MLCUnsupportedError("interrupted")

    monkeypatch.setattr(aot, "_export_all", boom)
    with pytest.raises(mlc.MLCUnsupportedError):
        mlc.load(cnn[0]).compile(out)
    assert out.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["keep.mlc"]


def test_models_that_cannot_be_compiled(tmp_path):
    from mlc.testing.mil_program import mil_model
    from coremltools.converters.mil import Builder as mb

    eager = mil_model(lambda x: mb.non_zero(x=x), {"x": (4,)})
    eager.predict({"x": np.array([0, 1, 0, 2], np.float32)})  # found to be data-dependent
    with pytest.raises(mlc.MLCUnsupportedError, match="depend on data"):
        eager.compile(tmp_path / "nz.mlc")
    with pytest.raises(mlc.MLCParametersError, match=".mlc"):
        eager.compile(tmp_path / "nz.bin")
    assert not os.listdir(tmp_path)


# -- malformed files ---------------------------------------------------------------------------
def _header_and_rest(path):
    data = path.read_bytes()
    magic, version, n = struct.unpack_from("<7sBQ", data, 0)
    return json.loads(data[16 : 16 + n]), data


def _rewrite(path, out, header_edit):
    header, data = _header_and_rest(path)
    header_edit(header)
    sections = {e["name"]: data[e["offset"] : e["offset"] + e["size"]] for e in _header_and_rest(path)[0]["sections"]}
    mlc_file.write(str(out), {k: v for k, v in header.items() if k != "sections"}, sections)


@pytest.mark.hostile
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: b"", "shorter than the header"),
        (lambda d: b"PK\x03\x04" + d[4:], "bad magic"),
        (lambda d: d[:7] + b"\x09" + d[8:], "format version 9"),
        (lambda d: d[:8] + struct.pack("<Q", 1 << 40) + d[16:], "past the end"),
        (lambda d: d[:16] + b"{not json" + d[25:], "not valid JSON"),
        (lambda d: d[: len(d) // 2], "outside the data"),
    ],
    ids=["empty", "zip", "version", "header-length", "json", "truncated"],
)
def test_corrupt_files_are_io_errors(cnn, tmp_path, corrupt, message):
    bad = tmp_path / "bad.mlc"
    bad.write_bytes(corrupt(cnn[1].read_bytes()))
    with pytest.raises(mlc.MLCIOError, match=message) as e:
        mlc.load(bad)
    assert str(bad) in str(e.value)


@pytest.mark.hostile
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h.update(format="other"), "'format'"),
        (lambda h: h["params"][0].update(dtype="complex256"), "unknown dtype"),
        (lambda h: h["params"][0].update(shape=[-1]), "non-negative"),
        (lambda h: h["params"][0].update(shape=[1, 2, 3]), "needs"),
        (lambda h: h.update(param_keys=h["param_keys"][:-1]), "param_keys"),
        (lambda h: h["residuals"].__setitem__(0, {"param": 10**6}), "residuals"),
        (lambda h: h.update(inputs=[{"name": 3}]), "feature"),
        (lambda h: h.update(platforms="cpu"), "'platforms'"),
    ],
    ids=["format", "dtype", "negative-shape", "size", "keys", "residual", "feature", "platforms"],
)
def test_malformed_headers_are_refused(cnn, tmp_path, edit, message):
    bad = tmp_path / "bad.mlc"
    _rewrite(cnn[1], bad, edit)
    with pytest.raises(mlc.MLCError, match=message):
        mlc.load(bad)


def test_overlapping_and_missing_sections(cnn, tmp_path):
    header, data = _header_and_rest(cnn[1])
    n = struct.unpack_from("<Q", data, 8)[0]
    sections = header["sections"]
    sections[1]["offset"] = sections[0]["offset"]
    blob = json.dumps(header, sort_keys=True).encode()
    assert len(blob) <= n
    bad = tmp_path / "overlap.mlc"
    bad.write_bytes(data[:16] + blob + b" " * (n - len(blob)) + data[16 + n :])
    with pytest.raises(mlc.MLCIOError, match="overlap"):
        mlc.load(bad)
    missing = tmp_path / "missing.mlc"
    header, data = _header_and_rest(cnn[1])
    kept = {e["name"]: data[e["offset"] : e["offset"] + e["size"]] for e in header["sections"] if e["name"] != "run"}
    mlc_file.write(str(missing), {k: v for k, v in header.items() if k != "sections"}, kept)
    with pytest.raises(mlc.MLCIOError, match="'run' is missing"):
        mlc.load(missing)


def test_garbage_module_is_an_io_error(cnn, tmp_path):
    header, data = _header_and_rest(cnn[1])
    sections = {e["name"]: data[e["offset"] : e["offset"] + e["size"]] for e in header["sections"]}
    sections["run"] = b"\x00" * 64
    bad = tmp_path / "garbage.mlc"
    mlc_file.write(str(bad), {k: v for k, v in header.items() if k != "sections"}, sections)
    with pytest.raises(mlc.MLCIOError, match="'run'"):
        mlc.load(bad)


def test_cli_info_reads_the_header(cnn, capsys):
    assert cli.main(["info", str(cnn[1]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compiled_from"] == "cnn.mlpackage" and report["batched"] is True
    assert "cpu" in report["platforms"] and list(report["inputs"]) == ["x"]
    assert cli.main(["info", str(cnn[1]), "--cost"]) == 2
    assert "[unsupported]" in capsys.readouterr().err
