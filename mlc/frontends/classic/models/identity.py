"""``identity`` (Identity.proto): the model returns its inputs as outputs, unchanged.

Output ``i`` is input ``i`` (by position in the model description). Core ML's validator accepts
every identity; mlc refuses one that declares more outputs than inputs, since such an output
would have nothing to return. Numbers pass through the jitted program; an identity over
strings, dictionaries or sequences runs on the host.
"""

from __future__ import annotations

from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext

HOST_KINDS = ("string", "dictionary", "sequence")


@model_type("identity")
def identity(ctx: StageContext) -> Stage:
    inputs, outputs = list(ctx.inputs), list(ctx.outputs)
    if len(outputs) > len(inputs):
        ctx.fail(f"{len(outputs)} outputs but only {len(inputs)} inputs: output i returns input i")
    pairs = list(zip(outputs, inputs))
    host = any(ctx.inputs[source].kind in HOST_KINDS for _, source in pairs)

    def fn(params: dict, values: dict) -> dict:
        return {target: values[source] for target, source in pairs if source in values}

    return Stage(fn, {}, host=host)
