"""Updating an updatable k-nearest-neighbors classifier (Core ML's ``MLUpdateTask`` on a kNN).

A kNN learns by remembering: Core ML's update appends the training examples to the model's
index, and later predictions find their neighbors among them. The proto fields involved
(Model.proto, NearestNeighbors.proto):

- ``Model.isUpdatable``: the model accepts updates (coremltools' ``KNearestNeighborsClassifierBuilder``
  sets it; Core ML's ``validateCanModelBeUpdatable`` allows it on a kNN classifier).
- ``ModelDescription.trainingInput``: the features an update reads. For a kNN: the example, a
  multiarray of ``numberOfDimensions`` values (the builder names it like the prediction
  input), and its label, named like ``ModelDescription.predictedFeatureName``, of
  ``stringType`` or ``int64Type``.
- ``KNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples``: the examples, each a
  ``FloatVector`` (float32) of ``numberOfDimensions`` values; an update appends to them.
- ``stringClassLabels`` / ``int64ClassLabels`` (oneof ``ClassLabels``): one label per example,
  in the examples' order; an update appends the new labels.
- ``defaultStringLabel`` / ``defaultInt64Label`` (oneof ``DefaultClassLabel``): what an empty
  model predicts. It fixes the label type when the model holds no labels yet.

Core ML's validator (``KNearestNeighborsClassifierValidator.cpp``) asks for as many labels as
examples, each example ``numberOfDimensions`` long, and class labels of the default label's
type; it keeps no fixed class set, so an update may bring labels never seen before (a new class
is simply a label the index did not hold yet). ``add_examples`` keeps all of that true.

Errors: a model that cannot be updated or bad training data raise ``MLCUpdateError`` (code
``update``); a model whose ``trainingInput`` does not declare what a kNN update needs raises
``MLCParametersError`` (code ``parameters``). Each message starts with ``where``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlc._errors import MLCParametersError, MLCUpdateError

KIND = "kNearestNeighborsClassifier"
STRING = "string"
INT64 = "int64"
_INT64_MIN, _INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_updatable_knn(spec: Any) -> bool:
    """Whether ``spec`` (a Core ML ``Model`` proto) is a kNN classifier marked ``isUpdatable``."""
    which = getattr(spec, "WhichOneof", None)
    return which is not None and which("Type") == KIND and bool(spec.isUpdatable)


def knn_training_features(spec: Any, where: str = "model") -> tuple[str, str]:
    """The names of the example and label training inputs of a kNN classifier, checked.

    The label is the ``trainingInput`` named like ``predictedFeatureName``, of the model's label
    type; the example is the one other multiarray ``trainingInput``, of ``numberOfDimensions``
    values. Raises ``MLCParametersError`` naming what is missing or wrong.
    """
    if getattr(spec, "WhichOneof", None) is None or spec.WhichOneof("Type") != KIND:
        raise MLCParametersError(f"{where}: not a {KIND} model (a kNN training input needs one)")
    label = _label_feature(spec, where)
    example = _example_feature(spec, label.name, where)
    return example.name, label.name


def add_examples(spec: Any, data: Mapping, where: str) -> Any:
    """A copy of the updatable kNN ``spec`` that also holds the examples and labels of ``data``.

    ``data`` maps the training input names (see ``knn_training_features``) to stacked values:
    the examples as an ``(n, numberOfDimensions)`` array or a list of n vectors, the labels as a
    list or 1-d array of n labels (``str`` or ``int``, the model's label type). Other keys are
    ignored, as Core ML ignores features a model does not read. The given spec is not changed.
    """
    if not is_updatable_knn(spec):
        raise MLCUpdateError(f"{where}: {_not_updatable_reason(spec)}; only an updatable {KIND} takes examples")
    example_name, label_name = knn_training_features(spec, where)
    _check_data(data, (example_name, label_name), where)
    dims = spec.kNearestNeighborsClassifier.nearestNeighborsIndex.numberOfDimensions
    label_type = _declared_label_type(_label_feature(spec, where))  # the model's, checked above
    examples = _example_rows(data[example_name], example_name, dims, where)
    labels = _label_values(data[label_name], label_name, label_type, where)
    if len(labels) != examples.shape[0]:
        raise MLCUpdateError(
            f"{where} ({KIND}): {examples.shape[0]} examples in training input '{example_name}' but "
            f"{len(labels)} labels in '{label_name}'; give one label per example"
        )
    return _appended(spec, examples, labels, label_type)


# -- the model's training inputs ----------------------------------------------------------------


def _not_updatable_reason(spec: Any) -> str:
    which = getattr(spec, "WhichOneof", None)
    if which is None:
        return f"{type(spec).__name__} is not a Core ML Model spec"
    if which("Type") != KIND:
        return f"the model is a {which('Type')}, not a {KIND}"
    return "the kNN is not updatable (spec.isUpdatable is false)"


def _training_input_names(spec: Any) -> list[str]:
    return [feature.name for feature in spec.description.trainingInput]


def _label_feature(spec: Any, where: str) -> Any:
    name = spec.description.predictedFeatureName
    if not name:
        raise MLCParametersError(f"{where} ({KIND}): no predictedFeatureName, so no label training input can be named")
    for feature in spec.description.trainingInput:
        if feature.name == name:
            _check_label_feature_type(spec, feature, where)
            return feature
    raise MLCParametersError(
        f"{where} ({KIND}): trainingInput declares no label '{name}' (named like predictedFeatureName); "
        f"it declares {_training_input_names(spec)}"
    )


def _declared_label_type(feature: Any) -> str | None:
    """``"string"`` / ``"int64"`` for a ``stringType`` / ``int64Type`` feature, else None."""
    return {"stringType": STRING, "int64Type": INT64}.get(feature.type.WhichOneof("Type"))


def _check_label_feature_type(spec: Any, feature: Any, where: str) -> None:
    declared = _declared_label_type(feature)
    if declared is None:
        raise MLCParametersError(
            f"{where} ({KIND}): the label training input '{feature.name}' is of type "
            f"{feature.type.WhichOneof('Type')}; it must be stringType or int64Type"
        )
    expected = _model_label_type(spec) or declared
    if declared != expected:
        raise MLCParametersError(
            f"{where} ({KIND}): the label training input '{feature.name}' is {declared}, "
            f"but the model's class labels are {expected}"
        )


def _example_feature(spec: Any, label_name: str, where: str) -> Any:
    candidates = [
        feature
        for feature in spec.description.trainingInput
        if feature.name != label_name and feature.type.WhichOneof("Type") == "multiArrayType"
    ]
    if not candidates:
        raise MLCParametersError(
            f"{where} ({KIND}): trainingInput declares no multiarray example input besides the label "
            f"'{label_name}'; it declares {_training_input_names(spec)}"
        )
    if len(candidates) > 1:
        raise MLCParametersError(
            f"{where} ({KIND}): trainingInput declares several multiarray example inputs "
            f"{[f.name for f in candidates]}; a kNN update reads one"
        )
    feature = candidates[0]
    dims = spec.kNearestNeighborsClassifier.nearestNeighborsIndex.numberOfDimensions
    shape = list(feature.type.multiArrayType.shape)
    if shape and int(np.prod(shape)) != dims:
        raise MLCParametersError(
            f"{where} ({KIND}): the example training input '{feature.name}' has shape {shape}, "
            f"not numberOfDimensions = {dims} values"
        )
    return feature


def _model_label_type(spec: Any) -> str | None:
    """``"string"`` or ``"int64"``: from the class labels, else the default label, else the
    predicted feature's output description; None when none of them says."""
    knn = spec.kNearestNeighborsClassifier
    labels = knn.WhichOneof("ClassLabels")
    if labels is not None:
        return STRING if labels == "stringClassLabels" else INT64
    default = knn.WhichOneof("DefaultClassLabel")
    if default is not None:
        return STRING if default == "defaultStringLabel" else INT64
    for output in spec.description.output:
        if output.name == spec.description.predictedFeatureName:
            return _declared_label_type(output)
    return None


# -- the training data --------------------------------------------------------------------------


def _check_data(data: Any, names: tuple[str, str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise MLCUpdateError(
            f"{where} ({KIND}): the training data must be a dict of training inputs {list(names)}, not {type(data).__name__}"
        )
    missing = [name for name in names if name not in data]
    if missing:
        raise MLCUpdateError(
            f"{where} ({KIND}): the training data lack training input(s) {missing}; "
            f"the update needs {list(names)} and got {sorted(map(str, data))}"
        )


def _update_error(where: str, name: str, message: str) -> MLCUpdateError:
    return MLCUpdateError(f"{where} ({KIND}): training input '{name}': {message}")


def _example_rows(value: Any, name: str, dims: int, where: str) -> np.ndarray:
    """The examples as a float32 ``(n, dims)`` array, every row checked."""
    if isinstance(value, (str, bytes)) or not (isinstance(value, (list, tuple)) or hasattr(value, "__array__")):
        raise _update_error(where, name, f"expected an (n, {dims}) array or a list of n vectors, got {type(value).__name__}")
    if isinstance(value, (list, tuple)):
        rows = [_example_row(row, i, name, dims, where) for i, row in enumerate(value)]
        array = np.stack(rows) if rows else np.zeros((0, dims))
    else:
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] == 0:
            raise _update_error(where, name, "the dataset is empty (n == 0); an update needs at least one example")
        if array.ndim != 2 or array.shape[1] != dims:
            raise _update_error(
                where, name, f"the examples have shape {array.shape}; stack them as (n, {dims}), {dims} = numberOfDimensions"
            )
        _check_numbers(array, name, where)
    if array.shape[0] == 0:
        raise _update_error(where, name, "the dataset is empty (n == 0); an update needs at least one example")
    return _as_float32(array, name, where)


def _example_row(row: Any, i: int, name: str, dims: int, where: str) -> np.ndarray:
    if isinstance(row, (str, bytes)):
        raise _update_error(where, name, f"example {i} is a {type(row).__name__}, not a vector of numbers")
    try:
        vector = np.asarray(row)
    except ValueError as exc:  # ragged nesting
        raise _update_error(where, name, f"example {i} is not a vector of numbers ({exc})") from None
    if vector.ndim != 1 or vector.shape[0] != dims:
        raise _update_error(
            where, name, f"example {i} has shape {vector.shape}; the model's examples have {dims} values (numberOfDimensions)"
        )
    _check_numbers(vector, name, where, f"example {i}")
    return vector


def _check_numbers(array: np.ndarray, name: str, where: str, what: str = "the examples") -> None:
    if array.dtype.kind not in "iuf":
        raise _update_error(where, name, f"{what} must be real numbers, not {array.dtype}")


def _as_float32(array: np.ndarray, name: str, where: str) -> np.ndarray:
    """float32, as ``FloatVector`` stores them; NaN, infinities and values past float32's range refused."""
    values = array.astype(np.float64)
    bad = ~np.isfinite(values) | (np.abs(values) > _FLOAT32_MAX)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        value = float(values[i, j])
        reason = "is not finite" if not np.isfinite(value) else "does not fit in float32"
        raise _update_error(
            where, name, f"example {i} holds {value} at position {j}, which {reason} ({int(bad.sum())} such value(s) in all)"
        )
    return values.astype(np.float32)


def _label_values(value: Any, name: str, label_type: str, where: str) -> list:
    """The labels as a list of ``str`` or ``int``, each checked against the model's label type."""
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        array = np.asarray(value)
        if array.ndim != 1:
            raise _update_error(where, name, f"the labels have shape {array.shape}; give a list or 1-d array of n labels")
        value = array.tolist()
    elif isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _update_error(where, name, f"expected a list of n labels, got {type(value).__name__}")
    if not value:
        raise _update_error(where, name, "the dataset is empty (n == 0); an update needs at least one label")
    check = _string_label if label_type == STRING else _int64_label
    return [check(label, i, name, where) for i, label in enumerate(value)]


def _string_label(label: Any, i: int, name: str, where: str) -> str:
    if not isinstance(label, str):
        raise _update_error(
            where, name, f"label {i} is {label!r} ({type(label).__name__}); the model's labels are strings (stringClassLabels)"
        )
    return str(label)


def _int64_label(label: Any, i: int, name: str, where: str) -> int:
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise _update_error(
            where, name, f"label {i} is {label!r} ({type(label).__name__}); the model's labels are int64 (int64ClassLabels)"
        )
    if not _INT64_MIN <= int(label) <= _INT64_MAX:
        raise _update_error(where, name, f"label {i} is {label}, outside int64")
    return int(label)


# -- the new spec -------------------------------------------------------------------------------


def _appended(spec: Any, examples: np.ndarray, labels: list, label_type: str) -> Any:
    """A copy of ``spec`` with ``examples`` appended to ``floatSamples`` and ``labels`` to the class labels."""
    new = type(spec)()
    new.CopyFrom(spec)
    knn = new.kNearestNeighborsClassifier
    samples = knn.nearestNeighborsIndex.floatSamples
    for row in examples:
        samples.add().vector.extend(row.tolist())
    class_labels = knn.stringClassLabels if label_type == STRING else knn.int64ClassLabels
    class_labels.vector.extend(labels)
    return new
