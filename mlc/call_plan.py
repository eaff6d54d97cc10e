"""``predict``'s and ``predict_batch``'s path for inputs of a signature they have run before:
casts, one compiled call, outputs.

The first ``predict`` with given input names, shapes and dtypes checks and converts the inputs
(``mlc.features``), traces the program, hoists its weight-only part and compiles the rest
(``mlc.runtime``). For plain multiarray inputs all it decided is a function of that signature
(``Model._casts_to_remember``), so a later call needs only the casts, the compiled call and the
outputs' conversion. A ``CallPlan`` holds exactly those, found once; each further call skips
the lookups (input and output descriptions, the signature's compiled function and weight-only
results, the size-limit and 64-bit contexts) that otherwise cost a small model more than its
compiled program (the VAD step of ``scripts/bench.py``: ``bench/experiments.md``, "Small
models: the call path").

``Model.predict`` makes a plan after a call that went the whole way, and uses it while the
model computes with the same runner and weights, no state is given, and neither ``MLC_DEBUG``
nor ``MLC_LIMIT`` is set (read on every call, as the full path reads them). Results and errors
are the full path's: the same casts, the same compiled function, the run-time checks raised,
each output converted by the same function.

``Model.predict_batch`` keeps plans the same way (``make(..., batch=True)``) for batch sizes
that run as one call: a batch the runner splits over threads (``mlc.runtime.batch_split``)
takes the full path, and a plan is used only while ``MLC_BATCH_SPLIT`` is what it was when
the plan was made. Small models gain most (the VAD step at batch 32: ``bench/experiments.md``,
"Small models: the batch call path").
"""

from __future__ import annotations

import os
from typing import Any, Callable

from mlc.runtime import batch_split

DEBUG_SWITCHES = ("MLC_DEBUG", "MLC_LIMIT")  # mlc.runtime.interpreter.debugging: node by node


class CallPlan:
    """One input signature's call: ``plan(data)`` returns what ``predict(data)`` returns."""

    __slots__ = ("runner", "params", "casts", "call", "outputs", "watched")

    def __init__(self, runner, params: dict, casts: list[tuple[str, Any, Any]], call: Callable, outputs: list[tuple[str, Callable]],
                 watched: tuple[tuple[str, str | None], ...] = ()):
        self.runner = runner  # the Runner whose compiled call this is
        self.params = params  # the weights it computes with (Runner.holds)
        self.casts = casts  # (name, declared dtype, program dtype) in the call's argument order
        self.call = call  # Runner.prepared_call's: arrays -> raw outputs, checks raised
        self.outputs = outputs  # (name, convert) per output, in the model's output order
        self.watched = watched  # (variable, value) the full path reads and the plan assumes

    def usable(self, runner) -> bool:
        """Whether this plan computes what the full path would for ``runner`` now."""
        return (runner is self.runner and runner.holds(self.params) and not any(k in os.environ for k in DEBUG_SWITCHES)
                and all(os.environ.get(k) == v for k, v in self.watched))

    def __call__(self, data: dict) -> dict:
        raw = self.call(*[data[n].astype(declared, copy=False).astype(program, copy=False) for n, declared, program in self.casts])
        return {name: convert(raw[name]) for name, convert in self.outputs}


def make(runner, casts: tuple, prepared: dict, outputs: list[tuple[str, Callable]], *, batch: bool = False) -> CallPlan | None:
    """A plan for inputs cast by ``casts`` (``Model._casts_to_remember``'s, by name) to
    ``prepared`` (the program inputs the full path just ran), or None where the runner has
    no prepared call for them. ``batch``: for ``predict_batch`` (``Runner.call_batch``)."""
    found = runner.prepared_call_batch(prepared) if batch else runner.prepared_call(prepared)
    if found is None:
        return None
    names, call, params = found
    by_name = {c[0]: c for c in casts}
    if set(by_name) != set(names):
        return None
    watched = ((batch_split.SPLIT_VARIABLE, os.environ.get(batch_split.SPLIT_VARIABLE)),) if batch else ()
    return CallPlan(runner, params, [by_name[n] for n in names], call, outputs, watched)
