"""``mlc.update`` on updatable pipelines: frozen earlier models compute the inputs of an
updatable last model (a NeuralNetwork classifier or regressor, or a kNN classifier).

Oracle: torch. The frozen first model's features are computed by torch (or, for a dictionary
vectorizer, numpy) from the same weights, and the head (``mlc.testing.updatable``'s MLP, same
initial weights) is trained by a torch loop on them with the same mini-batches in the same
order; weights agree to 2e-5 (as in ``test_update_nn.py``) and predictions to 1e-5. The kNN
head is checked against the features computed by torch and scikit-learn's brute-force
neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mlc
from mlc.cli import main
from mlc.testing.updatable import CLASSES, max_weight_difference, mlp_model, torch_train
from mlc.train import pipeline_update
from mlc.train.pipeline_update import read_pipeline_update

WEIGHT_ATOL = 2e-5
HEAD = "1:model1"  # the last model's scope in the pipeline's params (default Pipeline.names)
MLP_PARAMS = {"fc1/weights": "fc1.weight", "fc1/bias": "fc1.bias", "fc2/weights": "fc2.weight", "fc2/bias": "fc2.bias"}
IMAGE_SIZE = 5  # the image stage takes a 5x5 RGB image
SCALE, BIAS = 1 / 255, -0.5  # its preprocessing


def _builder():
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    return datatypes, NeuralNetworkBuilder


class Features(nn.Module):
    """The frozen first model: n_in -> innerProduct(4) -> ReLU (the head's input ``x``)."""

    def __init__(self, n_in: int, seed: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(n_in, 4)
        with torch.no_grad():
            for p in self.fc.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, v):
        return torch.relu(self.fc(v))

    def numpy(self, v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.from_numpy(v)).numpy()


def feature_stage(n_in: int = 5):
    """``(spec, torch twin)``: ``raw`` (n_in) -> ``x`` (4), not updatable."""
    datatypes, NeuralNetworkBuilder = _builder()
    net = Features(n_in)
    b = NeuralNetworkBuilder([("raw", datatypes.Array(n_in))], [("x", datatypes.Array(4))])
    b.add_inner_product("fe", net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy(), n_in, 4, True, "raw", "h")
    b.add_activation("fe_relu", "RELU", "h", "x")
    return b.spec, net


def image_stage():
    """``(spec, torch twin)``: a 5x5 RGB ``image`` (scaled by 1/255, minus 0.5) -> flatten -> ``x``."""
    datatypes, NeuralNetworkBuilder = _builder()
    n_in = 3 * IMAGE_SIZE * IMAGE_SIZE
    net = Features(n_in, seed=4)
    b = NeuralNetworkBuilder([("image", datatypes.Array(3, IMAGE_SIZE, IMAGE_SIZE))], [("x", datatypes.Array(4))])
    b.add_flatten("flat", 0, "image", "flat")
    b.add_inner_product("fe", net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy(), n_in, 4, True, "flat", "h")
    b.add_activation("fe_relu", "RELU", "h", "x")
    b.set_pre_processing_parameters(
        image_input_names=["image"], is_bgr=False, red_bias=BIAS, green_bias=BIAS, blue_bias=BIAS, image_scale=SCALE
    )
    assert b.spec.description.input[0].type.WhichOneof("Type") == "imageType"
    return b.spec, net


def assemble(kind: str, stages: list, names=()):
    """An updatable pipeline spec of ``stages``: the first one's inputs, the last one's outputs,
    and as training inputs the pipeline's inputs plus the last model's target."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    first, last = stages[0].description, stages[-1].description
    spec.description.input.extend(first.input)
    spec.description.output.extend(last.output)
    spec.description.predictedFeatureName = last.predictedFeatureName
    spec.description.predictedProbabilitiesName = last.predictedProbabilitiesName
    last_inputs = {f.name for f in last.input}
    spec.description.trainingInput.extend(first.input)
    spec.description.trainingInput.extend(f for f in last.trainingInput if f.name not in last_inputs)
    message = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
    message.models.extend(stages)
    message.names.extend(names)
    spec.isUpdatable = True
    return spec


def classifier_pipeline(optimizer: str = "sgd", **kw):
    """``(spec, features twin, head twin)``, built with coremltools' ``PipelineClassifier``."""
    from coremltools.models import datatypes
    from coremltools.models.pipeline import PipelineClassifier

    features, fnet = feature_stage()
    head, hnet = mlp_model("ce", optimizer, **kw)
    pipe = PipelineClassifier(
        [("raw", datatypes.Array(5))], CLASSES, output_features=["label", "probs"],
        training_features=[("raw", datatypes.Array(5)), ("label", datatypes.String())],
    )
    pipe.add_model(features)
    pipe.add_model(head)
    pipe.make_updatable()
    return pipe.spec, fnet, hnet


def _data(n=22, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, n)


def _labelled(raw, index):
    return {"raw": raw, "label": [CLASSES[i] for i in index]}


def _run(model, data, **kw):
    seen = []
    task = mlc.update(model, data, progress={"mini_batch_end": lambda c: seen.append(c.indices.copy())}, **kw)
    return task, seen


def _torch_probs(fnet, hnet, raw):
    with torch.no_grad():
        return hnet(fnet(torch.from_numpy(raw))).numpy()


def _probs(model, raw) -> np.ndarray:
    out = model.predict({"raw": raw})["probs"]
    return np.asarray([out[c] for c in CLASSES])


# -- training matches torch -----------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_classifier_head_matches_torch_and_the_first_model_stays_frozen(optimizer, monkeypatch):
    monkeypatch.setattr(pipeline_update, "PREFIX_BATCH", 8)  # 22 examples: batches of 8, 8 and 6 (padded)
    spec, fnet, hnet = classifier_pipeline(optimizer)
    model = mlc.load(spec)
    frozen = {k: np.asarray(v).copy() for k, v in model.params.items() if k.startswith("0:")}
    raw, index = _data()
    task, batches = _run(model, _labelled(raw, index))
    assert task.state == "completed" and len(batches) == 5 * 6  # 5 epochs of ceil(22 / 4)
    torch_train(hnet, list(hnet.parameters()), optimizer, "ce", fnet.numpy(raw), index, batches)
    diff = max_weight_difference(task.model, hnet, {f"{HEAD}/{k}": t for k, t in MLP_PARAMS.items()})
    assert diff < WEIGHT_ATOL, diff
    for k, v in frozen.items():
        np.testing.assert_array_equal(np.asarray(task.model.params[k]), v)
    expected = _torch_probs(fnet, hnet, raw[:4])
    for i in range(4):
        np.testing.assert_allclose(_probs(task.model, raw[i]), expected[i], atol=1e-5)
        assert task.model.predict({"raw": raw[i]})["label"] == CLASSES[int(np.argmax(expected[i]))]
    history = task.history.epoch_loss
    assert len(history) == 5 and history[-1] < history[0]
    assert task.result.metrics == {"loss": pytest.approx(history[-1]), "epochs": 5, "examples": 22}
    assert task.model.spec.WhichOneof("Type") == "pipelineClassifier"


def test_mse_head_of_a_named_plain_pipeline_matches_torch():
    features, fnet = feature_stage()
    head, hnet = mlp_model("mse", "sgd", classifier=False, epochs=2)
    spec = assemble("pipeline", [features, head], names=["extract", "regress"])
    raw, _ = _data(n=13)
    target = np.random.default_rng(2).normal(size=(13, 3)).astype(np.float32)
    task, batches = _run(mlc.load(spec), {"raw": raw, "y_true": target})
    torch_train(hnet, list(hnet.parameters()), "sgd", "mse", fnet.numpy(raw), target, batches)
    diff = max_weight_difference(task.model, hnet, {f"1:regress/{k}": t for k, t in MLP_PARAMS.items()})
    assert diff < WEIGHT_ATOL, diff
    with torch.no_grad():
        expected = hnet(fnet(torch.from_numpy(raw[:1]))).numpy().reshape(-1)
    np.testing.assert_allclose(task.model.predict({"raw": raw[0]})["y"].reshape(-1), expected, atol=1e-5)


def test_image_first_model_trained_from_pil_images():
    from PIL import Image

    features, fnet = image_stage()
    head, hnet = mlp_model("ce", "adam", epochs=3)
    spec = assemble("pipelineClassifier", [features, head])
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, size=(10, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    images = [Image.fromarray(p, "RGB") for p in pixels]
    index = rng.integers(0, 3, 10)
    task, batches = _run(mlc.load(spec), [{"image": im, "label": CLASSES[i]} for im, i in zip(images, index)])
    flat = (pixels.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(SCALE) + np.float32(BIAS)).reshape(10, -1)
    torch_train(hnet, list(hnet.parameters()), "adam", "ce", fnet.numpy(flat), index, batches)
    diff = max_weight_difference(task.model, hnet, {f"{HEAD}/{k}": t for k, t in MLP_PARAMS.items()})
    assert diff < WEIGHT_ATOL, diff
    with torch.no_grad():
        expected = hnet(fnet(torch.from_numpy(flat[:2]))).numpy()
    for i in range(2):
        probs = task.model.predict({"image": images[i]})["probs"]
        np.testing.assert_allclose([probs[c] for c in CLASSES], expected[i], atol=1e-5)


def test_knn_last_model_learns_the_computed_features(tmp_path):
    from coremltools.models.nearest_neighbors import KNearestNeighborsClassifierBuilder
    from sklearn.neighbors import KNeighborsClassifier

    features, fnet = feature_stage()
    builder = KNearestNeighborsClassifierBuilder(
        input_name="x", output_name="label", number_of_dimensions=4, default_class_label="none",
        number_of_neighbors=3, weighting_scheme="uniform", index_type="linear",
    )
    spec = assemble("pipelineClassifier", [features, builder.spec])
    raw, index = _data(n=20, seed=8)
    labels = [CLASSES[i] for i in index]
    task = mlc.update(mlc.load(spec), {"raw": raw, "label": labels})
    assert task.result.metrics == {"examples": 20}
    knn = task.model.spec.pipelineClassifier.pipeline.models[1].kNearestNeighborsClassifier
    stored = np.asarray([s.vector for s in knn.nearestNeighborsIndex.floatSamples], np.float32)
    np.testing.assert_allclose(stored, fnet.numpy(raw), atol=1e-6)
    assert list(knn.stringClassLabels.vector) == labels
    queries, _ = _data(n=8, seed=9)
    oracle = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(stored, labels).predict(fnet.numpy(queries))
    assert [task.model.predict({"raw": q})["label"] for q in queries] == list(oracle)
    out = tmp_path / "Knn.mlmodel"
    task.model.save(out)
    again = mlc.update(str(out), {"raw": raw[:2], "label": ["new", "new"]})
    assert len(again.model.spec.pipelineClassifier.pipeline.models[1].kNearestNeighborsClassifier.stringClassLabels.vector) == 22
    with pytest.raises(mlc.MLCUpdateError, match="no hyper-parameters"):
        mlc.update(mlc.load(spec), {"raw": raw, "label": labels}, epochs=2)


# -- task semantics ---------------------------------------------------------------------------
def test_events_overrides_and_the_context_model_are_the_pipelines():
    spec, _, _ = classifier_pipeline()
    raw, index = _data(n=10)
    events, snapshots = [], []

    def handler(ctx):
        events.append((ctx.event, ctx.epoch, ctx.mini_batch))
        if ctx.event == "epoch_end":
            snapshots.append(ctx.model)
        if ctx.event == "mini_batch_end" and (ctx.epoch, ctx.mini_batch) == (1, 0):
            ctx.task.cancel()

    task = mlc.update(mlc.load(spec), _labelled(raw, index), progress=handler, epochs=3, mini_batch_size=8, start=False)
    assert task.state == "ready"
    task.resume()
    assert events == [("training_begin", -1, -1), ("mini_batch_end", 0, 0), ("mini_batch_end", 0, 1), ("epoch_end", 0, -1),
                      ("mini_batch_end", 1, 0)]
    assert task.state == "cancelled" and len(task.history.mini_batch) == 3
    assert snapshots[0].spec.WhichOneof("Type") == "pipelineClassifier"
    assert set(snapshots[0].predict({"raw": raw[0]})) == {"label", "probs"}
    with pytest.raises(mlc.MLCUpdateError, match="epochs=7 is not one of the values"):
        mlc.update(mlc.load(spec), _labelled(raw, index), epochs=7)


# -- saving -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".mlmodel", ".mlpackage"])
def test_save_round_trip_keeps_the_pipeline_updatable(tmp_path, ct, suffix):
    spec, _, _ = classifier_pipeline("adam")
    source = tmp_path / "Pipeline.mlmodel"
    ct.models.utils.save_spec(spec, str(source))
    raw, index = _data()
    task = mlc.update(str(source), _labelled(raw, index), epochs=2)
    out = tmp_path / f"Personalized{suffix}"
    task.model.save(out)
    reloaded = mlc.load(out)
    for i in range(4):
        assert reloaded.predict({"raw": raw[i]}) == task.model.predict({"raw": raw[i]})
    for k, v in task.model.params.items():
        np.testing.assert_array_equal(np.asarray(reloaded.params[k]), np.asarray(v))
    saved = ct.models.MLModel(str(out), skip_model_load=True).get_spec()
    models = saved.pipelineClassifier.pipeline.models
    assert saved.isUpdatable and models[1].isUpdatable and not models[0].isUpdatable
    assert [f.name for f in saved.description.trainingInput] == ["raw", "label"]
    head_layers = [layer for layer in models[1].neuralNetworkClassifier.layers if layer.isUpdatable]
    assert [layer.innerProduct.weights.isUpdatable for layer in head_layers] == [True, True]
    assert read_pipeline_update(saved, str(out)).update_spec.trainable == ["fc1/weights", "fc1/bias", "fc2/weights", "fc2/bias"]
    again_saved = mlc.update(reloaded, _labelled(raw, index), epochs=1)
    again_memory = mlc.update(task.model, _labelled(raw, index), epochs=1)
    for k, v in again_memory.model.params.items():
        np.testing.assert_allclose(np.asarray(again_saved.model.params[k]), np.asarray(v), atol=1e-7)
    assert max(float(np.max(np.abs(np.asarray(again_saved.model.params[k]) - np.asarray(task.model.params[k]))))
               for k in again_saved.model.params if k.startswith(HEAD)) > 0


def test_cli_update_on_a_pipeline(tmp_path, ct, capsys):
    spec, _, _ = classifier_pipeline()
    source = tmp_path / "Pipeline.mlmodel"
    ct.models.utils.save_spec(spec, str(source))
    raw, index = _data(n=12)
    labels = np.array([CLASSES[i] for i in index])
    data = tmp_path / "data.npz"
    np.savez(data, raw=raw, label=labels)
    out = tmp_path / "Updated.mlmodel"
    assert main(["update", str(source), "--data", str(data), "-o", str(out), "--epochs", "2", "--quiet"]) == 0
    assert "2 epoch(s) on 12 examples" in capsys.readouterr().out
    expected = mlc.update(str(source), {"raw": raw, "label": list(labels)}, epochs=2)
    updated = mlc.load(out)
    for k, v in expected.model.params.items():
        np.testing.assert_array_equal(np.asarray(updated.params[k]), np.asarray(v))
    bad = tmp_path / "bad.npz"
    np.savez(bad, raw=raw)
    assert main(["update", str(source), "--data", str(bad), "-o", str(tmp_path / "o.mlmodel"), "--quiet"]) == 2
    assert "training data has no 'label'" in capsys.readouterr().err


# -- bad input --------------------------------------------------------------------------------
def _models(spec):
    return spec.pipelineClassifier.pipeline.models


def _glm_regressor():
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    spec.description.input.add().CopyFrom(feature_stage()[0].description.output[0])
    out = spec.description.output.add()
    out.name = "score"
    out.type.doubleType.MergeFromString(b"")
    spec.glmRegressor.weights.add().value.extend([0.1, 0.2, 0.3, 0.4])
    spec.glmRegressor.offset.append(0.5)
    spec.isUpdatable = True
    return spec


def _broken(what: str):
    spec, _, _ = classifier_pipeline()
    if what == "pipeline not updatable":
        spec.isUpdatable = False
    elif what == "last model not updatable":
        _models(spec)[1].isUpdatable = False
    elif what == "earlier model updatable":
        _models(spec)[0].isUpdatable = True
    elif what == "target not a training input":
        del spec.description.trainingInput[1]
    elif what == "no pipeline input among the training inputs":
        del spec.description.trainingInput[0]
    elif what == "last model of a type Core ML cannot update":
        spec = assemble("pipelineRegressor", [feature_stage()[0], _glm_regressor()])
        spec.description.trainingInput.add().name = "score"
    return spec


@pytest.mark.parametrize(
    "what, message",
    [
        ("pipeline not updatable", r"<in-memory model>: the pipelineClassifier is not marked updatable \(spec.isUpdatable is"),
        ("last model not updatable", r"stage 1 'model1': the last model .* not marked updatable \(Pipeline.models\[1\]"),
        ("earlier model updatable", r"stage 0 'model0': the model is marked updatable .*only the last model"),
        ("target not a training input", r"training inputs \(description.trainingInput\) \['raw'\] do not include 'label'"),
        ("no pipeline input among the training inputs", r"\['label'\] include none of its inputs \['raw'\]"),
        ("last model of a type Core ML cannot update", r"stage 1 'model1': a glmRegressor model cannot be updated"),
    ],
)
def test_pipelines_core_ml_would_not_update(what, message):
    raw, index = _data(n=4)
    with pytest.raises(mlc.MLCUpdateError, match=message):
        mlc.update(mlc.load(_broken(what)), _labelled(raw, index))


def test_training_data_without_the_target_or_the_first_models_input():
    model = mlc.load(classifier_pipeline()[0])
    raw, index = _data(n=4)
    with pytest.raises(mlc.MLCUpdateError, match=r"training data has no 'label'; the model's training inputs are \['raw', 'label'"):
        mlc.update(model, {"raw": raw})
    with pytest.raises(mlc.MLCUpdateError, match="training data has no 'raw'"):
        mlc.update(model, {"label": [CLASSES[i] for i in index]})
    with pytest.raises(mlc.MLCUpdateError, match=r"training data: .*input 'raw'"):
        mlc.update(model, {"raw": np.zeros((4, 7), np.float32), "label": [CLASSES[i] for i in index]})
    with pytest.raises(mlc.MLCUpdateError, match="stage 1 'model1': training input 'label': example 1 has label 'wolf'"):
        mlc.update(model, {"raw": raw, "label": ["cat", "wolf", "dog", "fox"]})


def test_fp16_head_weights_are_rounded_as_the_file_stores_them(tmp_path):
    spec, _, _ = classifier_pipeline()
    for layer in _models(spec)[1].neuralNetworkClassifier.layers:
        if layer.isUpdatable:
            for wp in (layer.innerProduct.weights, layer.innerProduct.bias):
                wp.float16Value = np.asarray(wp.floatValue, np.float16).tobytes()
                wp.ClearField("floatValue")
    raw, index = _data(n=8)
    task = mlc.update(mlc.load(spec), _labelled(raw, index), epochs=1)
    weights = np.asarray(task.model.params[f"{HEAD}/fc1/weights"])
    np.testing.assert_array_equal(weights, weights.astype(np.float16).astype(np.float32))
    task.model.save(tmp_path / "Half.mlmodel")
    reloaded = mlc.load(tmp_path / "Half.mlmodel")
    layers = _models(reloaded.spec)[1].neuralNetworkClassifier.layers
    assert layers[0].innerProduct.weights.float16Value and not layers[0].innerProduct.weights.floatValue
    assert [reloaded.predict({"raw": r}) for r in raw[:3]] == [task.model.predict({"raw": r}) for r in raw[:3]]


def _dict_vectorizer():
    """A host first model: a dictionary ``words`` (string -> double) -> ``x``, its values at the keys a, b, c, d."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    words = spec.description.input.add()
    words.name = "words"
    words.type.dictionaryType.stringKeyType.MergeFromString(b"")
    spec.description.output.add().CopyFrom(mlp_model("ce", "sgd")[0].description.input[0])  # x, as the head declares it
    spec.dictVectorizer.stringToIndex.vector.extend(["a", "b", "c", "d"])
    return spec


def test_a_first_model_that_runs_example_by_example():
    head, hnet = mlp_model("ce", "sgd_plain", epochs=2)
    spec = assemble("pipelineClassifier", [_dict_vectorizer(), head])
    x, index = _data(n=9, seed=4)
    x = x[:, :4]
    rows = [{"words": dict(zip("abcd", map(float, v))), "label": CLASSES[i]} for v, i in zip(x, index)]
    model = mlc.load(spec)
    assert model.runner.eager  # a host model: predict_batch cannot run it
    task, batches = _run(model, rows)
    torch_train(hnet, list(hnet.parameters()), "sgd_plain", "ce", x, index, batches)
    diff = max_weight_difference(task.model, hnet, {f"{HEAD}/{k}": t for k, t in MLP_PARAMS.items()})
    assert diff < WEIGHT_ATOL, diff


def test_a_network_head_trains_on_its_stage_without_loading_a_model_again(monkeypatch):
    import mlc.model
    from mlc.train import update_tasks

    model = mlc.load(classifier_pipeline()[0])

    def refuse(*args, **kwargs):
        raise AssertionError("the update loaded a model again")

    monkeypatch.setattr(mlc.model, "load", refuse)
    monkeypatch.setattr(update_tasks, "derived_model", refuse)
    monkeypatch.setattr(pipeline_update, "derived_model", refuse)
    raw, index = _data(n=8)
    task = mlc.update(model, _labelled(raw, index), epochs=1)
    assert task.model.program is model.program
    assert task.model.changed_params == {f"{HEAD}/{k}" for k in MLP_PARAMS}
    again = mlc.update(task.model, _labelled(raw, index), epochs=1)  # from the weights of the first update
    assert again.model.program is model.program
    assert any(np.any(np.asarray(again.model.params[k]) != np.asarray(task.model.params[k])) for k in again.model.changed_params)


def _scaler(shift, scale):
    """A classic first model computing in double: ``raw`` (5) -> ``(raw + shift) * scale`` as ``scaled``."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    spec.description.input.add().CopyFrom(feature_stage()[0].description.input[0])
    out = spec.description.output.add()
    out.CopyFrom(spec.description.input[0])
    out.name = "scaled"
    spec.scaler.shiftValue.extend(shift)
    spec.scaler.scaleValue.extend(scale)
    return spec


def test_three_stages_a_classic_one_first_run_as_one_function(monkeypatch):
    monkeypatch.setattr(pipeline_update, "PREFIX_BATCH", 4)  # 10 examples: batches of 4, 4 and 2 (padded)
    datatypes, NeuralNetworkBuilder = _builder()
    fnet = Features(5)
    b = NeuralNetworkBuilder([("scaled", datatypes.Array(5))], [("x", datatypes.Array(4))])
    b.add_inner_product("fe", fnet.fc.weight.detach().numpy(), fnet.fc.bias.detach().numpy(), 5, 4, True, "scaled", "h")
    b.add_activation("fe_relu", "RELU", "h", "x")
    shift, scale = [0.5, -1.0, 0.0, 2.0, 0.25], [2.0, 0.5, 1.0, -1.0, 3.0]
    head, hnet = mlp_model("ce", "sgd", epochs=2)
    spec = assemble("pipelineClassifier", [_scaler(shift, scale), b.spec, head])
    raw, index = _data(n=10, seed=5)
    task, batches = _run(mlc.load(spec), _labelled(raw, index))
    scaled = ((raw.astype(np.float64) + shift) * scale).astype(np.float32)
    torch_train(hnet, list(hnet.parameters()), "sgd", "ce", fnet.numpy(scaled), index, batches)
    diff = max_weight_difference(task.model, hnet, {f"2:model2/{k}": t for k, t in MLP_PARAMS.items()})
    assert diff < WEIGHT_ATOL, diff
