"""Pipelines (``pipeline``, ``pipelineClassifier``, ``pipelineRegressor``) including neural
stages, ``linkedModel``, the refusal of Apple-proprietary model types, and ``mlc info``.

Oracles: numpy for the NeuralNetwork stage (an inner product) and the GLM stage."""

import json
import os

import numpy as np
import pytest

import mlc
from mlc._errors import MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.testing.nn_specs import network

RNG = np.random.default_rng(1)
W_NN = RNG.normal(size=(4, 3)).astype(np.float32)  # innerProduct: 3 -> 4
B_NN = RNG.normal(size=4).astype(np.float32)
W_GLM = RNG.normal(size=(3, 4))  # glmClassifier, OneVsRest over 3 classes
B_GLM = RNG.normal(size=3)
LABELS = ["cat", "dog", "fish"]


def _proto():
    from coremltools.proto import Model_pb2

    return Model_pb2


def _feature(fd, name, kind, shape=None):
    fd.name = name
    if kind == "array":
        fd.type.multiArrayType.shape.extend(shape)
        fd.type.multiArrayType.dataType = _proto().ArrayFeatureType.FLOAT32
    elif kind == "string":
        fd.type.stringType.MergeFromString(b"")
    elif kind == "double":
        fd.type.doubleType.MergeFromString(b"")
    elif kind == "dict":
        fd.type.dictionaryType.stringKeyType.MergeFromString(b"")


def _classifier_outputs(description):
    _feature(description.output.add(), "label", "string")
    _feature(description.output.add(), "probs", "dict")
    description.predictedFeatureName = "label"
    description.predictedProbabilitiesName = "probs"


def _nn_stage():
    b = network({"x": (3,)}, ["h"], exact=True)
    b.add_inner_product("fc", W_NN, B_NN, 3, 4, has_bias=True, input_name="x", output_name="h")
    spec = b.spec
    spec.specificationVersion = 4
    del spec.description.output[:]
    _feature(spec.description.output.add(), "h", "array", [4])
    return spec


def _glm_stage():
    spec = _proto().Model()
    spec.specificationVersion = 1
    _feature(spec.description.input.add(), "h", "array", [4])
    _classifier_outputs(spec.description)
    glm = spec.glmClassifier
    for row in W_GLM:
        glm.weights.add().value.extend(row)
    glm.offset.extend(B_GLM)
    glm.classEncoding = glm.OneVsRest
    glm.stringClassLabels.vector.extend(LABELS)
    return spec


def _pipeline(stages, kind="pipelineClassifier", names=()):
    spec = _proto().Model()
    spec.specificationVersion = 4
    _feature(spec.description.input.add(), "x", "array", [3])
    _classifier_outputs(spec.description)
    pipe = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
    for s in stages:
        pipe.models.add().CopyFrom(s)
    pipe.names.extend(names)
    return spec


def _expected(x):
    h = W_NN @ x + B_NN
    p = 1 / (1 + np.exp(-(W_GLM @ h + B_GLM)))
    return p / p.sum()


def test_neural_network_then_glm_pipeline_matches_numpy():
    model = mlc.load(_pipeline([_nn_stage(), _glm_stage()]))
    for x in RNG.normal(size=(8, 3)).astype(np.float32):
        out = model.predict({"x": x})
        expected = _expected(x)
        np.testing.assert_allclose([out["probs"][k] for k in LABELS], expected, rtol=1e-5, atol=1e-6)
        assert out["label"] == LABELS[int(np.argmax(expected))]


def test_numeric_pipeline_is_one_jittable_function_and_batches():
    import jax

    model = mlc.load(_pipeline([_nn_stage(), _glm_stage()], kind="pipeline"))
    xs = RNG.normal(size=(5, 3)).astype(np.float32)
    batch = model.predict_batch({"x": xs})
    assert batch["label"] == [model.predict({"x": x})["label"] for x in xs]
    fn, params = model.jax_function()
    probs = jax.jit(fn)(params, {"x": xs[0]})["probs"].probabilities
    np.testing.assert_allclose(probs, _expected(xs[0]), rtol=1e-5, atol=1e-6)
    assert any(k.startswith("0:model0/") for k in params) and any(k.startswith("1:model1/") for k in params)


def test_nested_pipelines_and_stage_names():
    inner = _pipeline([_nn_stage()], kind="pipeline")
    del inner.description.output[:]
    _feature(inner.description.output.add(), "h", "array", [4])
    model = mlc.load(_pipeline([inner, _glm_stage()], names=("features", "head")))
    x = RNG.normal(size=3).astype(np.float32)
    np.testing.assert_allclose(model.predict({"x": x})["probs"]["dog"], _expected(x)[1], rtol=1e-5)


def test_pipeline_wiring_errors_name_the_stage():
    glm = _glm_stage()
    glm.description.input[0].name = "nowhere"
    with pytest.raises(MLCParametersError, match="stage 'model1' reads 'nowhere'"):
        mlc.load(_pipeline([_nn_stage(), glm]))
    with pytest.raises(MLCParametersError, match="contains no models"):
        mlc.load(_pipeline([]))
    with pytest.raises(MLCParametersError, match="2 stage names for 1 models"):
        mlc.load(_pipeline([_nn_stage()], kind="pipeline", names=("a", "b")))


@pytest.mark.hostile
def test_pipelines_nested_too_deep_are_refused():
    spec = _nn_stage()
    for _ in range(20):
        spec = _pipeline([spec], kind="pipeline")
        del spec.description.output[:]
        _feature(spec.description.output.add(), "h", "array", [4])
    with pytest.raises(MLCParametersError, match="nested more than"):
        mlc.load(spec)


@pytest.mark.parametrize("kind", ["visionFeaturePrint", "wordTagger", "customModel", "soundAnalysisPreprocessing"])
def test_proprietary_types_are_refused_naming_the_type(kind):
    spec = _proto().Model()
    spec.specificationVersion = 4
    getattr(spec, kind).MergeFromString(b"")
    with pytest.raises(MLCUnsupportedError, match=f"{kind}.*Apple"):
        mlc.load(spec)


def test_proprietary_stage_inside_a_pipeline_names_the_stage():
    stage = _proto().Model()
    stage.specificationVersion = 4
    _feature(stage.description.input.add(), "x", "array", [3])
    _feature(stage.description.output.add(), "h", "array", [4])
    stage.visionFeaturePrint.scene.version = 1
    with pytest.raises(MLCUnsupportedError, match=r"stage 0 'scenePrint'.*visionFeaturePrint.*Vision framework"):
        mlc.load(_pipeline([stage, _glm_stage()], names=("scenePrint", "head")))


def test_unset_model_type_is_a_parameters_error():
    spec = _proto().Model()
    spec.specificationVersion = 4
    with pytest.raises(MLCParametersError, match="Type is not set"):
        mlc.load(spec)


def _linking_spec(file_name, search_path=""):
    spec = _proto().Model()
    spec.specificationVersion = 4
    _feature(spec.description.input.add(), "h", "array", [4])
    _classifier_outputs(spec.description)
    link = spec.linkedModel.linkedModelFile
    link.linkedModelFileName.defaultValue = file_name
    link.linkedModelSearchPath.defaultValue = search_path
    return spec


def _save(spec, path):
    with open(path, "wb") as f:
        f.write(spec.SerializeToString())
    return str(path)


def test_linked_model_resolves_beside_the_linking_model(tmp_path):
    (tmp_path / "parts").mkdir()
    _save(_glm_stage(), tmp_path / "parts" / "Head.mlmodel")
    # Core ML links the compiled Head.mlmodelc; mlc finds the source model of the same name.
    pipe = _pipeline([_nn_stage(), _linking_spec("Head.mlmodelc", "other:parts")])
    model = mlc.load(_save(pipe, tmp_path / "Pipe.mlmodel"))
    x = RNG.normal(size=3).astype(np.float32)
    np.testing.assert_allclose(model.predict({"x": x})["probs"]["fish"], _expected(x)[2], rtol=1e-5)


@pytest.mark.parametrize("file_name,search,error", [
    ("Head.mlmodel", "..", "outside|leaves|escape"),
    ("Head.mlmodel", "/etc", "absolute"),
    ("Missing.mlmodelc", "", "not found"),
])
@pytest.mark.hostile
def test_linked_model_that_leaves_its_folder_or_is_missing_is_refused(tmp_path, file_name, search, error):
    inner = tmp_path / "inner"
    inner.mkdir()
    _save(_glm_stage(), tmp_path / "Head.mlmodel")
    pipe = _pipeline([_nn_stage(), _linking_spec(file_name, search)])
    with pytest.raises(MLCIOError, match=error):
        mlc.load(_save(pipe, inner / "Pipe.mlmodel"))


@pytest.mark.hostile
def test_linked_model_that_links_itself_is_refused(tmp_path):
    spec = _linking_spec("Loop.mlmodel")
    with pytest.raises(MLCParametersError, match="nested more than"):
        mlc.load(_save(spec, tmp_path / "Loop.mlmodel"))


def test_mlc_info_lists_the_model_types_of_a_pipeline(tmp_path, capsys):
    from mlc.cli import main

    stage = _proto().Model()
    stage.textClassifier.revision = 1
    path = _save(_pipeline([_nn_stage(), _glm_stage(), stage]), tmp_path / "P.mlmodel")
    assert main(["info", "--json", path]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ops"] == {"pipelineClassifier": 1, "neuralNetwork": 1, "glmClassifier": 1, "textClassifier": 1}
    assert report["unsupported_ops"] == {"textClassifier": 1}
    assert os.path.exists(path)


def test_ml_program_then_glm_pipeline_package(tmp_path):
    """An ML Program stage (weights in the package's weight.bin) feeding a classic stage, made
    with coremltools' make_pipeline and saved as an .mlpackage; the oracle is torch + numpy."""
    torch = pytest.importorskip("torch")
    import coremltools as ct

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()).eval()
    program = ct.convert(
        torch.jit.trace(net, torch.zeros(1, 3)), inputs=[ct.TensorType("x", shape=(1, 3))], outputs=[ct.TensorType("h")],
        convert_to="mlprogram", compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16,
    )
    head = _proto().Model()
    head.specificationVersion = 7
    _feature(head.description.input.add(), "h", "array", [1, 4])
    _feature(head.description.output.add(), "y", "double")
    head.description.predictedFeatureName = "y"
    head.glmRegressor.weights.add().value.extend([1.0, 2.0, 3.0, 4.0])
    head.glmRegressor.offset.append(0.5)
    path = str(tmp_path / "Pipe.mlpackage")
    ct.utils.make_pipeline(program, ct.models.MLModel(head)).save(path)
    model = mlc.load(path)
    for x in RNG.normal(size=(4, 1, 3)).astype(np.float32):
        expected = net(torch.from_numpy(x)).detach().numpy()[0] @ [1.0, 2.0, 3.0, 4.0] + 0.5
        np.testing.assert_allclose(model.predict({"x": x})["y"], expected, rtol=1e-5, atol=1e-5)


def test_every_model_type_of_the_proto_runs_or_is_refused_by_name():
    from mlc.frontends.classic.lowering import NEURAL
    from mlc.frontends.classic.registry import PROPRIETARY, supported

    oneof = {f.name for f in _proto().Model.DESCRIPTOR.oneofs_by_name["Type"].fields}
    handled = set(supported()) | set(NEURAL) | set(PROPRIETARY)
    assert oneof - handled == set()
    assert set(supported()) & set(PROPRIETARY) == set()


def test_cli_types_and_predict_on_a_classic_model(tmp_path, capsys):
    from mlc.cli import main

    assert main(["types"]) == 0
    listed = capsys.readouterr().out
    assert "treeEnsembleClassifier" in listed and "wordTagger" in listed and "refused" in listed
    path = _save(_glm_stage(), tmp_path / "Head.mlmodel")
    h = [0.5, -1.0, 0.25, 2.0]
    assert main(["predict", path, "--input", f"h={json.dumps(h)}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = 1 / (1 + np.exp(-(W_GLM @ np.array(h) + B_GLM)))
    np.testing.assert_allclose([out["probs"][k] for k in LABELS], p / p.sum(), rtol=1e-9)
    assert out["label"] == LABELS[int(np.argmax(p))]
