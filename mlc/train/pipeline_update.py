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

The update builds on the pipeline's lowered stages (``Program.stages``): the earlier models'
programs, frozen, with the pipeline's current weights, run over the training data as one jitted
function (in batches; example by example where a stage runs on the host) to compute the last
model's inputs, handing values on as the pipeline's own function does. Then the last model is
updated exactly as a top-level one (``mlc.train.update_tasks``: same loss, optimizer,
hyper-parameters, overrides, events and history): a NeuralNetwork is trained on its stage
program's ``blobs`` and params, and the task's model is the pipeline with those params replaced
(``Model.with_params``, which rounds them as the file stores them), with no spec rewritten or
loaded again. A kNN's examples live in its spec and change its shape, so its task's model is the
pipeline made again from the spec with the new examples. ``predict`` and ``save`` work on the
pipeline either way.

Errors: a pipeline Core ML would not update raises ``MLCUpdateError`` naming the pipeline, the
model and the field; the last model's own declarations are checked as for a top-level model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from mlc import features as F
from mlc._errors import MLCFeatureTypeError, MLCUpdateError
from mlc.frontends.classic.models.pipeline import consumed, run_stages
from mlc.frontends.neuralnetwork.frontend import KINDS as NETWORKS
from mlc.io.pipelines import PIPELINES, pipeline_message, stage_names, stage_scope, stage_where
from mlc.program.program import PipelineStage
from mlc.runtime import checks, limits
from mlc.train import data as D
from mlc.train import knn
from mlc.train import nn_spec as S
from mlc.train.task import UpdateTask
from mlc.train.update_tasks import (
    UpdatableNetwork,
    check_no_knn_overrides,
    derived_model,
    hyper_parameters,
    knn_training_task,
    nn_training_task,
)

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
    where = model.name
    plan = read_pipeline_update(model.spec, where)
    if plan.update_spec is not None:
        hyper = hyper_parameters(plan.update_spec, overrides, where)
    else:
        check_no_knn_overrides(overrides, where)
    columns, n = D.as_columns(training_data, where)
    D.require(columns, plan.training_inputs, where)
    last_columns, computed = last_model_columns(model, plan, columns, n)
    name = f"update {where}"
    if plan.update_spec is None:
        derived = functools.partial(pipeline_with_last_model, model, plan)
        return knn_training_task(name, plan.last, last_columns, n, progress, plan.last_where, derived)
    network = last_network(model, plan, computed)
    return nn_training_task(
        name, network, plan.update_spec, hyper, last_columns, n, progress=progress, show_progress=show_progress
    )


def last_network(model, plan: PipelineUpdate, computed: set[str]) -> UpdatableNetwork:
    """The pipeline's last model, a NeuralNetwork, as training reads it: its stage's program
    (``model.program.stages[plan.index]``: its ``blobs``, which cast their inputs to the
    network's compute dtypes) with the pipeline's current weights for it (an earlier update's
    included). Its inputs in ``computed`` come from ``last_model_columns`` ready (program-level
    values, as the pipeline hands them on); the others are converted from the training data as
    the network declares them. The task's model is ``model.with_params`` of the trained weights
    under the stage's scope, rounded as the stage's ``param_storage`` says the file stores them
    (an fp16 weight through fp16)."""
    stage = model.program.stages[plan.index]
    program = stage.program
    declared = {name: f for name, f in program.interface.inputs.items() if name not in computed}

    def input_batch(columns: dict, where: str) -> dict:
        out = D.input_batch(declared, _as_trained, columns, where)
        ready = [name for name in program.interface.inputs if name in computed and name in columns]
        out.update({name: _as_trained(name, np.asarray(columns[name])) for name in ready})
        return out

    def result_model(trained: dict):
        return model.with_params({f"{stage.scope}/{k}": v for k, v in trained.items()})

    return UpdatableNetwork(
        name=plan.last_where,
        spec=plan.last,
        params=model.program.stage_params(stage, model.params),
        blobs=program.blobs,
        eager=program.eager,
        input_batch=input_batch,
        result_model=result_model,
    )


def _as_trained(name: str, arr: Any) -> Any:
    """An input array as training feeds it: in the dtype JAX takes it in outside 64-bit mode
    (a double as float32), where training runs; the blobs cast it to the compute dtype."""
    if not isinstance(arr, np.ndarray):
        return arr
    return arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype), copy=False)


def pipeline_with_last_model(model, plan: PipelineUpdate, last_spec: Any):
    """The pipeline ``model`` with its last model replaced by ``last_spec`` (a kNN's new index),
    its other weights as they were: made again from the new pipeline spec, since a kNN's
    examples live in its spec (and change its shape), not in params."""
    spec = type(model.spec)()
    spec.CopyFrom(model.spec)
    pipeline_message(spec).models[plan.index].CopyFrom(last_spec)
    return derived_model(model, spec, params=_trained(model))


def _trained(model) -> dict:
    """``model``'s params trained since it was loaded (by an earlier update)."""
    return {k: model.params[k] for k in model.changed_params}


# -- the last model's inputs --------------------------------------------------------------------


def last_model_columns(model, plan: PipelineUpdate, columns: dict, n: int) -> tuple[dict[str, Any], set[str]]:
    """The last model's training inputs for every example, and the names of those the earlier
    models compute: those (run over the data by ``earlier_outputs``: program-level values, as
    the pipeline hands them on), the pipeline inputs it reads directly (as given), and the
    target."""
    earlier = model.program.stages[: plan.index]
    produced = {name for stage in earlier for name in stage.program.interface.outputs}
    computed = [name for name in plan.last_inputs if name in produced]
    out = {name: columns[name] for name in plan.last_inputs if name not in produced and name in columns}
    out[plan.target] = columns[plan.target]
    if computed:
        declared = model.program.stages[plan.index].program.interface.inputs
        wanted = {name: declared[name] for name in computed}
        out.update(earlier_outputs(model, earlier, wanted, columns, n, plan.last_where, plan.where))
    return out, set(computed)


def earlier_outputs(model, stages, wanted: dict[str, F.Feature], columns: dict, n: int, reader: str, where: str) -> dict[str, Any]:
    """The values ``wanted`` (the last model's inputs, as it declares them; ``reader`` names it)
    that the pipeline's earlier ``stages`` compute for the ``n`` examples of ``columns``, with
    the pipeline's current weights: one jitted function of the stages, vmapped over batches of
    ``PREFIX_BATCH`` (the last one padded, so one compile serves all), or example by example
    where a stage runs on the host or has data-dependent shapes, or an input is of a kind
    ``predict_batch`` does not take. The training columns become program inputs through
    ``model.convert_inputs``, as ``predict`` and ``predict_batch`` convert them."""
    read = {name for stage in stages for name in stage.program.interface.inputs}
    inputs = {name: f for name, f in model.input_description.items() if name in read}
    missing = [name for name, f in inputs.items() if name not in columns and not f.optional]
    if missing:
        raise MLCUpdateError(
            f"{where}: the training data has no {missing[0]!r}, which the pipeline's earlier models read to "
            f"compute its last model's inputs (the data has {sorted(columns)})"
        )
    feeds = {name: columns[name] for name in inputs if name in columns}
    prefixes = tuple(stage.scope + "/" for stage in stages)
    params = {k: v for k, v in model.params.items() if k.startswith(prefixes)}
    eager = any(stage.program.eager for stage in stages)
    fn = earlier_function(stages, wanted, reader, stage_by_stage=eager)
    try:
        with limits.tensor_limit(model.max_tensor_bytes):
            if eager or any(inputs[name].kind not in _BATCHABLE for name in feeds):
                return _run_one_by_one(model, fn if eager else jax.jit(fn), params, feeds, n)
            return _run_in_batches(model, fn, params, feeds, n)
    except MLCFeatureTypeError as e:
        raise MLCUpdateError(f"{where}: training data: {e.message}") from e


def earlier_function(stages: tuple[PipelineStage, ...], wanted: dict[str, F.Feature], reader: str, *, stage_by_stage: bool) -> Callable:
    """``fn(params, values) -> values``: the pipeline's ``stages`` run as the pipeline runs them
    (``run_stages``), returning ``wanted`` as ``reader`` declares them (``consumed``) and the
    stages' run-time check flags under ``checks.CHECKS``. ``params`` are the pipeline's."""
    run = run_stages(stages, stage_by_stage=stage_by_stage)

    def fn(params: dict, values: dict) -> dict:
        table, flags = run(params, values)
        out = {name: consumed(table[name], f, reader) for name, f in wanted.items()}
        if flags:
            out[checks.CHECKS] = flags
        return out

    return fn


def _run_in_batches(model, fn: Callable, params: dict, feeds: dict, n: int) -> dict[str, Any]:
    batched = jax.jit(jax.vmap(fn, in_axes=(None, 0)))
    size = min(PREFIX_BATCH, n)
    parts: dict[str, list] = {}
    for start in range(0, n, size):
        count = min(size, n - start)
        rows = np.minimum(np.arange(start, start + size), n - 1)  # the last batch repeats its last example
        batch = model.runner.on_device(model.convert_inputs({name: D.take(column, rows) for name, column in feeds.items()}, batched=True))
        with model.runner.x64():
            out = batched(params, batch)
        checks.raise_failed(out.pop(checks.CHECKS, {}))
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value)[:count])
    return {name: np.concatenate(values) for name, values in parts.items()}


def _run_one_by_one(model, fn: Callable, params: dict, feeds: dict, n: int) -> dict[str, Any]:
    rows = []
    for i in range(n):
        example = model.runner.on_device(model.convert_inputs({name: D.take(column, [i])[0] for name, column in feeds.items()}))
        with model.runner.x64():
            out = fn(params, example)
        checks.raise_failed(out.pop(checks.CHECKS, {}))
        rows.append(out)
    return {name: _stacked([row[name] for row in rows]) for name in rows[0]}


def _stacked(values: list) -> Any:
    first = values[0]
    if isinstance(first, (str, dict)) or (hasattr(first, "mode") and hasattr(first, "size")):
        return values
    return np.stack([np.asarray(v) for v in values])
