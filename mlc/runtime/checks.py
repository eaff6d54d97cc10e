"""Run-time checks: conditions an op asserts on values known only when the model runs.

Core ML refuses some predictions at run time, for example a ``scatter`` or ``gather`` with
``validate_indices=True`` whose indices come from an input and fall out of bounds ("Unable to
compute the prediction using ML Program"). Under ``jit`` a Python ``raise`` cannot see those
values, so an op calls ``require(ok, message)``: a concrete ``ok`` (known at trace time, or
running op by op) raises at once; a traced one is collected, and the lowered function returns
the collected flags under ``CHECKS``. ``Model`` raises ``MLCPredictionError`` after the call
when a flag is false, so the check costs one reduction and no host round trip inside the graph.

Checks inside control-flow bodies (``cond``, ``while_loop``) are not collected: their values
live in another trace. Such a check is skipped, not enforced.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCPredictionError

CHECKS = "@checks"  # key of the collected flags in a lowered function's outputs

_collected: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mlc_checks", default=None)
_where: contextvars.ContextVar[str] = contextvars.ContextVar("mlc_check_where", default="")


def require(ok: Any, message: str) -> None:
    """Assert that every element of ``ok`` is true when the model runs."""
    where = _where.get()
    text = f"{where}: {message}" if where else message
    if not isinstance(ok, jax.core.Tracer):
        if not np.all(np.asarray(ok)):
            raise _refused(text)
        return
    checks = _collected.get()
    if checks is not None:
        checks[text] = jnp.all(ok) if text not in checks else checks[text] & jnp.all(ok)


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, Any]]:
    """Collect the traced checks of the ops run inside, into the dict yielded."""
    checks: dict[str, Any] = {}
    token = _collected.set(checks)
    try:
        yield checks
    finally:
        _collected.reset(token)


@contextlib.contextmanager
def not_collecting() -> Iterator[None]:
    """Inside a nested trace (a control-flow body) traced checks are dropped."""
    token = _collected.set(None)
    try:
        yield
    finally:
        _collected.reset(token)


@contextlib.contextmanager
def operation(label: str) -> Iterator[None]:
    """Name the operation whose checks are raised inside (for the error message)."""
    token = _where.set(label)
    try:
        yield
    finally:
        _where.reset(token)


def raise_failed(checks: dict[str, Any]) -> None:
    """Raise ``MLCPredictionError`` for the first check whose flag (any batch element) is false."""
    for text, flag in checks.items():
        if not np.all(np.asarray(flag)):
            raise _refused(text)


def _refused(text: str) -> MLCPredictionError:
    """The error for a failed check, worded as Core ML's run-time refusal."""
    return MLCPredictionError(f"Unable to compute the prediction using ML Program: {text}")
