"""Write a trained image classifier as a Core ML model.

The model is a ``pipelineClassifier`` (``Model.proto``) of two stages, the way Create ML's own
image classifiers are a feature print followed by a classifier:

1. the feature extractor, unchanged (its image input is the model's input);
2. a NeuralNetworkClassifier head: ``innerProduct`` holding the fitted weights folded onto raw
   features (``SoftmaxRegression.folded``), then ``softmax``, with the class labels.

The outputs are ``classLabel`` (the predicted label) and ``classLabelProbs`` (label ->
probability), Create ML's names. With ``updatable=True`` the head is an updatable
NeuralNetwork (``isUpdatable`` on the innerProduct weights, a categorical cross-entropy loss on
the softmax output with ``classLabel`` as its target, an SGD optimizer and epochs) and the
pipeline is updatable with training inputs ``image`` and ``classLabel``, so ``mlc.update`` or
Core ML's ``MLUpdateTask`` can personalise it later.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from mlc._errors import MLCIOError, MLCUnsupportedError
from mlc.frontends.mil.writeback import mlprogram_with_params
from mlc.io import writer
from mlc.io.proto import import_coremltools, proto

LABEL = "classLabel"
PROBABILITIES = "classLabelProbs"
_DENSE = "classifier"
_SOFTMAX_OUT = "classLabelProbs_softmax"
_UPDATE_EPOCHS = 10
_UPDATE_LEARNING_RATE = 0.01
_UPDATE_BATCH = 8
_UPDATABLE_SPEC_VERSION = 4  # iOS 13: updatable NeuralNetwork models


def head_spec(weights: np.ndarray, bias: np.ndarray, labels: list[str], feature_name: str, updatable: bool, seed: int = 0):
    """The NeuralNetworkClassifier stage: ``feature_name`` (d,) -> classLabel, classLabelProbs."""
    import_coremltools()  # quietly, before coremltools.models
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder, SgdParams

    d, k = weights.shape
    builder = NeuralNetworkBuilder(
        input_features=[(feature_name, datatypes.Array(d))],
        output_features=[(PROBABILITIES, datatypes.Dictionary(str))],  # set_class_labels adds classLabel
        mode="classifier",
    )
    builder.add_inner_product(
        _DENSE, W=np.ascontiguousarray(weights.T, np.float32), b=np.asarray(bias, np.float32),
        input_channels=d, output_channels=k, has_bias=True, input_name=feature_name, output_name="logits",
    )
    builder.add_softmax("softmax", "logits", _SOFTMAX_OUT)
    builder.set_class_labels(list(labels), predicted_feature_name=LABEL, prediction_blob=_SOFTMAX_OUT)
    if updatable:
        builder.make_updatable([_DENSE])
        with contextlib.redirect_stdout(io.StringIO()):  # the builder prints a (for classifiers, wrong) note on the target
            builder.set_categorical_cross_entropy_loss(name="loss", input=_SOFTMAX_OUT)
        builder.set_sgd_optimizer(SgdParams(lr=_UPDATE_LEARNING_RATE, batch=_UPDATE_BATCH))
        builder.set_epochs(_UPDATE_EPOCHS)
        builder.set_shuffle(seed=int(seed))
    spec = builder.spec
    if updatable:
        _label_as_target(spec)
    spec.description.predictedProbabilitiesName = PROBABILITIES
    return spec


def _label_as_target(spec) -> None:
    """A classifier's cross-entropy target is its class label (``predictedFeatureName``, a
    string): the training inputs are the features and ``classLabel``, not the index array the
    builder declares."""
    loss = spec.neuralNetworkClassifier.updateParams.lossLayers[0].categoricalCrossEntropyLossLayer
    loss.target = LABEL
    features = [f for f in spec.description.trainingInput if f.name != loss.target and not f.name.endswith("_true")]
    del spec.description.trainingInput[:]
    spec.description.trainingInput.extend(features)
    label = spec.description.trainingInput.add()
    label.name = LABEL
    label.type.stringType.SetInParent()


def _extractor_stage(extractor):
    """The extractor's spec for the pipeline, and its weight file (ML Programs only)."""
    loaded = extractor.model.loaded_spec
    if loaded.spec.WhichOneof("Type") != "mlProgram":
        stage = type(loaded.spec)()
        stage.CopyFrom(loaded.spec)
        return stage, None
    return mlprogram_with_params(loaded, {}, function_name=extractor.model.function_name)


def pipeline_spec(extractor, weights, bias, labels, *, updatable: bool, metadata: dict[str, str], user_defined: dict[str, str], seed: int = 0):
    """The whole classifier as a ``Model`` proto, and the weight file of an ML Program extractor (or None)."""
    stage, blob = _extractor_stage(extractor)
    head = head_spec(weights, bias, labels, extractor.output, updatable, seed)
    spec = proto("Model").Model()
    spec.specificationVersion = max(stage.specificationVersion, head.specificationVersion, _UPDATABLE_SPEC_VERSION if updatable else 1)
    pipeline = spec.pipelineClassifier.pipeline
    pipeline.models.add().CopyFrom(stage)
    pipeline.models.add().CopyFrom(head)
    image = next(f for f in stage.description.input if f.name == extractor.input_name)
    spec.description.input.add().CopyFrom(image)
    for name in (LABEL, PROBABILITIES):
        spec.description.output.add().CopyFrom(next(f for f in head.description.output if f.name == name))
    spec.description.predictedFeatureName = LABEL
    spec.description.predictedProbabilitiesName = PROBABILITIES
    if updatable:
        spec.isUpdatable = True
        spec.description.trainingInput.add().CopyFrom(image)
        spec.description.trainingInput.add().CopyFrom(next(f for f in head.description.trainingInput if f.name == LABEL))
    meta = spec.description.metadata
    meta.author = metadata.get("author", "")
    meta.shortDescription = metadata.get("description", "")
    meta.versionString = metadata.get("version", "")
    meta.license = metadata.get("license", "")
    for key, value in user_defined.items():
        meta.userDefined[key] = value
    return spec, blob


def write_classifier(path: str | os.PathLike, spec, blob) -> str:
    """Write ``spec`` as ``.mlpackage`` or ``.mlmodel`` (by the path's suffix), atomically."""
    path = os.fspath(path).rstrip("/" + os.sep)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".mlpackage":
        writer.write_mlpackage(path, spec, blob if blob is not None and len(blob) else None)
    elif suffix == ".mlmodel":
        if blob is not None:
            raise MLCUnsupportedError(
                f"cannot write {path!r}: the feature extractor is an ML Program, whose weights live beside the "
                f"specification; write an .mlpackage instead"
            )
        writer.write_mlmodel(path, spec)
    else:
        raise MLCIOError(f"cannot write {path!r}: a Core ML model's path ends in .mlpackage or .mlmodel")
    return path
