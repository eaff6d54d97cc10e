"""The MIL op registry: one small function per op, registered with ``@op("name")``.

An op function takes the op's inputs by their MIL names (tensors first, then attributes as
keyword arguments with the spec's defaults) and returns one value or a tuple for ops with
several outputs. ``static`` names inputs that must be known at compile time (coremltools'
``const=True``); ``variadic`` names inputs that are tuples of tensors (``concat``'s ``values``);
``eager`` marks ops whose output shape depends on data, so a program holding one is not jitted
whole. Opset-specific variants register with ``since="CoreML7"`` (iOS17) and win for programs
at or above that opset. The table is a ``mlc.frontends.registry.Registry`` (``OPS``) keyed by op
name, each entry the op's lowerings for the opsets it changed in.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from mlc.frontends.registry import DuplicateEntryError, Registry

# Function opset names (MIL.proto Function.opset) in order; CoreML5 is iOS15.
OPSETS = ("CoreML5", "CoreML6", "CoreML7", "CoreML8", "CoreML9")
OPSET_TARGETS = {"CoreML5": "iOS15", "CoreML6": "iOS16", "CoreML7": "iOS17", "CoreML8": "iOS18", "CoreML9": "iOS26"}


@dataclasses.dataclass(frozen=True)
class OpDef:
    name: str
    fn: Callable
    static: frozenset[str]
    variadic: frozenset[str]
    eager: bool
    since: str
    fold: bool = True  # False: never evaluated at trace time (random ops draw anew; constexpr ops compile once)


def _load_ops() -> None:
    import mlc.frontends.mil.ops  # noqa: F401  (registers every family)


class InvalidProgram(ValueError):
    """An op's inputs break the op's own contract (``stack``'s values of different shapes), so
    Core ML refuses the program: at load when the shapes are known then, else when it runs. The
    lowering reports it as ``MLCParametersError`` naming the operation."""


# each op name holds its lowerings, oldest opset first
OPS: Registry[list[OpDef]] = Registry("MIL op", _load_ops)


def _rank(opset: str) -> int:
    return OPSETS.index(opset) if opset in OPSETS else len(OPSETS)


def op(name: str, *, static=(), variadic=(), eager: bool = False, since: str = "CoreML5", fold: bool = True):
    """Register the decorated function as the lowering of MIL op ``name``."""
    if since not in OPSETS:
        raise ValueError(f"unknown opset {since!r}")

    def register(fn: Callable) -> Callable:
        defs = OPS.setdefault(name, [])
        if any(d.since == since for d in defs):
            raise DuplicateEntryError(f"MIL op {name!r} is already registered for {since}")
        defs.append(OpDef(name, fn, frozenset(static), frozenset(variadic), eager, since, fold))
        defs.sort(key=lambda d: _rank(d.since))
        return fn

    return register


def find(name: str, opset: str = "CoreML9") -> OpDef | None:
    """The newest lowering of ``name`` valid for ``opset``, or None."""
    best = None
    for d in OPS.find(name) or ():
        if _rank(d.since) <= _rank(opset):
            best = d
    return best


def lookup(name: str, opset: str, *, op_name: str, model: str) -> OpDef:
    """``find``, or the ``MLCUnsupportedError`` naming the op, the operation, the opset and the model."""
    found = find(name, opset)
    if found is None:
        raise OPS.unsupported(
            name,
            where=model,
            detail=f"operation {op_name!r}, opset {OPSET_TARGETS.get(opset, opset)}",
            hint="`mlc info MODEL` lists every unsupported op",
        )
    return found


def supported_ops() -> list[str]:
    return OPS.names()


def lowerings() -> dict[str, list[OpDef]]:
    """Every registered op with its lowerings, oldest opset first."""
    return {name: list(defs) for name, defs in OPS.items()}
