"""Which params of a model may be trained, and which models can be: shared by ``mlc.finetune``
and ``Model.as_flax`` (``mlc.train.flax_module``).

Nothing here imports ``mlc.model`` or the training stack (optax): ``Model.as_flax`` reaches this
module through ``mlc.train.flax_module`` without an import cycle.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

from mlc._errors import MLCUnsupportedError, MLCUpdateError

TRAINABLE_STORAGE = ("fp32", "fp16")


def select_trainable(model, trainable: str | Iterable[str] | None) -> list[str]:
    """The params keys to train: every fp32/fp16 param, or those matching the given names or
    glob patterns (each pattern must match something; compressed params are refused)."""
    where = model.name
    storage = model.program.param_storage
    keys = list(model.params)
    if trainable is None:
        chosen = [k for k in keys if storage.get(k) in TRAINABLE_STORAGE]
    else:
        patterns = [trainable] if isinstance(trainable, str) else list(trainable)
        chosen = []
        for pattern in patterns:
            matched = [k for k in keys if k == pattern or fnmatch.fnmatchcase(k, pattern)]
            if not matched:
                raise MLCUpdateError(f"{where}: trainable {pattern!r} matches no param; the params are {_preview(keys)}")
            chosen += [k for k in matched if k not in chosen]
        compressed = [k for k in chosen if storage.get(k) not in TRAINABLE_STORAGE]
        if compressed:
            raise MLCUnsupportedError(
                f"{where}: param {compressed[0]!r} is a compressed weight ({storage.get(compressed[0], 'unknown storage')}); "
                f"compressed weights cannot be trained, since saving would have to re-compress them. Leave them frozen, "
                f"or decompress the model with coremltools first"
            )
    if not chosen:
        raise MLCUpdateError(f"{where}: the model has no trainable (fp32 or fp16) params")
    return chosen


def _preview(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:12])
    return f"[{shown}{', ...' if len(keys) > 12 else ''}] ({len(keys)} in all)"


def check_trainable_model(model, what: str) -> None:
    """Refuse the models ``finetune`` and ``as_flax`` cannot differentiate."""
    from mlc.frontends.neuralnetwork.frontend import KINDS

    where = model.name
    kind = model.spec.WhichOneof("Type")
    if kind != "mlProgram" and kind not in KINDS:
        raise MLCUnsupportedError(f"{where}: {what} trains ML Program and NeuralNetwork models; this is a {kind} model")
    if model.runner.eager:
        raise MLCUnsupportedError(f"{where}: the model's output shapes depend on its input values; {what} cannot jit it")
    if model.program.interface.states:
        raise MLCUnsupportedError(f"{where}: {what} does not train stateful models")
