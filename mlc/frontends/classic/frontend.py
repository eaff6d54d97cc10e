"""Classic front end: any Model.proto type other than NeuralNetwork / ML Program at the top
level (GLMs, trees, SVMs, kNN, feature engineering, pipelines) -> ``Program``."""

from __future__ import annotations

from collections import Counter

from mlc.frontends.classic.lowering import NEURAL, interface, lower_stage, stage_program
from mlc.io.pipelines import PIPELINES, pipeline_message
from mlc.frontends.classic.registry import PROPRIETARY, find
from mlc.frontends.classic.stage import StageContext
from mlc.program.program import Program, Summary
from mlc.io.spec import LoadedSpec


def handles(kind: str | None) -> bool:
    return kind is not None and (kind in PROPRIETARY or find(kind) is not None)


def model_types(spec) -> list[str]:
    """The model type of every stage, pipelines flattened (for ``mlc info``)."""
    kind = spec.WhichOneof("Type")
    if kind not in PIPELINES:
        return [kind or "<unset>"]
    return [kind] + [k for m in pipeline_message(spec).models for k in model_types(m)]


def _runs(kind: str) -> bool:
    return kind in NEURAL or (kind not in PROPRIETARY and find(kind) is not None)


def describe(loaded: LoadedSpec) -> Summary:
    """The model's interface and model types, nothing lowered (``mlc info``)."""
    program_kind = loaded.spec.WhichOneof("Type")
    histogram = dict(Counter(model_types(loaded.spec)).most_common())
    unsupported = {k: n for k, n in histogram.items() if not _runs(k)}
    return Summary(interface(loaded.spec), program_kind, histogram, unsupported)


def build(loaded: LoadedSpec, *, fp16_as_fp32: bool = True) -> Program:
    return stage_program(loaded.spec, lower_stage(StageContext(loaded.spec, loaded, loaded.name), fp16_as_fp32))
