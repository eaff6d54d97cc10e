"""The two tasks ``mlc.update`` runs, for a top-level model and for a pipeline's last model
alike (``mlc.train.update``, ``mlc.train.pipeline_update``):

* ``nn_training_task``: an updatable NeuralNetwork trained with its declared loss, optimizer and
  hyper-parameters (``hyper_parameters``, ``make_optimizer``). What training reads of the
  network is an ``UpdatableNetwork``: its params, its blobs function, how its inputs are made
  and what model the trained params make; a top-level ``Model`` gives one
  (``UpdatableNetwork.of_model``), and so does a pipeline's last stage.
* ``knn_training_task``: an updatable kNN classifier given new examples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlc._errors import MLCUpdateError
from mlc.frontends.neuralnetwork.frontend import class_labels
from mlc.io.spec import LoadedSpec
from mlc.model import load
from mlc.train import data as D
from mlc.train import knn
from mlc.train import nn_spec as S
from mlc.train.loop import Schedule, training_task
from mlc.train.task import UpdateResult, UpdateTask

HYPER_PARAMETERS = ("learning_rate", "mini_batch_size", "momentum", "beta1", "beta2", "eps", "epochs", "shuffle", "seed")
_TINY = 1e-37  # log's floor for a probability that underflowed to zero


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


# -- an updatable network -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UpdatableNetwork:
    """What training an updatable NeuralNetwork reads of it.

    * ``name``: the network, for messages;
    * ``spec``: its Model proto (a classifier's class labels);
    * ``params``: its weights by key, as its program computes with them;
    * ``blobs``: ``blobs(params, inputs) -> every blob`` (``Program.blobs``): the loss reads one;
    * ``eager``: its output shapes depend on data (it cannot be trained under ``jit``);
    * ``input_batch(columns, where)``: its inputs among the training ``columns``, stacked as
      ``blobs`` takes them (examples along the first axis);
    * ``result_model(trained)``: the model the trained params make (fp16-stored weights
      rounded through fp16, as the file stores them).
    """

    name: str
    spec: Any
    params: dict
    blobs: Callable[[dict, dict], dict]
    eager: bool
    input_batch: Callable[[dict, str], dict]
    result_model: Callable[[dict], Any]

    @classmethod
    def of_model(cls, model) -> "UpdatableNetwork":
        """A NeuralNetwork ``Model``'s: its result is ``model.with_params(trained)``."""
        return cls(
            name=model.name,
            spec=model.spec,
            params=model.params,
            blobs=model.program.blobs,
            eager=model.runner.eager,
            input_batch=lambda columns, where: D.model_input_batch(model, columns, where),
            result_model=model.with_params,
        )


def _class_labels(spec) -> tuple:
    return class_labels(S.network_of(spec))


def targets(spec, us: S.UpdateSpec, columns: dict, n_values: int, where: str) -> np.ndarray:
    """The loss targets of the network ``spec`` as arrays: class indices (int32) or values (float32)."""
    loss = us.loss
    raw = columns[loss.target]
    what = f"{where}: training input {loss.target!r}"
    if loss.kind == "cross_entropy":
        if loss.target_is_label:
            labels = _class_labels(spec)
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


def nn_training_task(
    name: str, network: UpdatableNetwork, us: S.UpdateSpec, hyper: dict, columns: dict, n: int, *, progress, show_progress: bool,
) -> UpdateTask:
    """The ``UpdateTask`` training the updatable ``network`` (checked into ``us``) on
    ``columns``, its training inputs by name, with the hyper-parameters ``hyper``; its model is
    ``network.result_model`` of the trained params."""
    where = network.name
    if network.eager:
        raise MLCUpdateError(f"{where}: the network has data-dependent shapes or control flow and cannot be trained")
    D.require(columns, us.training_inputs, where)
    inputs = network.input_batch({k: columns[k] for k in us.training_inputs if k in columns}, where)
    example = {k: v[0] for k, v in inputs.items()}
    shape = jax.eval_shape(lambda p, x: network.blobs(p, x)[us.loss.input], network.params, example).shape
    batch_columns = {**inputs, "@target": targets(network.spec, us, columns, int(np.prod(shape)), where)}
    return training_task(
        name,
        network.params,
        us.trainable,
        progress=progress,
        loss_fn=nn_loss(network.blobs, us.loss),
        columns=batch_columns,
        n=n,
        optimizer=make_optimizer(us.optimizer, hyper),
        schedule=Schedule(hyper["epochs"], hyper["mini_batch_size"], hyper["shuffle"], hyper["seed"]),
        show_progress=show_progress,
        result_model=network.result_model,
    )


# -- an updatable kNN ---------------------------------------------------------------------------


def check_no_knn_overrides(overrides: dict, where: str) -> None:
    if overrides:
        raise MLCUpdateError(f"{where}: a kNN update has no hyper-parameters; got {sorted(overrides)}")


def knn_training_task(name: str, spec, columns: dict, n: int, progress, where: str, derived) -> UpdateTask:
    """The ``UpdateTask`` adding the examples of ``columns`` to the updatable kNN ``spec``;
    ``derived(new_knn_spec)`` makes the task's model.

    A kNN's "weights" are its examples, which an update appends to: they change shape, and
    they live in the spec, not in params. So its model is made again from the new spec
    (``derived_model``), not by ``with_params`` as a network's is."""
    state = {"spec": spec}

    def run(task: UpdateTask) -> UpdateResult:
        task.emit("training_begin", examples=n)
        state["spec"] = knn.add_examples(spec, columns, where)
        task.emit("epoch_end", epoch=0, examples=n)
        return UpdateResult(derived(state["spec"]), task.history, {"examples": n}, False)

    return UpdateTask(name, run, lambda: derived(state["spec"]), progress)


def derived_model(model, spec, params: dict | None = None):
    """A ``Model`` of ``spec`` (a changed copy of ``model``'s spec: a kNN with new examples, or
    a pipeline holding one) on ``model``'s device and precision, named and resolving files as
    ``model``, with those of ``params`` it has (by key) as its weights."""
    loaded = LoadedSpec(spec, model.loaded_spec.path, model.loaded_spec.model_dir)
    new = load(loaded, device=model.device, compute_precision=model.compute_precision)
    held = {k: v for k, v in (params or {}).items() if k in new.params}
    return new.with_params(held) if held else new
