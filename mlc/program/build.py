"""From a read spec to a ``Program`` (or a ``Summary``): pick the front end by the spec's type.

Nesting is limited where mlc recurses (``mlc.runtime.limits.MAX_NESTING``); a structure so deep
that Python's own recursion limit is reached first is refused too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.frontends.classic import frontend as classic
from mlc.frontends.mil import frontend as mil
from mlc.frontends.neuralnetwork import frontend as neuralnetwork
from mlc.io.description import check_description
from mlc.io.spec import LoadedSpec, load_spec
from mlc.program.program import Program, Summary


def build_program(loaded: LoadedSpec, *, function_name: str | None = None, fp16_as_fp32: bool = True) -> Program:
    """The lowered ``Program`` of ``loaded`` (an ML Program's ``function_name``, default the
    spec's); fp16 programs compute in fp32 where ``fp16_as_fp32``."""
    return _refusing_deep_nesting(loaded, lambda: _build(loaded, function_name, fp16_as_fp32))


def describe(source: Any, *, function_name: str | None = None) -> Summary:
    """A model's ``Summary`` without lowering it (``mlc info``): its interface, kind, op (layer,
    model type) histogram, the ops mlc does not support, and its specification version.
    ``source`` is anything ``mlc.load`` reads but a ``.mlc`` file."""
    loaded = load_spec(source)
    summary = _refusing_deep_nesting(loaded, lambda: _describe(loaded, function_name))
    return dataclasses.replace(
        summary,
        specification_version=loaded.spec.specificationVersion,
        short_description=loaded.spec.description.metadata.shortDescription,
    )


def _refusing_deep_nesting(loaded: LoadedSpec, make):
    try:
        return make()
    except RecursionError as e:
        raise MLCParametersError(f"{loaded.name}: the model nests its parts too deeply to load ({e})") from None


def _kind(loaded: LoadedSpec) -> str:
    kind = loaded.spec.WhichOneof("Type")
    if kind is None:
        raise MLCParametersError(f"{loaded.name}: the model's Type is not set (an empty or corrupt specification)")
    check_description(loaded.spec, loaded.name)
    if kind != "mlProgram" and kind not in neuralnetwork.KINDS and not classic.handles(kind):
        raise MLCUnsupportedError(f"{loaded.name}: Core ML model type {kind!r} is not supported by mlc yet")
    return kind


def _build(loaded: LoadedSpec, function_name: str | None, fp16_as_fp32: bool) -> Program:
    kind = _kind(loaded)
    if kind == "mlProgram":
        return mil.build(loaded, function_name=function_name, fp16_as_fp32=fp16_as_fp32)
    if kind in neuralnetwork.KINDS:
        return neuralnetwork.build(loaded)
    return classic.build(loaded, fp16_as_fp32=fp16_as_fp32)


def _describe(loaded: LoadedSpec, function_name: str | None) -> Summary:
    kind = _kind(loaded)
    if kind == "mlProgram":
        return mil.describe(loaded, function_name=function_name)
    if kind in neuralnetwork.KINDS:
        return neuralnetwork.describe(loaded)
    return classic.describe(loaded)
