"""Classic front end: any Model.proto type other than NeuralNetwork / ML Program at the top
level (GLMs, trees, SVMs, kNN, feature engineering, pipelines) -> ``Program``."""

from __future__ import annotations

from collections import Counter

from mlc.frontends.classic.lowering import NEURAL, boundary_dtype, lower_stage
from mlc.io.pipelines import PIPELINES, pipeline_message
from mlc.frontends.classic.registry import PROPRIETARY, find
from mlc.frontends.classic.stage import StageContext
from mlc.program.program import Interface, Program, Summary
from mlc.features import FeatureDescriptions
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
    return Summary(_interface(loaded), program_kind, histogram, unsupported)


def _interface(loaded: LoadedSpec) -> Interface:
    desc = loaded.spec.description
    inputs = FeatureDescriptions.from_proto(desc.input)
    for f in inputs.values():
        f.reshapes = f.kind == "multiArray" and not f.shape_ranges and not f.enumerated_shapes
    return Interface(
        inputs=inputs,
        outputs=FeatureDescriptions.from_proto(desc.output),
        predicted_feature_name=desc.predictedFeatureName or None,
        predicted_probabilities_name=desc.predictedProbabilitiesName or None,
        input_dtypes={n: d for n, f in inputs.items() if (d := boundary_dtype(f))},
    )


def build(loaded: LoadedSpec, *, fp16_as_fp32: bool = True) -> Program:
    stage = lower_stage(StageContext(loaded.spec, loaded, loaded.name), fp16_as_fp32)
    return Program(
        fn=stage.fn,
        params=stage.params,
        interface=_interface(loaded),
        kind=loaded.spec.WhichOneof("Type"),
        param_storage=dict(stage.param_storage),
        eager=stage.host or stage.eager,
        x64=True,
        op_histogram=stage.op_histogram,
        stages=stage.stages,
        blobs=stage.blobs,
    )
