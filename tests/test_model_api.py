"""The MLModel-style API beyond predict: jax_function, devices, precision, coremltools drop-in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.testing.mil_program import mil_mlmodel, mil_model

W = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)


def _dense(x):
    return mb.relu(x=mb.linear(x=x, weight=W))


@pytest.fixture(scope="module")
def dense():
    return mil_model(_dense, {"x": (2, 4)})


def test_weights_are_params(dense):
    fn, params = dense.jax_function()
    assert sorted(v.shape for v in params.values()) == [(3,), (3, 4)]  # the builder adds a zero bias
    weight = next(v for v in params.values() if v.shape == (3, 4))
    np.testing.assert_array_equal(weight, W)


def test_jax_function_jit_grad_vmap(dense):
    fn, params = dense.jax_function()
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    (name,) = dense.output_description
    out = jax.jit(fn)(params, {"x": x})[name]
    np.testing.assert_allclose(out, np.maximum(x @ W.T, 0), rtol=1e-6)

    def loss(p):
        return jnp.sum(fn(p, {"x": x})[name])

    grads = jax.grad(loss)(params)
    g = next(v for v in grads.values() if v.shape == (3, 4))
    mask = (x @ W.T > 0).astype(np.float32)
    np.testing.assert_allclose(g, mask.T @ x, rtol=1e-5, atol=1e-6)  # d sum(relu(x W^T)) / dW

    xs = np.stack([x, 2 * x])
    batched = jax.vmap(fn, in_axes=(None, 0))(params, {"x": xs})[name]
    np.testing.assert_allclose(batched[1], np.maximum(2 * x @ W.T, 0), rtol=1e-5)


def test_device_cpu_and_unavailable_device():
    model = mil_model(_dense, {"x": (2, 4)}, device="cpu")
    assert model.device.platform == "cpu"
    if not any(d.platform == "tpu" for d in jax.devices()):
        with pytest.raises(mlc.MLCParametersError, match="device 'tpu' is not available"):
            mil_model(_dense, {"x": (2, 4)}, device="tpu")
    with pytest.raises(mlc.MLCParametersError, match="device must be"):
        mil_model(_dense, {"x": (2, 4)}, device=3)


def test_fp16_program_computes_in_fp32_on_cpu_by_default():
    mlmodel = mil_mlmodel(lambda x: mb.add(x=x, y=np.float16(1.0)), {"x": ((3,), "fp16")}, precision="fp16")
    x = np.array([2048.0, 1.0, 0.5], np.float16)
    auto = mlc.load(mlmodel).predict({"x": x})
    (out,) = auto.values()
    assert out.dtype == np.float16  # the declared output type
    # 2048 + 1 is not representable in fp16 (spacing 2 there) but is in fp32, then rounds on output.
    forced = next(iter(mlc.load(mlmodel, compute_precision="float16").predict({"x": x}).values()))
    np.testing.assert_array_equal(forced, (x + np.float16(1.0)).astype(np.float16))
    np.testing.assert_array_equal(out, (x.astype(np.float32) + 1).astype(np.float16))


def test_bad_compute_precision():
    with pytest.raises(mlc.MLCParametersError, match="compute_precision"):
        mil_model(_dense, {"x": (2, 4)}, compute_precision="bf16")


def test_unsupported_op_names_op_operation_and_model(monkeypatch, tmp_path):
    from mlc.frontends.mil import registry

    mlmodel = mil_mlmodel(_dense, {"x": (2, 4)})
    path = tmp_path / "model.mlpackage"
    mlmodel.save(str(path))
    real_find = registry.find
    monkeypatch.setattr(registry, "find", lambda name, opset="CoreML9": None if name == "relu" else real_find(name, opset))
    with pytest.raises(mlc.MLCUnsupportedError, match=r"model.mlpackage.*MIL op 'relu' \(operation '\w+'.*not supported") as info:
        mlc.load(path)
    assert info.value.code == "unsupported"


def test_load_errors(tmp_path):
    with pytest.raises(mlc.MLCIOError, match="no such file"):
        mlc.load(tmp_path / "missing.mlpackage")
    with pytest.raises(mlc.MLCIOError, match="cannot load a model from int"):
        mlc.load(42)


def test_multifunction_package(ct, tmp_path):
    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    a, b = tmp_path / "a.mlpackage", tmp_path / "b.mlpackage"
    mil_mlmodel(lambda x: mb.mul(x=x, y=2.0), {"x": (3,)}).save(str(a))
    mil_mlmodel(lambda x: mb.add(x=x, y=5.0), {"x": (3,)}).save(str(b))
    desc = MultiFunctionDescriptor()
    desc.add_function(str(a), src_function_name="main", target_function_name="double")
    desc.add_function(str(b), src_function_name="main", target_function_name="plus5")
    desc.default_function_name = "plus5"
    path = tmp_path / "multi.mlpackage"
    save_multifunction(desc, str(path))
    x = np.arange(3, dtype=np.float32)
    default = mlc.load(path)
    assert default.function_name == "plus5"
    np.testing.assert_array_equal(next(iter(default.predict({"x": x}).values())), x + 5)
    double = mlc.load(path, function_name="double")
    np.testing.assert_array_equal(next(iter(double.predict({"x": x}).values())), 2 * x)
    with pytest.raises(mlc.MLCParametersError, match="no function 'nope'"):
        mlc.load(path, function_name="nope")


def test_coremltools_drop_in(ct, tmp_path):
    import mlc.deploy.coremltools_backend as backend

    path = tmp_path / "dense.mlpackage"
    mil_mlmodel(_dense, {"x": (2, 4)}).save(str(path))
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    backend.install()
    try:
        out = ct.models.MLModel(str(path)).predict({"x": x})
        np.testing.assert_allclose(next(iter(out.values())), np.maximum(x @ W.T, 0), rtol=1e-6)
    finally:
        backend.uninstall()
    assert not backend.installed()


def test_import_is_quiet():
    import subprocess
    import sys

    code = "import mlc; m = mlc.load(mlc.cli.DEMO_MODEL) if False else None; import mlc.cli; import mlc.io.proto as p; p.import_coremltools()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Failed to load" not in result.stderr + result.stdout
    assert "has not been tested" not in result.stderr + result.stdout
