"""``Model.as_flax()``: a Core ML model as a ``flax.nnx`` Module.

The module holds the model's weights: the trainable ones (``mlc.train.trainable.select_trainable``)
as ``nnx.Param``, the rest as ``Frozen`` variables, so ``nnx.Optimizer(module, tx,
wrt=nnx.Param)`` trains only the former. Calling it runs the lowered program (the model's pure
function) on program-level inputs by name, one example, or a batch with ``batched=True``. It
nests inside a larger flax model like any layer, and ``to_model()`` / ``save(path)`` write the
trained weights back into the Core ML model.
"""

from __future__ import annotations

from typing import Iterable

import jax
from flax import nnx

from mlc.train.trainable import check_trainable_model, select_trainable


class Frozen(nnx.Variable):
    """A Core ML weight that is not trained (not an ``nnx.Param``)."""


class CoreMLModule(nnx.Module):
    def __init__(self, model, trainable: str | Iterable[str] | None = None):
        check_trainable_model(model, "as_flax")
        keys = set(select_trainable(model, trainable))
        fn, params = model.jax_function()
        self.model = model  # static: the source model (its params are the initial weights)
        self.fn = fn
        self.weights = nnx.data({k: (nnx.Param(v) if k in keys else Frozen(v)) for k, v in params.items()})

    def params_dict(self) -> dict:
        return {k: v[...] for k, v in self.weights.items()}

    def __call__(self, inputs: dict, *, batched: bool = False):
        """The model's outputs for program-level ``inputs`` (a leading batch axis if ``batched``)."""
        params = self.params_dict()
        if batched:
            return jax.vmap(self.fn, in_axes=(None, 0))(params, inputs)
        return self.fn(params, inputs)

    def to_model(self):
        """The Core ML model with the module's current weights (``mlc.Model``)."""
        trained = {k: v[...] for k, v in self.weights.items() if isinstance(v, nnx.Param)}
        return self.model.with_params(trained)

    def save(self, path) -> None:
        """Write the Core ML model with the module's current weights."""
        self.to_model().save(path)
