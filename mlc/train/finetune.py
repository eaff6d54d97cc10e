"""``mlc.finetune``: train any ML Program or NeuralNetwork model with optax, updatable or not.

The params pytree (``model.params``) is partitioned in two: the trainable params, chosen by
name or glob pattern (``"fc1/*"``, ``"*weight*"``), and the frozen rest. Only the trainable
part is differentiated and updated; the frozen part rides along unchanged.

Compressed weights (quantized or palettized: a ``constexpr_*`` op's data in an ML Program, a
quantized ``WeightParams`` in a NeuralNetwork) are refused as trainable: training them would
mean re-compressing on save. With ``trainable=None`` every fp32/fp16 param trains and the
compressed ones stay frozen. fp16 weights train in the precision the model computes in and are
rounded to fp16 at the end, as ``save`` stores them.

``loss(outputs, batch) -> scalar``: ``outputs`` are the model's outputs for the mini-batch as
the pure function gives them (``Model.jax_function``), with a leading batch axis (a
classifier's as ``Classification``, its ``.probabilities`` batched); ``batch`` holds every
column of the training data for the mini-batch (the model's inputs as the program takes them,
other columns, such as targets, as arrays). By convention it is a mean over the mini-batch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import numpy as np
import optax

from mlc._errors import MLCUpdateError
from mlc.train import data as D
from mlc.train.loop import Schedule, training_task
from mlc.train.task import UpdateTask, show_progress_default
from mlc.train.trainable import check_trainable_model, select_trainable


def _batch_columns(model, columns: dict, where: str) -> dict[str, np.ndarray]:
    required = [n for n, f in model.input_description.items() if not f.optional]
    D.require(columns, required, where)
    out = dict(D.model_input_batch(model, columns, where))
    for name, value in columns.items():
        if name in out:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise MLCUpdateError(
                f"{where}: training column {name!r} holds {arr.dtype} values; the loss can only read numbers "
                f"(map labels to class indices first)"
            )
        out[name] = arr
    return out


def finetune(
    model: Any,
    data: Any,
    *,
    loss: Callable[[dict, dict], Any],
    trainable: str | Iterable[str] | None = None,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    progress=None,
    show_progress: bool | None = None,
    start: bool = True,
) -> UpdateTask:
    """Fine-tune ``model`` on ``data`` with ``optimizer`` (default ``optax.adam(1e-3)``).

    Returns the ``UpdateTask`` (run unless ``start=False``); ``task.model`` is the trained
    model, ``task.model.save("Tuned.mlpackage")`` writes it as Core ML.
    """
    from mlc.model import Model, load

    model = model if isinstance(model, Model) else load(model)
    where = model.name
    check_trainable_model(model, "mlc.finetune")
    if not callable(loss):
        raise MLCUpdateError(f"{where}: loss must be a callable loss(outputs, batch) -> scalar")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise MLCUpdateError(f"{where}: {name} must be a positive integer, got {value!r}")
    keys = select_trainable(model, trainable)
    columns, n = D.as_columns(data, where)
    batch_columns = _batch_columns(model, columns, where)
    input_names = [k for k in batch_columns if k in model.input_description]
    fn, _ = model.jax_function()

    def loss_fn(trainable_, frozen_, batch):
        outputs = jax.vmap(fn, in_axes=(None, 0))({**frozen_, **trainable_}, {k: batch[k] for k in input_names})
        return loss(outputs, batch)

    _check_scalar_loss(loss_fn, model.params, batch_columns, min(batch_size, n), where)
    task = training_task(
        f"finetune {where}",
        model.params,
        keys,
        progress=progress,
        loss_fn=loss_fn,
        columns=batch_columns,
        n=n,
        optimizer=optimizer if optimizer is not None else optax.adam(1e-3),
        schedule=Schedule(int(epochs), int(batch_size), bool(shuffle), int(seed)),
        show_progress=show_progress_default() if show_progress is None else show_progress,
        result_model=model.with_params,
    )
    return task.resume() if start else task


def _check_scalar_loss(loss_fn, params, columns, size: int, where: str) -> None:
    batch = {k: D.take(v, np.arange(size)) for k, v in columns.items()}
    try:
        out = jax.eval_shape(loss_fn, {}, params, batch)
    except Exception as e:  # the user's loss failed on the first mini-batch: say so, with its error
        raise MLCUpdateError(f"{where}: the loss failed on a mini-batch of {size}: {type(e).__name__}: {e}") from e
    if getattr(out, "shape", None) != ():
        raise MLCUpdateError(f"{where}: the loss must return a scalar, got {getattr(out, 'shape', type(out).__name__)}")
