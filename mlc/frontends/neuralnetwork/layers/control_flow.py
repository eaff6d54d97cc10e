"""Control flow (NeuralNetwork.proto ``BranchLayerParams``, ``LoopLayerParams``,
``LoopBreakLayerParams``, ``LoopContinueLayerParams``).

``branch`` and ``loop`` register ``eager=True``: a network holding one runs layer by layer on
concrete values, so a condition is a Python bool and a loop a Python ``while``. Their nested
networks have no scope of their own: they read and write the blobs of the enclosing network
(``ctx.run(field, ctx.env)``), which is how a loop body updates its loop variables and how a
branch produces the blobs later layers read.

``loopBreak`` and ``loopContinue`` raise private exceptions that the innermost running ``loop``
catches (through any ``branch`` between them). They subclass ``MLCParametersError`` so the
runner passes them through unwrapped, and so one raised outside any loop reaches the caller as
an invalid-model error naming the layer.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.frontends.neuralnetwork.registry import layer

_EPS = 1e-6  # |condition| above this is true (BranchLayerParams.ifBranch)


class _LoopSignal(MLCParametersError):
    """Raised by loopBreak/loopContinue; caught by the enclosing loop layer."""


class _Break(_LoopSignal):
    pass


class _Continue(_LoopSignal):
    pass


def _concrete(ctx, value, what: str) -> np.ndarray:
    if isinstance(value, jax.core.Tracer):
        raise MLCUnsupportedError(
            f"{ctx.where}: the {what} is a traced value (jit/vmap/grad of the model's function); "
            f"NeuralNetwork control flow runs only layer by layer, as Model.predict does"
        )
    return np.asarray(value)


def _scalar(ctx, value, what: str) -> float:
    v = _concrete(ctx, value, what)
    if v.size != 1:
        raise ctx.fail(f"the {what} must be a scalar (one element), got shape {v.shape}")
    return float(v.reshape(()))


def _truth(ctx, value, what: str = "condition") -> bool:
    """A condition tensor as a bool: true when its absolute value exceeds 1e-6."""
    return abs(_scalar(ctx, value, what)) > _EPS


@layer("branch", eager=True)
def branch(ctx, p, cond):
    """Run ``ifBranch`` when |cond| > 1e-6, else ``elseBranch`` (optional), on the enclosing blobs."""
    ctx.run("ifBranch" if _truth(ctx, cond) else "elseBranch", ctx.env)


def _max_iterations(ctx, p, count) -> int | None:
    """The iteration bound: the input's value when present, else ``maxLoopIterations``; None for
    an unbounded while loop (a condition network with ``maxLoopIterations`` 0 and no input)."""
    if count:
        n = _scalar(ctx, count[0], "maximum loop count input")
        if not math.isfinite(n) or n < 0:
            raise ctx.fail(f"the maximum loop count must be a non-negative number, got {n}")
        return int(n)
    n = int(p.maxLoopIterations)
    if n == 0 and p.conditionVar:
        return None
    return n


@layer("loop", eager=True)
def loop(ctx, p, *count):
    """``LoopLayerParams``' three cases in one loop (the proto's pseudo-code):

    * no ``conditionVar``: ``for i in range(max): body()``;
    * ``conditionVar`` and no bound (``maxLoopIterations`` 0, no input): ``while cond: body()``;
    * ``conditionVar`` and a bound: ``while cond and i < max: body()``.

    The condition network runs before the first iteration and after every body that completes
    or continues (not after a break); its ``conditionVar`` blob is then read from the
    enclosing scope.
    """
    if len(count) > 1:
        raise ctx.fail(f"takes at most 1 input (the maximum loop count), got {len(count)}")
    limit = _max_iterations(ctx, p, count)
    name = p.conditionVar

    def condition() -> bool:
        if not name:
            return True
        ctx.run("conditionNetwork", ctx.env)
        if name not in ctx.env:
            raise ctx.fail(f"conditionVar {name!r} is produced neither by the condition network nor before the loop")
        return _truth(ctx, ctx.env[name], f"loop condition {name!r}")

    i, go = 0, condition()
    while go and (limit is None or i < limit):
        try:
            ctx.run("bodyNetwork", ctx.env)
        except _Break:
            break
        except _Continue:
            pass
        i += 1
        go = condition()


@layer("loopBreak")
def loop_break(ctx, p):
    """Leave the innermost enclosing loop."""
    raise _Break(f"{ctx.where}: loopBreak outside a loop's body network")


@layer("loopContinue")
def loop_continue(ctx, p):
    """Skip the rest of the innermost enclosing loop's body for this iteration."""
    raise _Continue(f"{ctx.where}: loopContinue outside a loop's body network")
