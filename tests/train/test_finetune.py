"""``mlc.finetune`` and ``Model.as_flax`` on models converted from torch; the oracle is the
same torch module trained with the same mini-batches and hyper-parameters (weights to 2e-5)."""

from __future__ import annotations

import numpy as np
import optax
import pytest
import torch
import jax.numpy as jnp
from flax import nnx

import mlc

WEIGHT_ATOL = 2e-5


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()


def _convert(ct, net, **kw):
    traced = torch.jit.trace(net, torch.zeros(1, 4))
    return ct.convert(traced, inputs=[ct.TensorType("x", shape=(1, 4))], outputs=[ct.TensorType("y")], **kw)


@pytest.fixture(scope="module")
def program(ct):
    net = _net()
    ml = _convert(ct, net, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15, compute_precision=ct.precision.FLOAT32)
    return ml, net


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(20, 1, 4)).astype(np.float32), "t": rng.normal(size=(20, 1, 2)).astype(np.float32)}


def mse(outputs, batch):
    return jnp.mean((outputs["y"] - batch["t"]) ** 2)


def _keys_by_shape(model):
    """The program's params for torch's state-dict entries (matched by layer order and role)."""
    names = sorted(model.params)  # var_0_bias, var_0_weight, var_2_bias, var_2_weight
    return {"0.bias": names[0], "0.weight": names[1], "2.bias": names[2], "2.weight": names[3]}


def _torch_steps(net, params, opt, data, batches):
    x, t = torch.from_numpy(data["x"]), torch.from_numpy(data["t"])
    for idx in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x[idx]), t[idx]).backward()
        opt.step()


def _diff(model, net, keys):
    sd = net.state_dict()
    return max(float(np.abs(np.asarray(model.params[k]) - sd[t].numpy()).max()) for t, k in keys.items())


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_ml_program_matches_torch(program, data, name):
    ml, _ = program
    net = _net()
    model = mlc.load(ml)
    tx = optax.sgd(0.1, momentum=0.9) if name == "sgd" else optax.adam(0.01)
    seen = []
    task = mlc.finetune(model, data, loss=mse, optimizer=tx, epochs=3, batch_size=6, seed=4,
                        progress={"mini_batch_end": lambda c: seen.append(c.indices.copy())})
    assert len(seen) == 12
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) if name == "sgd" else torch.optim.Adam(net.parameters(), lr=0.01)
    _torch_steps(net, net.parameters(), opt, data, seen)
    assert _diff(task.model, net, _keys_by_shape(model)) < WEIGHT_ATOL
    assert task.history.epoch_loss[-1] < task.history.epoch_loss[0]


def test_only_trainable_params_change(program, data):
    ml, _ = program
    net = _net()
    model = mlc.load(ml)
    keys = _keys_by_shape(model)
    seen = []
    task = mlc.finetune(model, data, loss=mse, trainable=["var_2_*"], optimizer=optax.sgd(0.05), epochs=2, batch_size=5,
                        progress={"mini_batch_end": lambda c: seen.append(c.indices.copy())})
    _torch_steps(net, None, torch.optim.SGD(net[2].parameters(), lr=0.05), data, seen)
    assert _diff(task.model, net, keys) < WEIGHT_ATOL
    for k in (keys["0.weight"], keys["0.bias"]):
        np.testing.assert_array_equal(np.asarray(task.model.params[k]), np.asarray(model.params[k]))


def test_saved_package_predicts_like_the_model_in_memory(program, data, tmp_path, ct):
    ml, _ = program
    task = mlc.finetune(mlc.load(ml), data, loss=mse, optimizer=optax.adam(0.05), epochs=2, batch_size=8)
    out = tmp_path / "Tuned.mlpackage"
    task.model.save(out)
    ct.models.MLModel(str(out), skip_model_load=True)  # coremltools reads the package
    reloaded = mlc.load(out)
    for i in range(4):
        np.testing.assert_array_equal(reloaded.predict({"x": data["x"][i]})["y"], task.model.predict({"x": data["x"][i]})["y"])
    with pytest.raises(mlc.MLCIOError):
        task.model.save(tmp_path / "Tuned.mlmodel")  # an ML Program is a package
    assert not (tmp_path / "Tuned.mlmodel").exists()


def test_fp16_program_is_rounded_as_saved(ct, data, tmp_path):
    ml = _convert(ct, _net(), convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15, compute_precision=ct.precision.FLOAT16)
    model = mlc.load(ml)
    assert set(model.program.param_storage.values()) == {"fp16"}
    task = mlc.finetune(model, data, loss=mse, optimizer=optax.adam(0.05), epochs=1, batch_size=10)
    for v in task.model.params.values():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(v).astype(np.float16).astype(np.float32))
    task.model.save(tmp_path / "Half.mlpackage")
    reloaded = mlc.load(tmp_path / "Half.mlpackage")
    np.testing.assert_array_equal(reloaded.predict({"x": data["x"][0]})["y"], task.model.predict({"x": data["x"][0]})["y"])


def test_neural_network_model_finetunes_and_saves(ct, data, tmp_path):
    net = _net()
    ml = _convert(ct, net, convert_to="neuralnetwork")
    model = mlc.load(ml)
    seen = []
    task = mlc.finetune(model, data, loss=mse, optimizer=optax.sgd(0.1), epochs=2, batch_size=7,
                        progress={"mini_batch_end": lambda c: seen.append(c.indices.copy())})
    _torch_steps(net, None, torch.optim.SGD(net.parameters(), lr=0.1), data, seen)
    with torch.no_grad():
        expected = net(torch.from_numpy(data["x"][3])).numpy()
    np.testing.assert_allclose(task.model.predict({"x": data["x"][3]})["y"], expected, atol=1e-5)
    task.model.save(tmp_path / "Tuned.mlmodel")
    np.testing.assert_array_equal(mlc.load(tmp_path / "Tuned.mlmodel").predict({"x": data["x"][3]})["y"],
                                  task.model.predict({"x": data["x"][3]})["y"])


def test_compressed_weights_are_refused_as_trainable(ct, data):
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

    ml = _convert(ct, _net(), convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    small = palettize_weights(ml, OptimizationConfig(global_config=OpPalettizerConfig(nbits=2, weight_threshold=8)))
    model = mlc.load(small)
    compressed = [k for k, s in model.program.param_storage.items() if s == "compressed"]
    assert compressed
    with pytest.raises(mlc.MLCUnsupportedError, match="compressed weight"):
        mlc.finetune(model, data, loss=mse, trainable=compressed[:1])
    task = mlc.finetune(model, data, loss=mse, epochs=1)  # the dense params train, the compressed stay frozen
    for k in compressed:
        np.testing.assert_array_equal(np.asarray(task.model.params[k]), np.asarray(model.params[k]))


def test_as_flax_inside_a_larger_model_matches_torch(program, data, tmp_path):
    ml, _ = program
    net = _net()
    model = mlc.load(ml)
    keys = _keys_by_shape(model)

    class Head(nnx.Module):
        def __init__(self, core):
            self.core = core
            self.scale = nnx.Param(jnp.ones((1, 2)))

        def __call__(self, x):
            return self.core({"x": x}, batched=True)["y"] * self.scale[...]

    head = Head(model.as_flax(trainable="var_0_*"))
    assert {type(v).__name__ for k, v in head.core.weights.items() if k.startswith("var_2")} == {"Frozen"}
    optimizer = nnx.Optimizer(head, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(head, optimizer, x, t):
        loss, grads = nnx.value_and_grad(lambda h: jnp.mean((h(x) - t) ** 2))(head)
        optimizer.update(head, grads)
        return loss

    scale = torch.nn.Parameter(torch.ones(1, 2))
    opt = torch.optim.SGD(list(net[0].parameters()) + [scale], lr=0.1)
    for start in range(0, 20, 5):
        x, t = data["x"][start : start + 5], data["t"][start : start + 5]
        step(head, optimizer, x, t)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(torch.from_numpy(x)) * scale, torch.from_numpy(t)).backward()
        opt.step()
    trained = head.core.to_model()
    assert _diff(trained, net, keys) < WEIGHT_ATOL
    np.testing.assert_allclose(np.asarray(head.scale[...]), scale.detach().numpy(), atol=WEIGHT_ATOL)
    head.core.save(tmp_path / "Core.mlpackage")
    np.testing.assert_array_equal(mlc.load(tmp_path / "Core.mlpackage").predict({"x": data["x"][0]})["y"],
                                  trained.predict({"x": data["x"][0]})["y"])


# -- bad input ------------------------------------------------------------------------------
def test_bad_arguments(program, data):
    model = mlc.load(program[0])
    with pytest.raises(mlc.MLCUpdateError, match="matches no param"):
        mlc.finetune(model, data, loss=mse, trainable="conv*")
    with pytest.raises(mlc.MLCUpdateError, match="must return a scalar"):
        mlc.finetune(model, data, loss=lambda o, b: o["y"])
    with pytest.raises(mlc.MLCUpdateError, match="loss failed.*KeyError"):
        mlc.finetune(model, data, loss=lambda o, b: b["target"].sum())
    with pytest.raises(mlc.MLCUpdateError, match="loss must be a callable"):
        mlc.finetune(model, data, loss="mse")
    with pytest.raises(mlc.MLCUpdateError, match="training data has no 'x'"):
        mlc.finetune(model, {"t": data["t"]}, loss=mse)
    with pytest.raises(mlc.MLCUpdateError, match="'label' holds"):
        mlc.finetune(model, {**data, "label": ["a"] * 20}, loss=mse)
    with pytest.raises(mlc.MLCUpdateError, match="empty"):
        mlc.finetune(model, {"x": data["x"][:0], "t": data["t"][:0]}, loss=mse)
    with pytest.raises(mlc.MLCUpdateError, match="batch_size must be a positive integer"):
        mlc.finetune(model, data, loss=mse, batch_size=0)


def test_classic_models_are_refused():
    from coremltools.models import datatypes
    from coremltools.models.utils import _get_model  # noqa: F401  (coremltools is importable)
    from mlc.io.proto import proto

    spec = proto("Model").Model()
    spec.specificationVersion = 1
    spec.description.input.add().name = "x"
    spec.description.input[0].type.multiArrayType.shape.append(2)
    spec.description.input[0].type.multiArrayType.dataType = 65600
    spec.description.output.add().name = "y"
    spec.description.output[0].type.doubleType.SetInParent()
    spec.glmRegressor.weights.add().value.extend([1.0, 2.0])
    spec.glmRegressor.offset.append(0.0)
    assert datatypes
    with pytest.raises(mlc.MLCUnsupportedError, match="glmRegressor"):
        mlc.finetune(mlc.load(spec), {"x": np.zeros((2, 2))}, loss=lambda o, b: 0.0)
