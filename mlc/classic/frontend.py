"""Classic front end: any Model.proto type other than NeuralNetwork / ML Program at the top
level (GLMs, trees, SVMs, kNN, feature engineering, pipelines) -> ``Executable``."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mlc.classic.lowering import NEURAL, lower_stage
from mlc.format.pipelines import PIPELINES, pipeline_message
from mlc.classic.registry import PROPRIETARY, find
from mlc.classic.stage import StageContext
from mlc.executable import Executable
from mlc.features import FeatureDescriptions
from mlc.format.spec import LoadedSpec

# The dtype each boundary feature is computed in: classic models run in 64-bit mode.
_COMPUTE = {"double": "fp64", "int64": "int64"}


def handles(kind: str | None) -> bool:
    return kind is not None and (kind in PROPRIETARY or find(kind) is not None)


def _input_dtype(feature) -> str | None:
    if feature.kind in _COMPUTE:
        return _COMPUTE[feature.kind]
    if feature.kind == "image":
        return "fp32"
    if feature.kind == "multiArray":
        if feature.dtype is not None and feature.dtype.kind in "iu":
            return "int32" if feature.dtype == np.int32 else "int64"
        return "fp32" if feature.dtype in (np.float32, np.float16) else "fp64"
    return None


def model_types(spec) -> list[str]:
    """The model type of every stage, pipelines flattened (for ``mlc info``)."""
    kind = spec.WhichOneof("Type")
    if kind not in PIPELINES:
        return [kind or "<unset>"]
    return [kind] + [k for m in pipeline_message(spec).models for k in model_types(m)]


def _runs(kind: str) -> bool:
    return kind in NEURAL or (kind not in PROPRIETARY and find(kind) is not None)


def build(loaded: LoadedSpec, *, fp16_as_fp32: bool = True, lower: bool = True) -> Executable:
    spec = loaded.spec
    desc = spec.description
    inputs = FeatureDescriptions.from_proto(desc.input)
    for f in inputs.values():
        f.reshapes = f.kind == "multiArray" and not f.shape_ranges and not f.enumerated_shapes
    outputs = FeatureDescriptions.from_proto(desc.output)
    kind = spec.WhichOneof("Type")
    exe = Executable(
        fn=None,
        params={},
        inputs=inputs,
        outputs=outputs,
        predicted_feature_name=desc.predictedFeatureName or None,
        predicted_probabilities_name=desc.predictedProbabilitiesName or None,
        input_dtypes={n: d for n, f in inputs.items() if (d := _input_dtype(f))},
        kind=kind,
        x64=True,
    )
    if not lower:
        exe.op_histogram = dict(Counter(model_types(spec)).most_common())
        exe.unsupported = {k: n for k, n in exe.op_histogram.items() if not _runs(k)}
        return exe
    stage = lower_stage(StageContext(spec, loaded, loaded.name), fp16_as_fp32)
    exe.fn, exe.params = stage.fn, stage.params
    exe.eager = stage.host or stage.eager
    exe.op_histogram = stage.op_histogram
    return exe
