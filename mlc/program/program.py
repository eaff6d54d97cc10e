"""``Program``: what every front end (ML Program, NeuralNetwork, classic) returns, complete and frozen.

A front end reads a spec and returns a ``Program`` once: nothing fills it in later, and
nothing at run time writes to it (what the runtime discovers, such as a data-dependent shape
found while tracing, is the ``Runner``'s own state). Describing a model without lowering it
(``mlc info``) is a separate, cheaper value: ``Summary``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mlc.features import FeatureDescriptions


@dataclasses.dataclass(frozen=True)
class Interface:
    """What a program reads and writes, as the model's description declares it.

    ``input_dtypes`` gives each array input's program-level MIL dtype (``"fp32"``, ``"int64"``,
    ...): the dtype the boundary casts it to before the program runs.
    """

    inputs: FeatureDescriptions
    outputs: FeatureDescriptions
    states: FeatureDescriptions = dataclasses.field(default_factory=FeatureDescriptions)
    predicted_feature_name: str | None = None
    predicted_probabilities_name: str | None = None
    input_dtypes: dict[str, str] = dataclasses.field(default_factory=dict)
    function_name: str | None = None  # the ML Program function it runs
    functions: tuple[str, ...] = ()  # every function of a multifunction program


@dataclasses.dataclass(frozen=True)
class Summary:
    """A model described without lowering it (``mlc info``): its interface, its kind, and the
    ops (layers, model types) it uses, with those mlc does not support."""

    interface: Interface
    kind: str
    op_histogram: dict[str, int] = dataclasses.field(default_factory=dict)
    unsupported: dict[str, int] = dataclasses.field(default_factory=dict)
    specification_version: int = 0
    short_description: str = ""


@dataclasses.dataclass(frozen=True)
class Program:
    """A lowered model: the pure ``fn(params, inputs) -> outputs`` and what it needs.

    ``fn`` takes program-level arrays (images already as float ``(1, C, H, W)``) and returns
    program-level values by output name (classifier outputs as ``Classification``; a stateful
    program's final states under ``mlc.runtime.interpreter.STATES``; run-time check flags under
    ``mlc.runtime.checks.CHECKS``).

    * ``param_storage``: how the file stores each param: ``"fp32"``, ``"fp16"``, or
      ``"compressed"`` (quantized or palettized data, a constexpr op's input). Training rounds
      to it and ``save`` writes it.
    * ``eager``: some node's output shape depends on data whatever its inputs (``non_zero``,
      control-flow layers), or the program works on Python values (a classic stage on strings
      or dictionaries): it runs node by node, never under one ``jit``.
    * ``x64``: computes in double (classic models): run under ``jax.enable_x64``.
    * ``stages``: a pipeline's models, in order, each a ``Program`` whose param keys are the
      pipeline's keys without the stage's ``scope`` prefix (``PipelineStage``).
    * ``batched``: a batched ``fn`` over a leading input axis where it cannot be
      ``jax.vmap(fn)`` (compiled ``.mlc`` models hold their own batched version).
    * ``blobs``: NeuralNetwork programs: ``blobs(params, inputs) -> every blob`` (loss layers
      read inner blobs).
    """

    fn: Callable[[dict, dict], dict]
    params: dict[str, Any]
    interface: Interface
    kind: str = ""
    param_storage: dict[str, str] = dataclasses.field(default_factory=dict)
    eager: bool = False
    x64: bool = False
    op_histogram: dict[str, int] = dataclasses.field(default_factory=dict)
    stages: tuple["PipelineStage", ...] = ()
    batched: Callable[[dict, dict], dict] | None = None
    blobs: Callable[[dict, dict], dict] | None = None

    def stage_params(self, stage: "PipelineStage", params: dict | None = None) -> dict:
        """``stage``'s params out of this pipeline's ``params`` (default: the program's own)."""
        return scoped_params(self.params if params is None else params, stage.scope)


@dataclasses.dataclass(frozen=True)
class PipelineStage:
    """One model of a pipeline: its ``Program``, the prefix of its keys in the pipeline's params
    (``"<index>:<name>"``), and where it sits, for messages."""

    program: Program
    scope: str
    where: str


def scoped_params(params: dict, scope: str) -> dict:
    """The params a pipeline holds under ``scope`` (``"<scope>/<key>"``), keyed as the stage's."""
    prefix = scope + "/"
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
