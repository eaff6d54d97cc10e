"""``pipeline``, ``pipelineClassifier``, ``pipelineRegressor`` (Model.proto ``Pipeline``).

Stages run in order over one table of named values: the pipeline's inputs, then each stage's
outputs. A stage reads its declared inputs by name from that table (Core ML's validator
requires each to be a pipeline input or an earlier stage's output), and the pipeline's outputs
are read from it at the end. A pipeline of numeric stages is one pure JAX function; one with
host stages (strings, dictionaries) or stages with data-dependent shapes runs stage by stage,
each of its other stages jitted on its own.
"""

from __future__ import annotations

import functools

import jax

from mlc._errors import MLCFeatureTypeError
from mlc.classification import Classification
from mlc.frontends.classic.lowering import lower_stage, stage_program
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.features import Feature
from mlc.io.pipelines import PIPELINES, pipeline_message, stage_names, stage_scope, stage_where
from mlc.program.program import PipelineStage, scoped_params
from mlc.runtime import checks
from mlc.runtime.interpreter import Node, run_node


def _stage_names(ctx: StageContext, pipeline) -> list[str]:
    n = len(pipeline.models)
    if not pipeline.names:
        return stage_names(pipeline)
    if len(pipeline.names) != n:
        ctx.fail(f"{len(pipeline.names)} stage names for {n} models")
    if len(set(pipeline.names)) != n:
        ctx.fail("stage names are not unique")
    return list(pipeline.names)


def _check_wiring(ctx: StageContext, models, names: list[str]) -> None:
    available = set(ctx.inputs)
    for model, name in zip(models, names):
        for f in model.description.input:
            if f.name not in available:
                ctx.fail(f"stage {name!r} reads {f.name!r}, which is neither a pipeline input nor an earlier stage's output")
        available.update(f.name for f in model.description.output)
    for name in ctx.outputs:
        if name not in available:
            ctx.fail(f"pipeline output {name!r} is produced by no stage")


def consumed(value, feature: Feature, where: str):
    """A value handed to the next stage as the feature it declares (a classifier's result
    becomes its label, its probability dictionary, or its probabilities); training a
    pipeline's last model hands values on the same way (``mlc.train.pipeline_update``)."""
    if not isinstance(value, Classification):
        return value
    if feature.kind == "dictionary":
        return value.probability_dict()
    if feature.kind == "multiArray":
        return value.probabilities
    if feature.kind in ("string", "int64"):
        return value.label()
    raise MLCFeatureTypeError(f"{where}: a classifier result cannot feed a {feature.kind} input")


def _check_numeric(values: dict, where: str) -> None:
    for name, value in values.items():
        if isinstance(value, (str, dict, list)):
            raise MLCFeatureTypeError(f"{where}: input {name!r} is a {type(value).__name__}, but this stage takes numbers")


@model_type(*PIPELINES)
def pipeline(ctx: StageContext) -> Stage:
    message = pipeline_message(ctx.spec)
    models = list(message.models)
    if not models:
        ctx.fail("the pipeline contains no models")
    names = _stage_names(ctx, message)
    _check_wiring(ctx, models, names)
    stages, histogram = [], {}
    for i, (model, name) in enumerate(zip(models, names)):
        where = stage_where(ctx.where, i, name)
        lowered = lower_stage(StageContext(model, ctx.loaded, where))
        stages.append(PipelineStage(stage_program(model, lowered), stage_scope(i, name), where))
        for k, v in lowered.op_histogram.items():
            histogram[k] = histogram.get(k, 0) + v
    stage_by_stage = any(s.program.eager for s in stages)  # a host stage, or one with data-dependent shapes
    run = run_stages(tuple(stages), stage_by_stage=stage_by_stage)
    outputs = list(ctx.outputs)

    def fn(params: dict, values: dict) -> dict:
        table, flags = run(params, values)
        result = {name: table[name] for name in outputs if name in table}
        if flags:
            result[checks.CHECKS] = flags
        return result

    params = {f"{s.scope}/{k}": v for s in stages for k, v in s.program.params.items()}
    storage = {f"{s.scope}/{k}": v for s in stages for k, v in s.program.param_storage.items()}
    return Stage(fn, params, eager=stage_by_stage, op_histogram=histogram, param_storage=storage, stages=tuple(stages))


def run_stages(stages: tuple[PipelineStage, ...], *, stage_by_stage: bool):
    """``run(params, values) -> (table, flags)``: ``stages`` run in order over one table of
    named values, ``values`` first. Each stage reads the inputs it declares from the table (a
    classifier's result handed on as the feature the stage declares: ``consumed``), runs as
    one node of the interpreter, and adds its outputs to the table. ``params`` are the
    pipeline's (each stage's under its scope). ``flags`` are the stages' run-time check flags;
    concrete ones raise at once, before a later stage sees the refused values.

    ``stage_by_stage``: the stages run on concrete values (some stage works on the host or
    has data-dependent shapes), each numeric one jitted on its own; otherwise the whole run is
    one traceable function."""
    jitted = {s.scope: jax.jit(s.program.fn) for s in stages if stage_by_stage and not s.program.eager}

    def run(params: dict, values: dict) -> tuple[dict, dict]:
        table, flags = dict(values), {}
        for stage in stages:
            interface = stage.program.interface
            args = {name: consumed(table[name], f, stage.where) for name, f in interface.inputs.items() if name in table}
            call = jitted.get(stage.scope, stage.program.fn)
            if stage.scope in jitted:
                _check_numeric(args, stage.where)
            node = Node(
                what=stage.where, compute=functools.partial(call, scoped_params(params, stage.scope), args),
                args=list(args.values()), static_args=[False] * len(args), fold=False, nested=True, key=stage.scope,
                scope=stage.scope,
            )
            produced, _ = run_node(node, {})
            _merge_checks(flags, produced.get(checks.CHECKS, {}))
            table.update({name: produced[name] for name in interface.outputs if name in produced})
        return table, flags

    return run


def _merge_checks(flags: dict, new: dict) -> None:
    """Keep a stage's run-time check flags (``mlc.runtime.checks``); concrete ones (a pipeline run
    stage by stage) raise at once, before a later stage sees the refused values."""
    for text, ok in new.items():
        if not isinstance(ok, jax.core.Tracer):
            checks.raise_failed({text: ok})
        flags[text] = ok if text not in flags else flags[text] & ok
