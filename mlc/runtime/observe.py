"""An optional observer of the ops a lowered model runs (``mlc.deploy.cost`` costs each op with it).

The front ends ask ``current()`` once per op they run, after the op ran; with no observer
installed (always, outside ``observing``) that is one ContextVar read. An observer is any
object with these methods, each called with the values the op ran on (tracers while the model
is traced under ``jit``, arrays when it runs op by op):

* ``mil_op(op, definition, kwargs, folded)``: an ML Program operation (``mlc.frontends.mil.ir.Operation``),
  its ``OpDef`` and the keyword arguments its lowering was called with; ``folded`` when it was
  evaluated at trace time on static inputs (shape arithmetic: no work at run time).
* ``nn_layer(plan, ctx, args, folded)``: a NeuralNetwork layer (``LayerPlan``), its
  ``LayerContext`` and the input arrays.
* ``classic_stage(kind, fn, params, values, host)``: a classic model (a pipeline's
  stages one by one), run as ``fn(params, values)``; ``host`` for a stage that works on Python
  values (strings, dictionaries) outside XLA.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable, Iterator

_OBSERVER: contextvars.ContextVar[Any] = contextvars.ContextVar("mlc_op_observer", default=None)


def current() -> Any:
    """The installed observer, or None."""
    return _OBSERVER.get()


@contextlib.contextmanager
def observing(observer: Any) -> Iterator[Any]:
    """Install ``observer`` for the ops run inside (``None`` turns observation off)."""
    token = _OBSERVER.set(observer)
    try:
        yield observer
    finally:
        _OBSERVER.reset(token)


def observed_stage(fn: Callable[[dict, dict], dict], kind: str, host: bool) -> Callable[[dict, dict], dict]:
    """A classic stage function that reports each call to the observer, if any."""

    @functools.wraps(fn)
    def run(params: dict, values: dict) -> dict:
        out = fn(params, values)
        observer = _OBSERVER.get()
        if observer is not None:
            observer.classic_stage(kind, fn, params, values, host)
        return out

    return run
