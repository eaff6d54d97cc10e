"""What a pipeline spec is (Model.proto ``Pipeline``), read once for every part of mlc.

``pipeline``, ``pipelineClassifier`` and ``pipelineRegressor`` all hold a ``Pipeline`` message
(the classifier and regressor wrap one). Its models' names default to ``"model<i>"``; a model's
params appear in the pipeline's params under the scope ``"<i>:<name>"`` (``"<scope>/<key>"``),
which the lowering (``mlc.frontends.classic.models.pipeline``), the weight write-back
(``mlc.frontends.neuralnetwork.writeback``) and pipeline updates (``mlc.train.pipeline_update``) share. No JAX here:
the file writer reads it too.
"""

from __future__ import annotations

PIPELINES = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def pipeline_message(spec):
    """The ``Pipeline`` message of a pipeline spec (the classifier and regressor wrap one)."""
    kind = spec.WhichOneof("Type")
    return spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline


def stage_names(pipeline) -> list[str]:
    """``Pipeline.names``, or Model.proto's default ``["model0", ..., "model<n-1>"]``."""
    return list(pipeline.names) or [f"model{i}" for i in range(len(pipeline.models))]


def stage_scope(index: int, name: str) -> str:
    """The prefix of a pipeline model's keys in the pipeline's params."""
    return f"{index}:{name}"


def stage_where(where: str, index: int, name: str) -> str:
    """A model of the pipeline ``where`` in messages."""
    return f"{where} > stage {index} {name!r}"
