"""``mlc.update`` on updatable NeuralNetwork models; the oracle is a torch training loop with
the same initial weights, the same mini-batches in the same order and the same
hyper-parameters. Losses are means over the mini-batch (cross entropy ``-log p[target]``,
MSE over all elements). Weights agree to 2e-5 (float32 arithmetic in a different order over
up to 15 steps; the observed differences are below 3e-6)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import mlc
from mlc.train.nn_spec import read_update_spec

from mlc.testing.updatable import CLASSES, conv_model, max_weight_difference, mlp_model, torch_train

WEIGHT_ATOL = 2e-5


def _data(n=22, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    index = rng.integers(0, 3, n)
    return x, index


def _run(spec, data, **kw):
    seen = []
    task = mlc.update(mlc.load(spec), data, progress={"mini_batch_end": lambda c: seen.append(c.indices.copy())}, **kw)
    return task, seen


MLP_PARAMS = {"fc1/weights": "fc1.weight", "fc1/bias": "fc1.bias", "fc2/weights": "fc2.weight", "fc2/bias": "fc2.bias"}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_mlp_matches_torch(optimizer, loss):
    spec, net = mlp_model(loss, optimizer)
    x, index = _data()
    if loss == "ce":
        data = {"x": x, "label": [CLASSES[i] for i in index]}
        target = index
    else:
        target = np.random.default_rng(2).normal(size=(len(x), 3)).astype(np.float32)
        data = {"x": x, "y_true": target}
    task, batches = _run(spec, data)
    assert task.state == "completed"
    assert len(batches) == 5 * 6  # 5 epochs of ceil(22 / 4) mini-batches
    torch_train(net, list(net.parameters()), optimizer, loss, x, target, batches)
    diff = max_weight_difference(task.model, net, MLP_PARAMS)
    assert diff < WEIGHT_ATOL, diff
    history = task.history.epoch_loss
    assert len(history) == 5 and history[-1] < history[0]
    assert task.result.metrics["loss"] == pytest.approx(history[-1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_conv_net_matches_torch_and_freezes_other_layers(optimizer):
    spec, net = conv_model(optimizer)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(18, 2, 6, 6)).astype(np.float32)
    index = rng.integers(0, 3, 18)
    task, batches = _run(spec, {"image": x, "probs_true": index.reshape(-1, 1).astype(np.int32)})
    trainable = [net.conv.weight, net.conv.bias, net.fc.weight, net.fc.bias]
    frozen_before = {k: np.asarray(v).copy() for k, v in mlc.load(spec).params.items() if not k.startswith(("conv/", "fc/"))}
    torch_train(net, trainable, optimizer, "ce", x, index, batches)
    names = {"conv/weights": "conv.weight", "conv/bias": "conv.bias", "fc/weights": "fc.weight", "fc/bias": "fc.bias"}
    diff = max_weight_difference(task.model, net, names)
    assert diff < WEIGHT_ATOL, diff
    for k, v in frozen_before.items():
        np.testing.assert_array_equal(np.asarray(task.model.params[k]), v)
    with torch.no_grad():
        expected = net(torch.from_numpy(x[:1])).numpy().reshape(-1)
    got = task.model.predict({"image": x[0]})["probs"].reshape(-1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_plain_sgd_and_one_example_batches_match_torch():
    spec, net = mlp_model("ce", "sgd_plain", batch=1, epochs=1)
    x, index = _data(n=7)
    task, batches = _run(spec, {"x": x, "label": [CLASSES[i] for i in index]})
    assert [len(b) for b in batches] == [1] * 7
    torch_train(net, list(net.parameters()), "sgd_plain", "ce", x, index, batches)
    assert max_weight_difference(task.model, net, MLP_PARAMS) < WEIGHT_ATOL


def test_shuffle_is_reproducible_with_a_seed():
    spec, _ = mlp_model("ce", "sgd")
    x, index = _data()
    data = {"x": x, "label": [CLASSES[i] for i in index]}
    a, batches_a = _run(spec, data)
    b, batches_b = _run(spec, data)
    assert all(np.array_equal(p, q) for p, q in zip(batches_a, batches_b))
    for k in a.model.params:
        np.testing.assert_array_equal(np.asarray(a.model.params[k]), np.asarray(b.model.params[k]))
    orders = [np.concatenate(batches_a[i * 6 : (i + 1) * 6]) for i in range(5)]
    assert all(sorted(o) == list(range(22)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])  # a fresh permutation every epoch
    other_seed = mlp_model("ce", "sgd", seed=123)[0]
    _, batches_d = _run(other_seed, data)
    assert not np.array_equal(np.concatenate(batches_d[:6]), orders[0])


def test_without_shuffle_batches_are_in_order():
    spec, _ = mlp_model("ce", "sgd", seed=None)
    spec.neuralNetworkClassifier.updateParams.shuffle.defaultValue = False
    x, index = _data(n=10)
    _, batches = _run(spec, {"x": x, "label": [CLASSES[i] for i in index]}, epochs=2)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2


def test_list_of_feature_dicts_equals_stacked_arrays():
    spec, _ = mlp_model("ce", "adam")
    x, index = _data(n=9)
    rows = [{"x": x[i], "label": CLASSES[index[i]]} for i in range(9)]
    a, _ = _run(spec, rows, epochs=1)
    b, _ = _run(spec, {"x": x, "label": [CLASSES[i] for i in index]}, epochs=1)
    for k in a.model.params:
        np.testing.assert_array_equal(np.asarray(a.model.params[k]), np.asarray(b.model.params[k]))


def test_events_order_and_cancellation():
    spec, _ = mlp_model("ce", "sgd")
    x, index = _data()
    events = []

    def handler(ctx):
        events.append((ctx.event, ctx.epoch, ctx.mini_batch))
        if ctx.event == "mini_batch_end" and ctx.epoch == 1 and ctx.mini_batch == 2:
            ctx.task.cancel()

    task = mlc.update(mlc.load(spec), {"x": x, "label": [CLASSES[i] for i in index]}, progress=handler)
    assert events[0] == ("training_begin", -1, -1)
    assert events[1:8] == [("mini_batch_end", 0, b) for b in range(6)] + [("epoch_end", 0, -1)]
    assert events[-1] == ("mini_batch_end", 1, 2)
    assert task.state == "cancelled" and task.result.cancelled
    assert len(task.history.mini_batch) == 9 and len(task.history.epoch) == 1


def test_context_model_is_the_current_weights():
    spec, _ = mlp_model("ce", "sgd")
    x, index = _data(n=8)
    snapshots = []
    task = mlc.update(mlc.load(spec), {"x": x, "label": [CLASSES[i] for i in index]},
                      progress={"epoch_end": lambda c: snapshots.append(c.model)}, epochs=2)
    assert len(snapshots) == 2
    for k in task.model.params:
        np.testing.assert_array_equal(np.asarray(snapshots[-1].params[k]), np.asarray(task.model.params[k]))


def test_save_round_trip_stays_updatable(tmp_path, ct):
    spec, _ = mlp_model("ce", "adam")
    source = tmp_path / "Classifier.mlmodel"
    ct.models.utils.save_spec(spec, str(source))
    before = source.read_bytes()
    x, index = _data()
    task = mlc.update(str(source), {"x": x, "label": [CLASSES[i] for i in index]})
    out = tmp_path / "Personalized.mlmodel"
    task.model.save(out)
    assert source.read_bytes() == before  # the original is never touched
    reloaded = mlc.load(out)
    for i in range(5):
        assert reloaded.predict({"x": x[i]}) == task.model.predict({"x": x[i]})
    saved = ct.models.MLModel(str(out)).get_spec()
    assert saved.isUpdatable
    us = read_update_spec(saved, str(out))  # Core ML's updatable-model checks still pass
    assert us.trainable == ["fc1/weights", "fc1/bias", "fc2/weights", "fc2/bias"]
    assert all(layer.innerProduct.weights.isUpdatable for layer in saved.neuralNetworkClassifier.layers if layer.isUpdatable)
    again = mlc.update(reloaded, {"x": x, "label": [CLASSES[i] for i in index]}, epochs=1)
    assert again.state == "completed"
    package = tmp_path / "Personalized.mlpackage"
    task.model.save(package)
    assert mlc.load(package).predict({"x": x[0]}) == task.model.predict({"x": x[0]})
    with pytest.raises(mlc.MLCIOError, match="loaded from"):
        mlc.load(source).save(source)


def test_overrides_within_the_allowed_values():
    spec, _ = mlp_model("ce", "sgd")
    x, index = _data(n=8)
    data = {"x": x, "label": [CLASSES[i] for i in index]}
    task = mlc.update(mlc.load(spec), data, epochs=2, mini_batch_size=8, learning_rate=0.01)
    assert len(task.history.mini_batch) == 2
    with pytest.raises(mlc.MLCUpdateError, match="epochs=7 is not one of the values"):
        mlc.update(mlc.load(spec), data, epochs=7)
    with pytest.raises(mlc.MLCUpdateError, match=r"learning_rate=5.0 is outside the range"):
        mlc.update(mlc.load(spec), data, learning_rate=5.0)
    with pytest.raises(mlc.MLCUpdateError, match="beta1 does not apply"):
        mlc.update(mlc.load(spec), data, beta1=0.5)
    with pytest.raises(mlc.MLCUpdateError, match="learning_rate must be a number"):
        mlc.update(mlc.load(spec), data, learning_rate="fast")
    with pytest.raises(mlc.MLCUpdateError, match="shuffle must be True or False"):
        mlc.update(mlc.load(spec), data, shuffle="yes")
    with pytest.raises(mlc.MLCUpdateError, match="unknown update parameter 'lr'"):
        mlc.update(mlc.load(spec), data, lr=0.5)


# -- bad input ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier():
    return mlc.load(mlp_model("ce", "sgd")[0])


def test_missing_training_input(classifier):
    x, _ = _data()
    with pytest.raises(mlc.MLCUpdateError, match="training data has no 'label'"):
        mlc.update(classifier, {"x": x})


def test_label_outside_the_class_set(classifier):
    x, index = _data(n=4)
    with pytest.raises(mlc.MLCUpdateError, match="example 2 has label 'wolf'.*not one of the model's classes"):
        mlc.update(classifier, {"x": x, "label": ["cat", "dog", "wolf", "fox"]})


def test_class_index_outside_the_classes():
    model = mlc.load(mlp_model("ce", "sgd", classifier=False)[0])
    x, _ = _data(n=3)
    with pytest.raises(mlc.MLCUpdateError, match=r"example 1 has class index 3, outside \[0, 3\)"):
        mlc.update(model, {"x": x, "probs_true": np.array([[0], [3], [1]], np.int32)})


def test_empty_dataset(classifier):
    with pytest.raises(mlc.MLCUpdateError, match="empty"):
        mlc.update(classifier, {"x": np.zeros((0, 4), np.float32), "label": []})
    with pytest.raises(mlc.MLCUpdateError, match="empty"):
        mlc.update(classifier, [])


def test_wrong_input_shape(classifier):
    with pytest.raises(mlc.MLCUpdateError, match="training input 'x'"):
        mlc.update(classifier, {"x": np.zeros((3, 5), np.float32), "label": ["cat"] * 3})


def test_model_that_is_not_updatable():
    spec, _ = mlp_model("ce", "sgd")
    spec.isUpdatable = False
    with pytest.raises(mlc.MLCUpdateError, match="not marked updatable.*mlc.finetune"):
        mlc.update(mlc.load(spec), {"x": np.zeros((2, 4), np.float32), "label": ["cat"] * 2})


def test_model_with_no_updatable_layer():
    spec, _ = mlp_model("ce", "sgd")
    for layer in spec.neuralNetworkClassifier.layers:
        layer.isUpdatable = False
    with pytest.raises(mlc.MLCUpdateError, match="none of its layers is"):
        mlc.update(mlc.load(spec), {"x": np.zeros((2, 4), np.float32), "label": ["cat"] * 2})


def test_invalid_update_configurations():
    spec, _ = mlp_model("ce", "sgd")
    spec.neuralNetworkClassifier.layers[1].isUpdatable = True  # the ReLU activation
    with pytest.raises(mlc.MLCParametersError, match="only convolution and innerProduct"):
        mlc.update(mlc.load(spec), {"x": np.zeros((2, 4), np.float32), "label": ["cat"] * 2})
    spec, _ = mlp_model("ce", "sgd")
    spec.neuralNetworkClassifier.layers[0].innerProduct.bias.isUpdatable = False
    with pytest.raises(mlc.MLCParametersError, match="bias not marked isUpdatable"):
        mlc.update(mlc.load(spec), {"x": np.zeros((2, 4), np.float32), "label": ["cat"] * 2})
    spec, _ = mlp_model("ce", "sgd")
    spec.neuralNetworkClassifier.updateParams.lossLayers[0].categoricalCrossEntropyLossLayer.input = "logits"
    with pytest.raises(mlc.MLCParametersError, match="not the output of a softmax"):
        mlc.update(mlc.load(spec), {"x": np.zeros((2, 4), np.float32), "label": ["cat"] * 2})


def test_non_backpropagable_layer_between_updatable_layer_and_loss():
    spec, _ = mlp_model("mse", "sgd")
    relu = spec.neuralNetwork.layers[1]
    relu.activation.ClearField("ReLU")
    relu.activation.leakyReLU.alpha = 0.1
    with pytest.raises(mlc.MLCParametersError, match="'relu' does not support back-propagation.*'fc1'"):
        mlc.update(mlc.load(spec), {"x": np.zeros((2, 4), np.float32), "y_true": np.zeros((2, 3), np.float32)})


def test_nothing_is_written_when_update_fails(tmp_path, classifier):
    out = tmp_path / "Out.mlmodel"
    with pytest.raises(mlc.MLCUpdateError):
        mlc.update(classifier, {"x": np.zeros((2, 4), np.float32)}).model.save(out)
    assert not out.exists() and os.listdir(tmp_path) == []
