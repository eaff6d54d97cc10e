"""Lower one Model proto (any type) to a ``Stage``: classic types through the registry,
NeuralNetwork and ML Program stages through their own front ends, Apple-proprietary types
refused by name."""

from __future__ import annotations

import jax.numpy as jnp

from mlc import observe
from mlc._errors import MLCUnsupportedError
from mlc.classic.registry import PROPRIETARY, find
from mlc.classic.stage import Stage, StageContext
from mlc.format.pipelines import PIPELINES
from mlc.format.spec import LoadedSpec
from mlc.mil import dtypes

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
        from mlc.mil.frontend import build

        exe = build(loaded, function_name=None, fp16_as_fp32=fp16_as_fp32)
    else:
        from mlc.nn.frontend import build

        exe = build(loaded)

    def fn(params: dict, values: dict) -> dict:
        with dtypes.precision(fp16_as_fp32):
            cast = {
                n: jnp.asarray(v, dtypes.compute_dtype(exe.input_dtypes[n])) if n in exe.input_dtypes else v
                for n, v in values.items()
            }
        return exe.fn(params, cast)

    return Stage(fn, exe.params, eager=exe.eager, op_histogram=dict(exe.op_histogram))
