"""``UpdateTask``: one training run, modelled on Core ML's ``MLUpdateTask``.

A task is created ready; ``resume()`` runs it to the end (``mlc.update`` and ``mlc.finetune``
call it unless ``start=False``). While it runs, the ``progress`` handler gets an
``UpdateContext`` for each event, like ``MLUpdateProgressHandlers``:

* ``"training_begin"`` once, before the first mini-batch;
* ``"mini_batch_end"`` after each optimizer step, with the mini-batch's mean loss and the
  indices of its examples in the training data;
* ``"epoch_end"`` after each epoch, with the epoch's mean loss (the mean of its mini-batch
  losses, weighted by their sizes).

``progress`` is a callable taking the context, or a dict from event names to callables.
``context.task.cancel()`` (or ``task.cancel()`` from another thread) stops the run after the
current mini-batch; the result then holds the weights reached so far and ``cancelled=True``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from typing import Any, Callable

import numpy as np

from mlc._errors import MLCUpdateError

EVENTS = ("training_begin", "mini_batch_end", "epoch_end")


@dataclasses.dataclass
class UpdateContext:
    """What a progress handler sees (Core ML's ``MLUpdateContext``)."""

    task: "UpdateTask"
    event: str
    epoch: int  # 0-based; -1 at training_begin
    mini_batch: int  # 0-based within the epoch; -1 when not a mini-batch event
    indices: np.ndarray | None  # the mini-batch's examples (rows of the training data)
    loss: float | None
    metrics: dict[str, Any]

    @property
    def model(self):
        """The model with the weights reached so far (built on demand)."""
        return self.task._snapshot()


@dataclasses.dataclass
class LossHistory:
    """Losses as training went: per mini-batch and per epoch, ready to plot."""

    mini_batch: list[tuple[int, int, float]] = dataclasses.field(default_factory=list)  # (epoch, batch, loss)
    epoch: list[float] = dataclasses.field(default_factory=list)  # mean loss of each epoch

    @property
    def mini_batch_loss(self) -> np.ndarray:
        return np.asarray([loss for _, _, loss in self.mini_batch])

    @property
    def epoch_loss(self) -> np.ndarray:
        return np.asarray(self.epoch)

    def plot(self, ax=None):
        """Plot both curves on a matplotlib axis (made if not given); returns the axis."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - matplotlib ships with the notebook extras
            raise MLCUpdateError("LossHistory.plot needs matplotlib (pip install matplotlib)") from e
        if ax is None:
            _, ax = plt.subplots()
        if self.mini_batch:
            per_epoch = max(b for _, b, _ in self.mini_batch) + 1
            x = np.asarray([e + (b + 1) / per_epoch for e, b, _ in self.mini_batch])
            ax.plot(x, self.mini_batch_loss, alpha=0.4, label="mini-batch loss")
        if self.epoch:
            ax.plot(np.arange(1, len(self.epoch) + 1), self.epoch, marker="o", label="epoch loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend()
        return ax


@dataclasses.dataclass
class UpdateResult:
    """The outcome of a finished (or cancelled) task."""

    model: Any  # mlc.Model with the trained weights
    history: LossHistory
    metrics: dict[str, Any]
    cancelled: bool = False


class UpdateTask:
    """A training run. ``resume()`` runs it; ``result`` holds the outcome."""

    def __init__(self, name: str, run: Callable[["UpdateTask"], Any], snapshot: Callable[[], Any], progress=None):
        self.name = name
        self._run = run
        self._snapshot_fn = snapshot
        self._handlers = _handlers(progress, name)
        self._cancel = threading.Event()
        self.state = "ready"
        self.history = LossHistory()
        self.result: UpdateResult | None = None
        self.error: BaseException | None = None

    @property
    def label(self) -> str:
        """The task's name with the model's file name instead of its path (for progress bars)."""
        verb, _, model = self.name.partition(" ")
        return f"{verb} {os.path.basename(model.rstrip('/')) or model}"

    def resume(self) -> "UpdateTask":
        if self.state != "ready":
            raise MLCUpdateError(f"{self.name}: the task is {self.state}; a task runs once")
        self.state = "running"
        try:
            self.result = self._run(self)
        except BaseException as e:
            self.state, self.error = "failed", e
            raise
        self.state = "cancelled" if self.result.cancelled else "completed"
        return self

    def cancel(self) -> None:
        """Stop after the current mini-batch (Core ML's ``MLUpdateTask.cancel``)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def model(self):
        if self.result is None:
            raise MLCUpdateError(f"{self.name}: the task has not run; call task.resume()")
        return self.result.model

    def _snapshot(self):
        return self._snapshot_fn()

    def emit(self, event: str, *, epoch: int = -1, mini_batch: int = -1, indices=None, loss=None, **metrics) -> None:
        handler = self._handlers.get(event)
        if handler is not None:
            handler(UpdateContext(self, event, epoch, mini_batch, indices, loss, metrics))

    def __repr__(self) -> str:
        return f"UpdateTask({self.name!r}, state={self.state!r})"


def _handlers(progress, name: str) -> dict[str, Callable]:
    if progress is None:
        return {}
    if callable(progress):
        return {event: progress for event in EVENTS}
    if isinstance(progress, dict):
        unknown = [k for k in progress if k not in EVENTS]
        if unknown:
            raise MLCUpdateError(f"{name}: unknown progress event {unknown[0]!r}; the events are {list(EVENTS)}")
        for k, v in progress.items():
            if not callable(v):
                raise MLCUpdateError(f"{name}: the handler for {k!r} is not callable")
        return dict(progress)
    raise MLCUpdateError(f"{name}: progress must be a callable or a dict of event -> callable, got {type(progress).__name__}")


def show_progress_default() -> bool:
    return sys.stderr.isatty()
