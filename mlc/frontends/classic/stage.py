"""What a classic model-type builder receives (``StageContext``) and returns (``Stage``)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NoReturn

from mlc._errors import MLCParametersError
from mlc.features import FeatureDescriptions
from mlc.io.spec import LoadedSpec


@dataclasses.dataclass
class Stage:
    """One lowered model: ``fn(params, values) -> values``, both dicts keyed by feature name.

    ``values`` hold the stage's declared inputs at program level: numbers as arrays (a double
    or int64 feature as a 0-d array, a multiarray as an array), strings as ``str``,
    dictionaries as ``dict``, sequences as ``list``. ``host`` stages work on such Python
    values (strings, dictionaries) and run outside ``jit``; every other stage is pure JAX.
    ``eager`` marks a numeric stage whose output shapes depend on data (it runs unjitted).
    """

    fn: Callable[[dict, dict], dict]
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    host: bool = False
    eager: bool = False
    op_histogram: dict[str, int] = dataclasses.field(default_factory=dict)
    param_storage: dict[str, str] = dataclasses.field(default_factory=dict)  # as ``Program.param_storage``
    stages: tuple = ()  # a pipeline's models (``mlc.program.PipelineStage``)
    blobs: Callable[[dict, dict], dict] | None = None  # a NeuralNetwork stage's blobs (``Program.blobs``)


@dataclasses.dataclass
class StageContext:
    """A model (or a pipeline stage) to lower: its spec, its features, and where it sits."""

    spec: Any  # the Model proto of this stage
    loaded: LoadedSpec  # the file it came from (model_dir for linked models and weights)
    where: str  # for messages: the file, plus the pipeline stage path

    @property
    def kind(self) -> str:
        return self.spec.WhichOneof("Type")

    @property
    def message(self) -> Any:
        """The stage's type-specific message, e.g. ``spec.glmRegressor``."""
        return getattr(self.spec, self.kind)

    @functools.cached_property
    def inputs(self) -> FeatureDescriptions:
        return FeatureDescriptions.from_proto(self.spec.description.input)

    @functools.cached_property
    def outputs(self) -> FeatureDescriptions:
        return FeatureDescriptions.from_proto(self.spec.description.output)

    @property
    def predicted_feature_name(self) -> str | None:
        return self.spec.description.predictedFeatureName or None

    @property
    def predicted_probabilities_name(self) -> str | None:
        return self.spec.description.predictedProbabilitiesName or None

    def fail(self, message: str) -> NoReturn:
        """Refuse an invalid parameter of this stage (``MLCParametersError`` naming the stage)."""
        raise MLCParametersError(f"{self.where} ({self.kind}): {message}")
