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

The tasks themselves (``mlc.train.update_tasks``) serve top-level models and pipelines' last
models alike.

Hyper-parameters can be overridden by name (``learning_rate``, ``mini_batch_size``,
``momentum``, ``beta1``, ``beta2``, ``eps``, ``epochs``, ``shuffle``, ``seed``) within the
``range`` or ``set`` the model declares for them, as ``MLModelConfiguration.parameters``.
"""

from __future__ import annotations

import functools
from typing import Any

from mlc.model import Model, load
from mlc.train import data as D
from mlc.train import knn, pipeline_update
from mlc.train import nn_spec as S
from mlc.train.task import UpdateTask, show_progress_default
from mlc.train.update_tasks import (
    UpdatableNetwork,
    check_no_knn_overrides,
    derived_model,
    hyper_parameters,
    knn_training_task,
    nn_training_task,
)


def update(model: Any, training_data: Any, *, progress=None, show_progress: bool | None = None, start: bool = True, **overrides) -> UpdateTask:
    """Update an updatable Core ML model on ``training_data``; returns the ``UpdateTask``
    (already run unless ``start=False``; then call ``task.resume()``).

    ``training_data``: a list of feature dicts or a dict of stacked arrays holding the model's
    training inputs. ``progress``: a handler for the task's events (``mlc.train.task``).
    ``show_progress``: a progress bar on the terminal (default: when stderr is a terminal).
    """
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


def _nn_task(model, training_data, progress, show_progress: bool, overrides: dict) -> UpdateTask:
    where = model.name
    us = S.read_update_spec(model.spec, where)  # refuses every model that is not an updatable network
    hyper = hyper_parameters(us, overrides, where)
    columns, n = D.as_columns(training_data, where)
    network = UpdatableNetwork.of_model(model)
    return nn_training_task(f"update {where}", network, us, hyper, columns, n, progress=progress, show_progress=show_progress)


def _knn_task(model, training_data, progress, overrides: dict) -> UpdateTask:
    where = model.name
    check_no_knn_overrides(overrides, where)
    columns, n = D.as_columns(training_data, where)
    derived = functools.partial(derived_model, model)
    return knn_training_task(f"update {where}", model.spec, columns, n, progress, where, derived)
