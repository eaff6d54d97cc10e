"""What every front end (ML Program, NeuralNetwork, classic) produces for ``Model``."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mlc.features import FeatureDescriptions


@dataclasses.dataclass
class Executable:
    """A pure ``fn(params, inputs) -> outputs`` plus the features it reads and writes.

    ``fn`` takes program-level arrays (images already as float ``(1, C, H, W)``) and returns
    program-level values by output name (classifier outputs as ``Classification``).
    """

    fn: Callable[[dict, dict], dict]
    params: dict[str, Any]
    inputs: FeatureDescriptions
    outputs: FeatureDescriptions
    states: FeatureDescriptions = dataclasses.field(default_factory=FeatureDescriptions)
    eager: bool = False
    function_name: str | None = None
    functions: tuple[str, ...] = ()
    predicted_feature_name: str | None = None
    predicted_probabilities_name: str | None = None
    input_dtypes: dict[str, Any] = dataclasses.field(default_factory=dict)  # program-level dtype per input
    op_histogram: dict[str, int] = dataclasses.field(default_factory=dict)
    unsupported: dict[str, int] = dataclasses.field(default_factory=dict)
    kind: str = ""
    x64: bool = False  # computes in double (classic models): run under jax.enable_x64
    # How each param is stored in the file: "fp32", "fp16", or "compressed" (quantized or
    # palettized data, a constexpr op's input); training rounds to it and ``save`` writes it.
    param_storage: dict[str, str] = dataclasses.field(default_factory=dict)
    # A batched ``fn`` over a leading input axis, where it cannot be ``jax.vmap(fn)`` (compiled
    # ``.mlc`` models call serialized modules, which hold their own batched version).
    batched: Callable[[dict, dict], dict] | None = None
    # NeuralNetwork models: ``blobs(params, inputs) -> every blob`` (loss layers read inner blobs).
    blobs: Callable[[dict, dict], dict] | None = None
