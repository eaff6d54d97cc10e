"""The one node interpreter every front end runs its graph with.

An ML Program op, a NeuralNetwork layer and a classic pipeline stage are all *nodes*: a
function of some input values, with a name for messages. ``run_node`` runs one, and is where
the concerns every front end shares live, once:

* **static vs traced**: inputs a node declares static must be concrete; one computed from
  the model's inputs under ``jit`` raises ``DataDependentShapeError`` (the ``Runner`` then
  runs the program node by node, where it is concrete and taken as numpy);
* **folding**: a node whose inputs are all static (numpy) runs at trace time under
  ``jax.ensure_compile_time_eval`` and its result stays numpy, so shape arithmetic folds;
* **size limits**: a node about to run on concrete values is first traced abstractly and its
  outputs checked against the tensor limit (``mlc.runtime.limits``), once per input signature;
* **the debug observer** (``mlc.runtime.observe``) and ``MLC_DEBUG`` / ``MLC_LIMIT``;
* **error wrapping**: any failure becomes an ``MLCError`` naming the node.

A front end supplies its node table (which function a node type runs) and how a node reads
its inputs; ``Node`` is what it hands over.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import sys
from typing import Any, Callable

import jax
import numpy as np

from mlc._errors import DataDependentShapeError, MLCError
from mlc.runtime import limits

STATES = "@states"  # key of the final state values in a stateful program's outputs


def is_static(v: Any) -> bool:
    """Whether ``v`` (a value, or a list or tuple of them) is known at trace time."""
    if isinstance(v, (np.ndarray, np.generic, int, float, bool, str, type(None))):
        return True
    if isinstance(v, (list, tuple)):
        return all(is_static(x) for x in v)
    return False


def has_tracer(v: Any) -> bool:
    """Whether ``v`` (a value, or a list or tuple of them) holds a JAX tracer."""
    if isinstance(v, (list, tuple)):
        return any(has_tracer(x) for x in v)
    return isinstance(v, jax.core.Tracer)


def to_numpy(v: Any) -> Any:
    """Concrete JAX arrays (in lists and tuples too) as numpy."""
    if isinstance(v, jax.Array):
        return np.asarray(v)
    if isinstance(v, (list, tuple)):
        return type(v)(to_numpy(x) for x in v)
    return v


# -- debugging (MLC_DEBUG, MLC_LIMIT) -------------------------------------------------------------
def debug_level() -> int:
    """``MLC_DEBUG``: 1 prints every node's outputs (shape, dtype), 2 also their range."""
    try:
        return int(os.environ.get("MLC_DEBUG", "0"))
    except ValueError:
        return 0


def node_limit() -> int | None:
    """``MLC_LIMIT=n``: stop after the n-th node and return its outputs."""
    limit = os.environ.get("MLC_LIMIT")
    return int(limit) if limit else None


def debugging() -> bool:
    """Whether a debug switch is set: the program then runs node by node, without ``jit``."""
    return debug_level() > 0 or node_limit() is not None


class NodeLimitReached(Exception):
    """``MLC_LIMIT`` was reached: ``outputs`` are the last node's, by name. The program's entry
    (``program_call``) returns them as the program's outputs."""

    def __init__(self, outputs: dict):
        self.outputs = outputs


_NODES_RUN: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mlc_nodes_run", default=None)


@contextlib.contextmanager
def program_call():
    """One call of a program (an ML Program function, a NeuralNetwork): ``MLC_LIMIT`` counts
    the nodes run from here, nested blocks and networks included."""
    token = _NODES_RUN.set([0])
    try:
        yield
    finally:
        _NODES_RUN.reset(token)


def node_done(kind: str, name: str, outputs: dict) -> None:
    """After a node ran (its ``outputs`` by name): ``MLC_DEBUG`` prints them; ``MLC_LIMIT=n``
    stops the program after its n-th node (``NodeLimitReached``)."""
    level, limit = debug_level(), node_limit()
    if level:
        print_node(kind, name, outputs, level)
    count = _NODES_RUN.get()
    if limit is not None and count is not None:
        count[0] += 1
        if count[0] >= limit:
            raise NodeLimitReached(outputs)


def print_node(kind: str, name: str, outputs: dict, level: int) -> None:
    """``MLC_DEBUG``'s line for one node: each output's dtype and shape (level 2: its range)."""
    parts = []
    for out, v in outputs.items():
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            desc = f"{out}: {v.dtype}{list(v.shape)}"
            if level > 1 and getattr(v, "size", 0) and not isinstance(v, jax.core.Tracer) and v.dtype != object:
                a = np.asarray(v, dtype=np.float64)
                desc += f" min={a.min():.6g} max={a.max():.6g} mean={a.mean():.6g}"
        else:
            desc = f"{out}: {type(v).__name__}"
        parts.append(desc)
    print(f"[mlc] {kind} {name!r} -> {'; '.join(parts)}", file=sys.stderr)


# -- running one node ---------------------------------------------------------------------------
@dataclasses.dataclass
class Node:
    """One node to run, as a front end describes it.

    ``compute()`` runs the node's function on its (already read) inputs; ``args`` are those
    inputs (for the static / folding / size decisions), ``static_args`` which of them the node
    declares static; ``what`` names it in messages ("model: operation 'x' (conv)").
    ``fold``: the node may run at trace time when its inputs are all static (not a random op,
    not one reading a traced weight). ``nested``: it runs nested blocks or networks (its size
    is not traced abstractly). ``key``: a stable identity for the size-check cache.
    """

    what: str
    compute: Callable[[], Any]
    args: list
    static_args: list[bool]
    fold: bool
    nested: bool
    key: Any
    scope: str


def static_argument(value: Any, what: str, input_name: str) -> Any:
    """A value a node declares static: numpy when concrete; ``DataDependentShapeError`` when
    it is traced (computed from the model's inputs under ``jit``)."""
    if is_static(value):
        return value
    if has_tracer(value):
        raise DataDependentShapeError(
            f"{what}: input {input_name} is computed from the model's input values, so the node's output "
            f"shape depends on data and it cannot run under jit or vmap; Model.predict runs such a model node by node"
        )
    return to_numpy(value)  # running node by node: the value is concrete


def run_node(node: Node, shapes_cache: dict) -> tuple[Any, bool]:
    """Run ``node``: folded at trace time when it may be, its output sizes checked first when
    it runs on concrete values, inside ``jax.named_scope``; any failure an ``MLCError`` naming
    it. Returns ``(result, folded)``."""
    folded = node.fold and is_static(node.args)
    try:
        with jax.named_scope(node.scope):
            if not node.nested and not has_tracer(node.args):
                _check_output_sizes(node, shapes_cache)
            if folded:
                with jax.ensure_compile_time_eval():
                    return to_numpy(node.compute()), True
            return node.compute(), False
    except MLCError:
        raise
    except Exception as e:
        raise MLCError(f"{node.what} failed: {type(e).__name__}: {e}") from e


def _check_output_sizes(node: Node, cache: dict) -> None:
    """A node about to run on concrete values (folded at trace time, or node by node)
    allocates its outputs at once, with sizes that may come from values in the file: refuse
    one larger than ``mlc.runtime.limits`` allows before it runs (traced abstractly once per
    input signature)."""
    parts = tuple(limits.signature(a, s) for a, s in zip(node.args, node.static_args))
    key = None if any(p is None for p in parts) else (node.key, parts)
    limits.check_abstract(node.compute, node.what, cache=cache, key=key)
