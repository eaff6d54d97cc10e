"""Reductions: the legacy ``reduce`` layer (NeuralNetwork.proto ``ReduceLayerParams``) and the ND
reductions ``reduceSum`` ... ``reduceLogSumExp`` (``ReduceSumLayerParams`` and siblings).

The legacy layer names its axes from the end (CHW = [-3, -2, -1], HW = [-2, -1], C, H, W = -3,
-2, -1), so it means the same in the rank-5 and the exact shape worlds, and keeps the reduced
axes as 1s. Its ``LOGSUM`` is the sum of logarithms, sum(ln(x + epsilon)), and ``ARGMAX`` gives
the (float) index of the first maximum.

The ND layers reduce ``axes`` (negative ones count from the end) or, with ``reduceAll`` or an
empty ``axes``, every axis; ``keepDims`` keeps the reduced axes as 1s. Their ``reduceLogSum`` is
ln(sum(x)). Reducing every axis without ``keepDims`` gives shape (1,), as coremltools'
``NeuralNetworkBuilder`` records it (rank 1). Unlike ``squeeze`` and ``slice*`` (rank 0 when every
axis goes, ``layers/shape_nd.py``), no test run on Core ML shows which rank Core ML gives here.
"""

from __future__ import annotations

import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer


def _log_sum_exp(x, axis, keepdims):
    m = jnp.max(x, axis=axis, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    out = jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else jnp.squeeze(out, axis=axis)


def _sum_of(fn):
    return lambda x, axis, keepdims: jnp.sum(fn(x), axis=axis, keepdims=keepdims)


ND_REDUCTIONS = {
    "reduceSum": jnp.sum,
    "reduceMean": jnp.mean,
    "reduceProd": jnp.prod,
    "reduceMax": jnp.max,
    "reduceMin": jnp.min,
    "reduceL1": _sum_of(jnp.abs),
    "reduceL2": lambda x, axis, keepdims: jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)),
    "reduceSumSquare": _sum_of(jnp.square),
    "reduceLogSum": lambda x, axis, keepdims: jnp.log(jnp.sum(x, axis=axis, keepdims=keepdims)),
    "reduceLogSumExp": _log_sum_exp,
}


def _nd_axes(ctx, p, rank: int) -> tuple[int, ...]:
    """The axes an ND reduction reduces: all of them with ``reduceAll`` or no ``axes``."""
    if p.reduceAll or len(p.axes) == 0:
        return tuple(range(rank))
    axes = []
    for a in p.axes:
        if not -rank <= int(a) < rank:
            raise ctx.fail(f"axis {int(a)} is out of range for an input of rank {rank}")
        axes.append(int(a) % rank)
    if len(set(axes)) != len(axes):
        raise ctx.fail(f"axes {list(p.axes)} name an axis twice")
    return tuple(sorted(axes))


def _nd_reduction(name, fn):
    def lowering(ctx, p, x):
        x = f32(x)
        out = fn(x, axis=_nd_axes(ctx, p, jnp.ndim(x)), keepdims=bool(p.keepDims))
        return jnp.reshape(out, (1,)) if jnp.ndim(out) == 0 else out

    lowering.__name__ = name
    lowering.__doc__ = f"``{name[0].upper()}{name[1:]}LayerParams``: see the module docstring."
    layer(name)(lowering)


for _name, _fn in ND_REDUCTIONS.items():
    _nd_reduction(_name, _fn)


# -- legacy reduce -------------------------------------------------------------------------------
LEGACY_AXES = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}  # ReduceAxis CHW, HW, C, H, W
LEGACY_MODES = ("SUM", "AVG", "PROD", "LOGSUM", "SUMSQUARE", "L1", "L2", "MAX", "MIN", "ARGMAX")


def _legacy(mode: str, x, axes, eps: float):
    if mode == "SUM":
        return jnp.sum(x, axis=axes, keepdims=True)
    if mode == "AVG":
        return jnp.mean(x, axis=axes, keepdims=True)
    if mode == "PROD":
        return jnp.prod(x, axis=axes, keepdims=True)
    if mode == "LOGSUM":
        return jnp.sum(jnp.log(x + eps), axis=axes, keepdims=True)
    if mode == "SUMSQUARE":
        return jnp.sum(jnp.square(x), axis=axes, keepdims=True)
    if mode == "L1":
        return jnp.sum(jnp.abs(x), axis=axes, keepdims=True)
    if mode == "L2":
        return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))
    if mode == "MAX":
        return jnp.max(x, axis=axes, keepdims=True)
    if mode == "MIN":
        return jnp.min(x, axis=axes, keepdims=True)
    return jnp.argmax(x, axis=axes[0], keepdims=True).astype(jnp.float32)


@layer("reduce")
def reduce(ctx, p, x):
    """``ReduceLayerParams``: ``mode`` over ``axis`` (CHW, HW, C, H or W), reduced axes kept as 1s;
    ``epsilon`` (LOGSUM only) defaults to 1e-6 when 0; ARGMAX takes a single axis (C, H or W)."""
    x = f32(x)
    if int(p.axis) not in LEGACY_AXES:
        raise ctx.fail(f"unknown reduce axis {int(p.axis)}")
    if not 0 <= int(p.mode) < len(LEGACY_MODES):
        raise ctx.fail(f"unknown reduce mode {int(p.mode)}")
    axes, mode = LEGACY_AXES[int(p.axis)], LEGACY_MODES[int(p.mode)]
    if jnp.ndim(x) < len(axes) or jnp.ndim(x) < -min(axes):
        raise ctx.fail(f"reducing axes {list(axes)} needs an input of rank {-min(axes)} at least, it has rank {jnp.ndim(x)}")
    if mode == "ARGMAX" and len(axes) != 1:
        raise ctx.fail("ARGMAX reduces a single axis (C, H or W), not CHW or HW")
    eps = float(p.epsilon) or 1e-6
    return _legacy(mode, x, axes, eps)
