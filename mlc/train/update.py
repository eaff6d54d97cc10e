"""``mlc.update``: Core ML's on-device update (``MLUpdateTask``), off the device.

Two kinds of model are updatable in Core ML, and here:

* an updatable NeuralNetwork (``mlc.train.nn_spec``): its updatable convolution and
  innerProduct weights are trained with the declared loss and optimizer, mapped to optax
  (``sgdOptimizer`` -> ``optax.sgd(learningRate, momentum)``, ``adamOptimizer`` ->
  ``optax.adam(learningRate, beta1, beta2, eps)``), for ``epochs`` epochs of mini-batches of
  ``miniBatchSize``, shuffled with ``seed`` when ``shuffle`` is set. Every other weight is
  frozen. The loss of a mini-batch is the mean over its examples of the per-example loss:
  cross entropy ``-log(p[target])`` on the softmax output, or the mean squared error
  ``mean((input - target)**2)`` over the elements of the loss input blob (so the mini-batch
  MSE is the mean over all its elements, as ``torch.nn.MSELoss()``).
* an updatable kNN classifier (``mlc.train.knn``): the examples are added to its index.
* an updatable pipeline (``mlc.train.pipeline_update``) whose last model is one of those two:
  its earlier models, frozen, compute the last model's inputs, and the last model is updated
  as above.

Hyper-parameters can be overridden by name (``learning_rate``, ``mini_batch_size``,
``momentum``, ``beta1``, ``beta2``, ``eps``, ``epochs``, ``shuffle``, ``seed``) within the
``range`` or ``set`` the model declares for them, as ``MLModelConfiguration.parameters``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlc._errors import MLCUpdateError
from mlc.train import data as D
from mlc.train import nn_spec as S
from mlc.train.loop import Schedule, training_task
from mlc.train.task import UpdateResult, UpdateTask, show_progress_default

HYPER_PARAMETERS = ("learning_rate", "mini_batch_size", "momentum", "beta1", "beta2", "eps", "epochs", "shuffle", "seed")
_TINY = 1e-37  # log's floor for a probability that underflowed to zero


def update(model: Any, training_data: Any, *, progress=None, show_progress: bool | None = None, start: bool = True, **overrides) -> UpdateTask:
    """Update an updatable Core ML model on ``training_data``; returns the ``UpdateTask``
    (already run unless ``start=False``; then call ``task.resume()``).

    ``training_data``: a list of feature dicts or a dict of stacked arrays holding the model's
    training inputs. ``progress``: a handler for the task's events (``mlc.train.task``).
    ``show_progress``: a progress bar on the terminal (default: when stderr is a terminal).
    """
    from mlc.model import Model, load
    from mlc.train import knn, pipeline_update

    model = model if isinstance(model, Model) else load(model)
    if show_progress is None:
        show_progress = show_progress_default()
    if pipeline_update.is_pipeline(model.spec):
        task = pipeline_update.pipeline_task(model, training_data, progress, show_progress, overrides)
    elif knn.is_updatable_knn(model.spec):
        task = _knn_task(model, training_data, progress, overrides)
    else:
        task = _nn_task(model, training_data, progress, show_progress, overrides)
    return task.resume() if start else task


def hyper_parameters(us: S.UpdateSpec, overrides: dict, where: str) -> dict:
    """The update's hyper-parameters: the model's defaults, with ``overrides`` checked against
    the ``range`` or ``set`` the model declares for them."""
    hyper = dict(us.hyper)
    for name, value in overrides.items():
        if name not in HYPER_PARAMETERS:
            raise MLCUpdateError(f"{where}: unknown update parameter {name!r}; the parameters are {list(HYPER_PARAMETERS)}")
        if name not in us.parameters:
            raise MLCUpdateError(f"{where}: {name} does not apply to the model's {us.optimizer} optimizer")
        hyper[name] = S.check_override(name, value, us.parameters[name], where)
    for name in ("mini_batch_size", "epochs"):
        if int(hyper[name]) != hyper[name] or hyper[name] <= 0:
            raise MLCUpdateError(f"{where}: {name} must be a positive integer, got {hyper[name]!r}")
        hyper[name] = int(hyper[name])
    return hyper


def make_optimizer(kind: str, hyper: dict) -> optax.GradientTransformation:
    """The optax twin of the spec's optimizer (torch's SGD-with-momentum and Adam updates)."""
    if kind == "sgd":
        return optax.sgd(hyper["learning_rate"], momentum=hyper["momentum"] or None)
    return optax.adam(hyper["learning_rate"], b1=hyper["beta1"], b2=hyper["beta2"], eps=hyper["eps"])


def _class_labels(model) -> tuple:
    from mlc.nn.frontend import class_labels

    return class_labels(S.network_of(model.spec))


def _targets(model, us: S.UpdateSpec, columns: dict, n_values: int, where: str) -> np.ndarray:
    """The loss targets as arrays: class indices (int32) or values (float32)."""
    loss = us.loss
    raw = columns[loss.target]
    what = f"{where}: training input {loss.target!r}"
    if loss.kind == "cross_entropy":
        if loss.target_is_label:
            labels = _class_labels(model)
            index = {label: i for i, label in enumerate(labels)}
            out = []
            for i, label in enumerate(raw.tolist() if isinstance(raw, np.ndarray) else raw):
                if label not in index:
                    raise MLCUpdateError(f"{what}: example {i} has label {label!r}, which is not one of the model's classes {list(labels)}")
                out.append(index[label])
            return np.asarray(out, np.int32)
        arr = np.asarray(raw)
        if arr.dtype.kind not in "iuf" or arr.size != len(arr) or np.any(arr != np.round(arr)):
            raise MLCUpdateError(f"{what}: a cross-entropy target is one class index per example, got {arr.dtype} of shape {arr.shape}")
        arr = arr.reshape(-1).astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= n_values))
        if bad.size:
            raise MLCUpdateError(f"{what}: example {bad[0]} has class index {arr[bad[0]]}, outside [0, {n_values})")
        return arr.astype(np.int32)
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iuf":
        raise MLCUpdateError(f"{what}: an MSE target must be numbers, got {arr.dtype}")
    if arr[0].size != n_values:
        raise MLCUpdateError(f"{what}: each target holds {arr[0].size} values; the loss input {loss.input!r} has {n_values}")
    if not np.all(np.isfinite(arr)):
        raise MLCUpdateError(f"{what}: the targets hold NaN or infinite values")
    return arr.reshape(len(arr), n_values).astype(np.float32)


def nn_loss(blobs, loss: S.LossSpec):
    """``loss_fn(trainable, frozen, batch)``: the mini-batch mean of the spec's loss."""

    def per_example(params, inputs, target):
        value = jnp.reshape(blobs(params, inputs)[loss.input], (-1,))
        if loss.kind == "cross_entropy":
            return -jnp.log(jnp.maximum(value[target], _TINY))
        return jnp.mean((value - target) ** 2)

    def loss_fn(trainable, frozen, batch):
        params = {**frozen, **trainable}
        inputs = {k: v for k, v in batch.items() if k != "@target"}
        losses = jax.vmap(per_example, in_axes=(None, 0, 0))(params, inputs, batch["@target"])
        return jnp.mean(losses)

    return loss_fn


def _nn_task(model, training_data, progress, show_progress: bool, overrides: dict) -> UpdateTask:
    where = model.name
    us = S.read_update_spec(model.spec, where)  # refuses every model that is not an updatable network
    hyper = hyper_parameters(us, overrides, where)
    columns, n = D.as_columns(training_data, where)
    return nn_training_task(f"update {where}", model, us, hyper, columns, n, progress=progress, show_progress=show_progress)


def nn_training_task(
    name: str, model, us: S.UpdateSpec, hyper: dict, columns: dict, n: int, *, progress, show_progress: bool,
    result_model=None,
) -> UpdateTask:
    """The ``UpdateTask`` training the updatable network ``model`` (checked into ``us``) on
    ``columns``, its training inputs by name, with the hyper-parameters ``hyper``.
    ``result_model(trained)`` makes the task's model (default ``model.with_params``)."""
    where = model.name
    if model._exe.eager:
        raise MLCUpdateError(f"{where}: the network has data-dependent shapes or control flow and cannot be trained")
    D.require(columns, us.training_inputs, where)
    inputs = D.model_input_batch(model, {k: columns[k] for k in us.training_inputs if k in columns}, where)
    example = {k: v[0] for k, v in inputs.items()}
    shape = jax.eval_shape(lambda p, x: model._exe.blobs(p, x)[us.loss.input], model.params, example).shape
    batch_columns = {**inputs, "@target": _targets(model, us, columns, int(np.prod(shape)), where)}
    return training_task(
        name,
        model,
        us.trainable,
        progress=progress,
        loss_fn=nn_loss(model._exe.blobs, us.loss),
        columns=batch_columns,
        n=n,
        optimizer=make_optimizer(us.optimizer, hyper),
        schedule=Schedule(hyper["epochs"], hyper["mini_batch_size"], hyper["shuffle"], hyper["seed"]),
        show_progress=show_progress,
        result_model=result_model,
    )


def derived_model(model, spec, name: str | None = None, params: dict | None = None):
    """A ``Model`` of ``spec`` (a changed copy of ``model``'s spec, or part of it) on
    ``model``'s device and precision, resolving files against its package; named ``name``
    (default ``model``'s path), with those of ``params`` it has (by key) as its weights."""
    from mlc.format.spec import LoadedSpec
    from mlc.model import Model

    loaded = LoadedSpec(spec, model._loaded.path if name is None else name, model._loaded.model_dir)
    new = Model(loaded, device=model.device, compute_precision=model.compute_precision)
    held = {k: v for k, v in (params or {}).items() if k in new.params}
    return new.with_params(held) if held else new


def _knn_task(model, training_data, progress, overrides: dict) -> UpdateTask:
    where = model.name
    check_no_knn_overrides(overrides, where)
    columns, n = D.as_columns(training_data, where)
    derived = functools.partial(derived_model, model)
    return knn_training_task(f"update {where}", model.spec, columns, n, progress, where, derived)


def check_no_knn_overrides(overrides: dict, where: str) -> None:
    if overrides:
        raise MLCUpdateError(f"{where}: a kNN update has no hyper-parameters; got {sorted(overrides)}")


def knn_training_task(name: str, spec, columns: dict, n: int, progress, where: str, derived) -> UpdateTask:
    """The ``UpdateTask`` adding the examples of ``columns`` to the updatable kNN ``spec``;
    ``derived(new_knn_spec)`` makes the task's model."""
    from mlc.train import knn

    state = {"spec": spec}

    def run(task: UpdateTask) -> UpdateResult:
        task.emit("training_begin", examples=n)
        state["spec"] = knn.add_examples(spec, columns, where)
        task.emit("epoch_end", epoch=0, examples=n)
        return UpdateResult(derived(state["spec"]), task.history, {"examples": n}, False)

    return UpdateTask(name, run, lambda: derived(state["spec"]), progress)
