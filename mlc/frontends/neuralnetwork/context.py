"""``LayerContext``: what a layer function may ask about the layer it lowers."""

from __future__ import annotations

from typing import Any, Callable

from mlc._errors import MLCParametersError


class LayerContext:
    """One layer's view of the network being lowered.

    ``weight(path)`` gives a decoded weight (``"weights"``, ``"bias"``,
    ``"weightParams.inputGateWeightMatrix"``, ``"weights[0]"``) as stored in the params pytree,
    already reshaped when the layer's registration declared a shape. ``run`` runs a nested network (the
    bodies of ``branch`` and ``loop``) on the current blobs.
    """

    def __init__(
        self, *, model: str, layer: Any, params: dict, run: Callable | None = None, env: dict | None = None,
        custom: dict | None = None, scope: str | None = None,
    ):
        self.model = model
        self.layer = layer
        self.params = params
        self._run = run
        self.env = env
        self.scope = scope or layer.name  # the params prefix of the layer's weights
        self.custom = custom or {}  # custom layer class name -> bound function (taken at load)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def where(self) -> str:
        return f"{self.model}: layer {self.layer.name!r} ({self.layer.WhichOneof('layer')})"

    def key(self, path: str) -> str:
        return weight_key(self.scope, path)

    def has_weight(self, path: str) -> bool:
        return self.key(path) in self.params

    def weight(self, path: str):
        k = self.key(path)
        if k not in self.params:
            raise MLCParametersError(f"{self.where}: weight {path!r} is not set")
        return self.params[k]

    @property
    def input_ranks(self) -> list[int]:
        """The ranks the spec declares for the inputs (``inputTensor``; 0 where unknown)."""
        return [int(t.rank) for t in self.layer.inputTensor]

    @property
    def output_ranks(self) -> list[int]:
        return [int(t.rank) for t in self.layer.outputTensor]

    def run(self, network, env: dict) -> dict:
        """Run the layers of a nested ``NeuralNetwork`` message on ``env`` (updated in place)."""
        if self._run is None:
            raise MLCParametersError(f"{self.where}: nested networks cannot run here")
        return self._run(network, env)

    def fail(self, message: str) -> MLCParametersError:
        return MLCParametersError(f"{self.where}: {message}")


class ShapeMismatchError(MLCParametersError):
    """A layer whose inputs must share one shape (``stack``) got inputs of different shapes.
    Its own class so that the load-time check at the inputs' default shapes
    (``mlc.frontends.neuralnetwork.verify.verify_default_shapes``) tells it from other failures."""


def weight_key(scope: str, path: str) -> str:
    """The params key of a layer's weight: ``"<layer name>/<field path>"`` (the name made unique
    with ``#n`` when a nested network repeats it)."""
    return f"{scope}/{path}"
