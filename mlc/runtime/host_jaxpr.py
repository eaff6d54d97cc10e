"""Evaluating a weight-only program with numpy on the host, instead of compiling it.

``mlc.runtime.hoist`` splits off what a model computes from its weights alone. On CPU that part is
mostly layout and dtype work (kernel transposes, fp16 widened to fp32, reshapes, scales), which
numpy does in milliseconds, where compiling it with XLA costs more than a second of a cold
start (ResNet-18: 1.3 s). A jaxpr made only of the primitives below is evaluated here; any
other primitive sends the whole part to XLA. The results are the same: these primitives are
exact (layout, widening) or correctly rounded in both numpy and XLA (+, -, *, /, sqrt).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def _rule(name: str) -> Callable:
    def register(fn):
        RULES[name] = fn
        return fn

    return register


RULES: dict[str, Callable] = {}


@_rule("transpose")
def _transpose(x, *, permutation, **_):
    return np.ascontiguousarray(np.transpose(x, permutation))


@_rule("convert_element_type")
def _convert(x, *, new_dtype, **_):
    return np.asarray(x).astype(new_dtype)


@_rule("reshape")
def _reshape(x, *, new_sizes, dimensions=None, **_):
    if dimensions is not None:
        raise NotImplementedError("reshape with dimensions")
    return np.reshape(x, new_sizes)


@_rule("broadcast_in_dim")
def _broadcast_in_dim(x, *, shape, broadcast_dimensions, **_):
    expanded = np.reshape(x, [x.shape[broadcast_dimensions.index(d)] if d in broadcast_dimensions else 1 for d in range(len(shape))])
    return np.broadcast_to(expanded, shape)


@_rule("squeeze")
def _squeeze(x, *, dimensions, **_):
    return np.squeeze(x, axis=tuple(dimensions))


@_rule("slice")
def _slice(x, *, start_indices, limit_indices, strides=None, **_):
    steps = strides or (1,) * len(start_indices)
    return x[tuple(slice(a, b, s) for a, b, s in zip(start_indices, limit_indices, steps))]


@_rule("concatenate")
def _concatenate(*xs, dimension, **_):
    return np.concatenate(xs, axis=dimension)


@_rule("rev")
def _rev(x, *, dimensions, **_):
    return np.flip(x, axis=tuple(dimensions))


for _name, _fn in {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum, "min": np.minimum}.items():
    RULES[_name] = lambda a, b, _f=_fn, **_: _f(a, b)
for _name, _fn in {"neg": np.negative, "sqrt": np.sqrt, "abs": np.abs}.items():
    RULES[_name] = lambda a, _f=_fn, **_: _f(a)
RULES["copy"] = RULES["copy_p"] = lambda x, **_: np.array(x)


def supported(jaxpr) -> bool:
    """Whether every equation of ``jaxpr`` (a core.Jaxpr, nested jit calls included) has a rule."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("pjit", "jit"):
            if not supported(eqn.params["jaxpr"].jaxpr):
                return False
        elif name not in RULES or eqn.effects:
            return False
        elif name == "div" and not np.issubdtype(eqn.outvars[0].aval.dtype, np.floating):
            return False  # integer division by zero differs between numpy and XLA
    return True


def evaluate(jaxpr, consts: list, args: list, release: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Run ``jaxpr`` on numpy arrays; every result has the dtype and shape the jaxpr declares.

    ``release(i)``, if given, is called once the ``i``-th argument has been read for the last
    time (never for one that is also a result, or that nothing reads), so that its memory can
    go before the next equation runs."""
    from jax._src import core

    env: dict[Any, Any] = {}

    def read(v):
        if isinstance(v, core.Literal):
            return np.asarray(v.val, dtype=v.aval.dtype)
        return env[v]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = np.asarray(value)
    position = {}
    for i, (var, value) in enumerate(zip(jaxpr.invars, args)):
        env[var] = value
        position.setdefault(var, i)
    # An intermediate is dropped after its last use: a model's widened or transposed weights
    # pass through several of them, and holding all at once would multiply the memory it takes.
    last = {v: i for i, eqn in enumerate(jaxpr.eqns) for v in eqn.invars if not isinstance(v, core.Literal)}
    results = {v for v in jaxpr.outvars if not isinstance(v, core.Literal)}
    for i, eqn in enumerate(jaxpr.eqns):
        values = [read(v) for v in eqn.invars]
        done = []
        for v in eqn.invars:
            if not isinstance(v, core.Literal) and last[v] == i and v not in results:
                if env.pop(v, None) is not None and v in position:
                    done.append(position[v])
        if eqn.primitive.name in ("pjit", "jit"):
            inner = eqn.params["jaxpr"]
            outs = evaluate(inner.jaxpr, list(inner.consts), values)
        else:
            outs = [RULES[eqn.primitive.name](*values, **eqn.params)]
        del values
        for var, out in zip(eqn.outvars, outs):
            env[var] = np.asarray(out, dtype=var.aval.dtype).reshape(var.aval.shape)
        del outs
        if release is not None:
            for p in done:
                release(p)
    return [read(v) for v in jaxpr.outvars]
