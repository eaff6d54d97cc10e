"""Lower one Model proto (any type) to a ``Stage``: classic types through the registry,
NeuralNetwork and ML Program stages through their own front ends, Apple-proprietary types
refused by name."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mlc.runtime import observe
from mlc._errors import MLCUnsupportedError
from mlc.frontends.classic.registry import PROPRIETARY, find
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.io.pipelines import PIPELINES
from mlc.io.spec import LoadedSpec
from mlc.frontends.mil import frontend as mil
from mlc.frontends.neuralnetwork import frontend as neuralnetwork
from mlc.features import FeatureDescriptions
from mlc.program.program import Interface, Program
from mlc.runtime import dtypes

MAX_DEPTH = 16  # stages nested deeper than this (pipelines in pipelines, linked models) are refused
NEURAL = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor", "mlProgram")
COMPOSITE = (*PIPELINES, "linkedModel")  # types whose work is done by stages lowered with lower_stage


def lower_stage(ctx: StageContext, fp16_as_fp32: bool = True) -> Stage:
    kind = ctx.kind
    if kind is None:
        ctx.fail("the model's Type is not set (an empty or corrupt specification)")
    if ctx.where.count(" > ") > MAX_DEPTH:
        ctx.fail(f"models nested more than {MAX_DEPTH} deep (pipelines in pipelines, or linked models linking each other)")
    if kind in PROPRIETARY:
        raise MLCUnsupportedError(
            f"{ctx.where}: Core ML model type {kind!r} relies on {PROPRIETARY[kind]}, which exists only on "
            "Apple platforms; mlc cannot run it"
        )
    if kind in NEURAL:
        return _neural_stage(ctx, fp16_as_fp32)
    builder = find(kind)
    if builder is None:
        raise MLCUnsupportedError(f"{ctx.where}: Core ML model type {kind!r} is not supported by mlc yet")
    stage = builder(ctx)
    stage.op_histogram = stage.op_histogram or {kind: 1}
    if kind not in COMPOSITE:  # a composite's stages report themselves
        stage.fn = observe.observed_stage(stage.fn, kind, stage.host)
    return stage


def _neural_stage(ctx: StageContext, fp16_as_fp32: bool) -> Stage:
    """A NeuralNetwork or ML Program inside a pipeline: its own front end, its inputs cast to
    the dtypes its program computes in."""
    loaded = LoadedSpec(ctx.spec, ctx.where, ctx.loaded.model_dir)
    if ctx.kind == "mlProgram":
        program = mil.build(loaded, function_name=None, fp16_as_fp32=fp16_as_fp32)
    else:
        program = neuralnetwork.build(loaded)
    input_dtypes = program.interface.input_dtypes

    def cast(values: dict) -> dict:
        with dtypes.precision(fp16_as_fp32):
            return {n: jnp.asarray(v, dtypes.compute_dtype(input_dtypes[n])) if n in input_dtypes else v for n, v in values.items()}

    def fn(params: dict, values: dict) -> dict:
        return program.fn(params, cast(values))

    blobs = None if program.blobs is None else (lambda params, values: program.blobs(params, cast(values)))
    return Stage(
        fn, program.params, eager=program.eager, op_histogram=dict(program.op_histogram),
        param_storage=dict(program.param_storage), blobs=blobs,
    )


def interface(spec) -> Interface:
    """The interface a classic model's (or pipeline stage's) description declares, each array
    input computed in the dtype ``boundary_dtype`` gives it; a fixed-shape multiarray input
    takes any shape of its size (``Feature.reshapes``)."""
    desc = spec.description
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


def stage_program(spec, stage: Stage) -> Program:
    """A lowered model (the top-level one, or a pipeline's stage for ``Program.stages``) as a
    ``Program``: its function, params and storage, with the interface ``spec`` declares,
    computed in double."""
    return Program(
        fn=stage.fn,
        params=stage.params,
        interface=interface(spec),
        kind=spec.WhichOneof("Type"),
        param_storage=dict(stage.param_storage),
        eager=stage.host or stage.eager,
        x64=True,
        op_histogram=dict(stage.op_histogram),
        stages=stage.stages,
        blobs=stage.blobs,
    )


# The dtype each boundary feature is computed in: classic models run in 64-bit mode.
_COMPUTE = {"double": "fp64", "int64": "int64"}


def boundary_dtype(feature) -> str | None:
    """The MIL dtype a classic model computes the input ``feature`` in (``None``: as given)."""
    if feature.kind in _COMPUTE:
        return _COMPUTE[feature.kind]
    if feature.kind == "image":
        return "fp32"
    if feature.kind == "multiArray":
        if feature.dtype is not None and feature.dtype.kind in "iu":
            return "int32" if feature.dtype == np.int32 else "int64"
        return "fp32" if feature.dtype in (np.float32, np.float16) else "fp64"
    return None
