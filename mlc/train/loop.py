"""The training loop shared by ``mlc.update`` and ``mlc.finetune``.

Parameters are split into a trainable pytree and a frozen one; only the trainable one is
differentiated and updated. Each epoch visits the examples in order, or in a fresh
permutation when ``shuffle`` is set, drawn from ``numpy.random.default_rng(seed)`` (one
generator for the whole run, so a seed reproduces every epoch's order), and cuts them into
mini-batches of ``batch_size`` (the last one may be smaller). One optimizer step per
mini-batch on the loss the caller defines, which by convention is the mean over the
mini-batch's examples. The step is jitted once per mini-batch shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
import optax

from mlc.train import data as D
from mlc.train.task import UpdateResult, UpdateTask


@dataclasses.dataclass
class Schedule:
    epochs: int
    batch_size: int
    shuffle: bool
    seed: int


def epoch_batches(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's mini-batches: index arrays into the training data."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def batch_order(n: int, schedule: Schedule) -> list[list[np.ndarray]]:
    """Every epoch's mini-batches, as the loop will visit them (for reproducing a run)."""
    rng = np.random.default_rng(schedule.seed)
    return [epoch_batches(n, schedule.batch_size, schedule.shuffle, rng) for _ in range(schedule.epochs)]


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
    """``step(trainable, opt_state, frozen, batch) -> (trainable, opt_state, loss)``, jitted."""

    def step(trainable, opt_state, frozen, batch):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    return jax.jit(step)


class ProgressBar:
    """A tqdm bar over mini-batches showing the running loss (silent when ``show`` is false)."""

    def __init__(self, total: int, show: bool, desc: str):
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=True)

    def step(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4g}", refresh=False)  # drawn at tqdm's own pace
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_epochs(
    task: UpdateTask,
    *,
    loss_fn: Callable,
    trainable: dict,
    frozen: dict,
    columns: dict[str, Any],
    n: int,
    optimizer: optax.GradientTransformation,
    schedule: Schedule,
    show_progress: bool,
    on_weights: Callable[[dict], None],
) -> tuple[dict, bool]:
    """Train; return ``(trainable, cancelled)``. ``columns`` hold the batchable arrays the
    loss reads; ``on_weights`` receives the trainable params after every step (so progress
    handlers and a cancellation see the current model)."""
    step = make_step(loss_fn, optimizer)
    opt_state = optimizer.init(trainable)
    rng = np.random.default_rng(schedule.seed)
    per_epoch = -(-n // schedule.batch_size)
    bar = ProgressBar(schedule.epochs * per_epoch, show_progress, task.label)
    task.emit("training_begin", examples=n, epochs=schedule.epochs, batch_size=schedule.batch_size)
    cancelled = False
    try:
        for epoch in range(schedule.epochs):
            total, count = 0.0, 0
            for b, indices in enumerate(epoch_batches(n, schedule.batch_size, schedule.shuffle, rng)):
                batch = {name: D.take(col, indices) for name, col in columns.items()}
                trainable, opt_state, loss = step(trainable, opt_state, frozen, batch)
                loss = float(loss)
                on_weights(trainable)
                total, count = total + loss * len(indices), count + len(indices)
                task.history.mini_batch.append((epoch, b, loss))
                bar.step(epoch, loss)
                task.emit("mini_batch_end", epoch=epoch, mini_batch=b, indices=indices, loss=loss)
                if task.cancelled:
                    cancelled = True
                    break
            if count and not cancelled:
                task.history.epoch.append(total / count)
                task.emit("epoch_end", epoch=epoch, loss=total / count)
            if cancelled:
                break
    finally:
        bar.close()
    return trainable, cancelled


def training_task(
    name: str,
    params: dict,
    keys: list[str],
    *,
    progress,
    loss_fn: Callable,
    columns: dict[str, Any],
    n: int,
    optimizer: optax.GradientTransformation,
    schedule: Schedule,
    show_progress: bool,
    result_model: Callable[[dict], Any],
) -> UpdateTask:
    """An ``UpdateTask`` training the entries ``keys`` of ``params`` (the rest frozen) with
    ``run_epochs``. Its result holds ``result_model(trained)`` and the loss metrics; a
    progress handler's ``ctx.model`` is ``result_model`` of the weights reached so far.
    ``params`` and ``result_model`` are a model's (``model.params``, ``model.with_params``), or
    those of a pipeline's last model, whose ``result_model`` puts the trained weights back
    into the whole pipeline."""
    trainable = {k: params[k] for k in keys}
    frozen = {k: v for k, v in params.items() if k not in trainable}
    latest = {"trainable": trainable}

    def run(task: UpdateTask) -> UpdateResult:
        trained, cancelled = run_epochs(
            task, loss_fn=loss_fn, trainable=trainable, frozen=frozen, columns=columns, n=n, optimizer=optimizer,
            schedule=schedule, show_progress=show_progress, on_weights=lambda t: latest.__setitem__("trainable", t),
        )
        epochs = task.history.epoch
        metrics = {"loss": epochs[-1] if epochs else None, "epochs": len(epochs), "examples": n}
        return UpdateResult(result_model(trained), task.history, metrics, cancelled)

    return UpdateTask(name, run, lambda: result_model(latest["trainable"]), progress)
