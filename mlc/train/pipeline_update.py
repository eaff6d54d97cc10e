"""``mlc.update`` on an updatable pipeline (Model.proto ``Pipeline``, ``PipelineClassifier``,
``PipelineRegressor``): Core ML's ``MLUpdateTask`` on a pipeline whose last model learns.

What Core ML asks of such a pipeline (Model.proto ``Model.isUpdatable``; ``PipelineValidator.cpp``
and ``validateCanModelBeUpdatable`` in ``InterfaceValidators.cpp``):

* the pipeline's own ``isUpdatable`` is set;
* its last model's ``isUpdatable`` is set ("Last model in an updatable pipeline model should be
  marked as updatable"), and no earlier model's ("Only the last model in the pipeline can be
  updatable");
* the last model is of a type Core ML updates: an updatable NeuralNetwork (plain, classifier or
  regressor, under the rules of ``mlc.train.nn_spec``) or an updatable kNN classifier
  (``mlc.train.knn``);
* the pipeline's ``description.trainingInput`` names what an update reads: some of the
  pipeline's prediction inputs, and the last model's loss target (for a classifier, the label
  feature named like its ``predictedFeatureName``).

The update runs the earlier models, frozen, over the training data (in batches, jitted as one
pipeline of those models) to compute the last model's inputs, then updates the last model
exactly as a top-level one (``mlc.train.update``: same loss, optimizer, hyper-parameters,
overrides, events and history). The task's model is the whole pipeline with the last model's
new weights (a kNN: its new examples), so ``predict`` and ``save`` work on the pipeline.

Errors: a pipeline Core ML would not update raises ``MLCUpdateError`` naming the pipeline, the
model and the field; the last model's own declarations are checked as for a top-level model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from mlc._errors import MLCFeatureTypeError, MLCUpdateError
from mlc.format.pipelines import PIPELINES, pipeline_message, stage_names, stage_scope, stage_where
from mlc.nn.frontend import KINDS as NETWORKS
from mlc.train import data as D
from mlc.train import knn
from mlc.train import nn_spec as S
from mlc.train.task import UpdateTask
from mlc.train.update import derived_model

PREFIX_BATCH = 64  # examples per batched run of the earlier models
_BATCHABLE = ("multiArray", "image", "double", "int64")  # the input kinds predict_batch takes


def is_pipeline(spec: Any) -> bool:
    return spec.WhichOneof("Type") in PIPELINES


@dataclasses.dataclass
class PipelineUpdate:
    """An updatable pipeline, checked: its last model and what an update reads."""

    where: str  # the pipeline, for messages
    index: int  # the last model's position in ``Pipeline.models``
    name: str  # its ``Pipeline.names`` entry (default ``"model<index>"``)
    last: Any  # its spec
    target: str  # the training input holding the loss target (a classifier's label)
    training_inputs: list[str]  # the pipeline's ``description.trainingInput`` names
    update_spec: S.UpdateSpec | None  # a neural network's training configuration; None for a kNN
    knn_example: str | None  # a kNN's example training input

    @property
    def last_where(self) -> str:
        return stage_where(self.where, self.index, self.name)

    @property
    def scope(self) -> str:
        """The prefix of the last model's keys in the pipeline's params (``"<i>:<name>"``)."""
        return stage_scope(self.index, self.name)

    @property
    def last_inputs(self) -> list[str]:
        """The last model's prediction inputs an update feeds it."""
        if self.update_spec is None:
            return [self.knn_example]
        inputs = {f.name for f in self.last.description.input}
        return [name for name in self.update_spec.training_inputs if name in inputs and name != self.target]


def read_pipeline_update(spec: Any, where: str) -> PipelineUpdate:
    """Check that ``spec`` is a pipeline Core ML can update, and read how."""
    kind = spec.WhichOneof("Type")
    if not spec.isUpdatable:
        raise MLCUpdateError(
            f"{where}: the {kind} is not marked updatable (spec.isUpdatable is false); Core ML updates a "
            f"pipeline only when it and its last model are marked updatable"
        )
    pipeline = pipeline_message(spec)
    models, names = pipeline.models, stage_names(pipeline)
    _check_only_last_updatable(models, names, where)
    index = len(models) - 1
    last, last_where = models[index], stage_where(where, index, names[index])
    if not last.isUpdatable:
        raise MLCUpdateError(
            f"{last_where}: the last model of the updatable {kind} is not marked updatable "
            f"(Pipeline.models[{index}].isUpdatable is false)"
        )
    update_spec, example, target = _last_model_update(last, last_where)
    training_inputs = _training_inputs(spec, target, where)
    return PipelineUpdate(where, index, names[index], last, target, training_inputs, update_spec, example)


def _check_only_last_updatable(models, names: list[str], where: str) -> None:
    for i, model in enumerate(models[:-1]):
        if model.isUpdatable:
            raise MLCUpdateError(
                f"{stage_where(where, i, names[i])}: the model is marked updatable (Pipeline.models[{i}].isUpdatable), "
                f"but Core ML allows only the last model of an updatable pipeline to be"
            )


def _last_model_update(last: Any, where: str) -> tuple[S.UpdateSpec | None, str | None, str]:
    """``(update_spec, knn_example, target)`` of the last model: an updatable network's
    training configuration, or an updatable kNN's example and label training inputs."""
    kind = last.WhichOneof("Type")
    if knn.is_updatable_knn(last):
        example, label = knn.knn_training_features(last, where)
        return None, example, label
    if kind in NETWORKS:
        update_spec = S.read_update_spec(last, where)
        return update_spec, None, update_spec.loss.target
    raise MLCUpdateError(
        f"{where}: a {kind} model cannot be updated; the last model of an updatable pipeline must be an "
        f"updatable neural network or kNN classifier"
    )


def _training_inputs(spec: Any, target: str, where: str) -> list[str]:
    """The pipeline's ``trainingInput`` names: its own inputs, and the last model's target."""
    names = [f.name for f in spec.description.trainingInput]
    inputs = [f.name for f in spec.description.input]
    if target not in names:
        raise MLCUpdateError(
            f"{where}: the pipeline's training inputs (description.trainingInput) {names} do not include "
            f"{target!r}, the target of its last model's loss"
        )
    if not any(name in inputs for name in names):
        raise MLCUpdateError(
            f"{where}: the pipeline's training inputs (description.trainingInput) {names} include none of "
            f"its inputs {inputs}"
        )
    return names


# -- the task -----------------------------------------------------------------------------------


def pipeline_task(model, training_data, progress, show_progress: bool, overrides: dict) -> UpdateTask:
    """The ``UpdateTask`` of ``mlc.update`` on the updatable pipeline ``model``."""
    from mlc.train.update import check_no_knn_overrides, hyper_parameters, knn_training_task, nn_training_task

    where = model.name
    plan = read_pipeline_update(model.spec, where)
    if plan.update_spec is not None:
        hyper = hyper_parameters(plan.update_spec, overrides, where)
    else:
        check_no_knn_overrides(overrides, where)
    columns, n = D.as_columns(training_data, where)
    D.require(columns, plan.training_inputs, where)
    last_columns = last_model_columns(model, plan, columns, n)
    name = f"update {where}"
    if plan.update_spec is None:
        derived = functools.partial(pipeline_with_last_model, model, plan)
        return knn_training_task(name, plan.last, last_columns, n, progress, plan.last_where, derived)
    last = last_model(model, plan)
    return nn_training_task(
        name, last, plan.update_spec, hyper, last_columns, n, progress=progress, show_progress=show_progress,
        result_model=lambda trained: pipeline_with_trained(model, last, plan, trained),
    )


def pipeline_with_trained(model, last, plan: PipelineUpdate, trained: dict):
    """The pipeline ``model`` with its last model's ``trained`` params, rounded as the last
    model's file stores them (an fp16 weight through fp16, by ``last.with_params``)."""
    rounded = last.with_params(trained).params
    return model.with_params({f"{plan.scope}/{k}": rounded[k] for k in trained})


def last_model(model, plan: PipelineUpdate):
    """The pipeline's last model as a ``Model`` of its own, holding the pipeline's current
    weights for it (those of an earlier update included)."""
    prefix = plan.scope + "/"
    changed = {k[len(prefix) :]: model.params[k] for k in model._changed if k.startswith(prefix)}
    return derived_model(model, plan.last, plan.last_where, changed)


def pipeline_with_last_model(model, plan: PipelineUpdate, last_spec: Any):
    """The pipeline ``model`` with its last model replaced by ``last_spec`` (a kNN's new index),
    its other weights as they were."""
    spec = type(model.spec)()
    spec.CopyFrom(model.spec)
    pipeline_message(spec).models[plan.index].CopyFrom(last_spec)
    return derived_model(model, spec, params=_trained(model))


# -- the last model's inputs --------------------------------------------------------------------


def last_model_columns(model, plan: PipelineUpdate, columns: dict, n: int) -> dict[str, Any]:
    """The last model's training inputs for every example: the inputs the earlier models
    compute (run over the data), the pipeline inputs it reads directly, and the target."""
    produced = _outputs_of_earlier_models(model.spec, plan.index)
    computed = [name for name in plan.last_inputs if name in produced]
    out = {name: columns[name] for name in plan.last_inputs if name not in produced and name in columns}
    out[plan.target] = columns[plan.target]
    if computed:
        earlier = earlier_models(model, plan, computed)
        out.update(run_batched(earlier, columns, n, plan.where))
    return out


def _outputs_of_earlier_models(spec: Any, index: int) -> set[str]:
    return {f.name for m in pipeline_message(spec).models[:index] for f in m.description.output}


def earlier_models(model, plan: PipelineUpdate, outputs: list[str]):
    """A ``Model`` of the pipeline's models before the last one, outputting ``outputs`` (the
    last model's inputs, declared as the last model declares them), with the pipeline's current
    weights. Its inputs are the pipeline inputs those models read."""
    models = pipeline_message(model.spec).models[: plan.index]
    spec = type(model.spec)()
    spec.specificationVersion = model.spec.specificationVersion
    read = {f.name for m in models for f in m.description.input}
    spec.description.input.extend(f for f in model.spec.description.input if f.name in read)
    declared = {f.name: f for f in plan.last.description.input}
    spec.description.output.extend(declared[name] for name in outputs)
    spec.pipeline.models.extend(models)
    spec.pipeline.names.extend(stage_names(pipeline_message(model.spec))[: plan.index])
    return derived_model(model, spec, params=_trained(model))


def _trained(model) -> dict:
    """``model``'s params trained since it was loaded (by an earlier update)."""
    return {k: model.params[k] for k in model._changed}


def run_batched(model, columns: dict, n: int, where: str) -> dict[str, Any]:
    """``model``'s outputs for the ``n`` examples of ``columns``: ``predict_batch`` on
    batches of ``PREFIX_BATCH`` (the last one padded, so one compile serves all), or
    ``predict`` example by example for a model ``predict_batch`` cannot run."""
    inputs = model.input_description
    missing = [name for name, f in inputs.items() if name not in columns and not f.optional]
    if missing:
        raise MLCUpdateError(
            f"{where}: the training data has no {missing[0]!r}, which the pipeline's earlier models read to "
            f"compute its last model's inputs (the data has {sorted(columns)})"
        )
    feeds = {name: columns[name] for name in inputs if name in columns}
    try:
        if model._exe.eager or any(inputs[name].kind not in _BATCHABLE for name in feeds):
            return _run_one_by_one(model, feeds, n)
        return _run_in_batches(model, feeds, n)
    except MLCFeatureTypeError as e:
        raise MLCUpdateError(f"{where}: training data: {e.message}") from e


def _run_in_batches(model, feeds: dict, n: int) -> dict[str, Any]:
    size = min(PREFIX_BATCH, n)
    parts: dict[str, list] = {}
    for start in range(0, n, size):
        count = min(size, n - start)
        rows = np.minimum(np.arange(start, start + size), n - 1)  # the last batch repeats its last example
        out = model.predict_batch({name: D.take(column, rows) for name, column in feeds.items()})
        for name, value in out.items():
            parts.setdefault(name, []).append(value[:count])
    return {name: _joined(values) for name, values in parts.items()}


def _joined(values: list) -> Any:
    if isinstance(values[0], list):  # labels, probability dicts, images
        return [v for part in values for v in part]
    return np.concatenate(values)


def _run_one_by_one(model, feeds: dict, n: int) -> dict[str, Any]:
    rows = [model.predict({name: D.take(column, [i])[0] for name, column in feeds.items()}) for i in range(n)]
    return {name: _stacked([row[name] for row in rows]) for name in rows[0]}


def _stacked(values: list) -> Any:
    first = values[0]
    if isinstance(first, (str, dict)) or (hasattr(first, "mode") and hasattr(first, "size")):
        return values
    return np.stack([np.asarray(v) for v in values])
