"""Gather and scatter (iOS15/iOS16/iOS17 scatter_gather.py).

Negative indices wrap as in numpy up to iOS16. iOS17 calls them out of bounds, with undefined
results unless ``validate_indices``: gathers still wrap them, iOS17 scatters drop their updates
(Apple's iOS17 test checks that a negative scatter index is not wrapped). Other out-of-bounds
indices are undefined in Core ML: gathers fill (NaN for floats) and scatters drop them.
``validate_indices`` is checked at compile time for constant indices and when the model runs
for indices computed from its inputs (``mlc.runtime.checks``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mlc.runtime.checks import require
from mlc.frontends.mil.ops._helpers import norm_axes, static_bool, static_int, static_str
from mlc.frontends.mil.registry import op


def _check_indices(indices, upper, validate) -> None:
    """With ``validate_indices``, indices must lie in [0, upper) (upper broadcasts over the last axis).

    Indices known at compile time are checked then; indices computed from the inputs are
    checked when the model runs (``mlc.runtime.checks``), as Core ML does.
    """
    if not static_bool(validate):
        return
    xp = np if isinstance(indices, np.ndarray) else jnp
    ok = (indices >= 0) & (indices < xp.asarray(upper, dtype=indices.dtype))
    require(ok, f"validate_indices is set and an index lies outside [0, {tuple(upper) if np.ndim(upper) else upper})")


def _batched(fn, batch_dims: int):
    """``fn`` mapped over the leading ``batch_dims`` axes of both of its arguments."""
    for _ in range(batch_dims):
        fn = jax.vmap(fn)
    return fn


@op("gather", static=("axis", "batch_dims", "validate_indices"))
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """Slices of x along axis; output shape x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis+1:]."""
    rank = jnp.ndim(x)
    axis, b = norm_axes(axis, rank)[0], static_int(batch_dims)
    _check_indices(indices, jnp.shape(x)[axis], validate_indices)
    return _batched(lambda p, i: jnp.take(p, i, axis=axis - b), b)(jnp.asarray(x), jnp.asarray(indices))


@op("gather_along_axis", static=("axis", "validate_indices"))
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    axis = norm_axes(axis, jnp.ndim(x))[0]
    _check_indices(indices, jnp.shape(x)[axis], validate_indices)
    return jnp.take_along_axis(jnp.asarray(x), jnp.asarray(indices), axis=axis)


@op("gather_nd", static=("batch_dims", "validate_indices"))
def gather_nd(x, indices, batch_dims=0, validate_indices=False):
    """x[indices[..., 0], ..., indices[..., k-1]] after batch_dims shared leading axes."""
    b = static_int(batch_dims)
    k = jnp.shape(indices)[-1]
    _check_indices(indices, jnp.shape(x)[b : b + k], validate_indices)
    take = lambda p, i: p[tuple(i[..., d] for d in range(k))]
    return _batched(take, b)(jnp.asarray(x), jnp.asarray(indices))


def _scatter(data, index, updates, mode, wrap: bool = True):
    """``data`` with ``updates`` combined in at ``data[index]`` by ``mode``; repeated indices accumulate.

    Out-of-bounds updates are dropped; negative indices wrap only when ``wrap``.
    """
    mode = static_str(mode)
    data, updates = jnp.asarray(data), jnp.asarray(updates)
    at = data.at[index]
    kw = dict(mode="drop", wrap_negative_indices=wrap)
    if mode == "update":
        return at.set(updates, **kw)
    if mode == "add":
        return at.add(updates, **kw)
    if mode == "sub":
        return at.add(-updates, **kw)
    if mode == "mul":
        return at.multiply(updates, **kw)
    if mode == "div":
        return at.divide(updates, **kw).astype(data.dtype)  # int data: truncated
    if mode == "max":
        return at.max(updates, **kw)
    if mode == "min":
        return at.min(updates, **kw)
    raise ValueError(f"unknown scatter mode {mode!r}")


def scatter(data, indices, updates, axis=0, mode="add", validate_indices=False, *, wrap=True):
    """1-D indices along axis; updates have shape data.shape[:axis] + [len(indices)] + data.shape[axis+1:]."""
    axis = norm_axes(axis, jnp.ndim(data))[0]
    _check_indices(indices, jnp.shape(data)[axis], validate_indices)
    return _scatter(data, (slice(None),) * axis + (jnp.asarray(indices),), updates, mode, wrap)


def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False, *, wrap=True):
    """updates[p] goes to data[p with p[axis] replaced by indices[p]]."""
    axis = norm_axes(axis, jnp.ndim(data))[0]
    _check_indices(indices, jnp.shape(data)[axis], validate_indices)
    grid = list(jnp.indices(jnp.shape(indices), sparse=True))
    grid[axis] = jnp.asarray(indices)
    return _scatter(data, tuple(grid), updates, mode, wrap)


def scatter_nd(data, indices, updates, mode="add", validate_indices=False, *, wrap=True):
    """updates[i] goes to data[indices[i]], with indices[i] addressing the leading indices.shape[-1] axes."""
    k = jnp.shape(indices)[-1]
    _check_indices(indices, jnp.shape(data)[:k], validate_indices)
    indices = jnp.asarray(indices)
    return _scatter(data, tuple(indices[..., d] for d in range(k)), updates, mode, wrap)


def _register_scatter(fn, static) -> None:
    """``fn`` as the scatter op of its name: negative indices wrap up to iOS16; from iOS17 (CoreML7)
    they are out of bounds and their updates dropped."""
    op(fn.__name__, static=static)(functools.partial(fn, wrap=True))
    op(fn.__name__, static=static, since="CoreML7")(functools.partial(fn, wrap=False))


_register_scatter(scatter, ("axis", "mode", "validate_indices"))
_register_scatter(scatter_along_axis, ("axis", "mode", "validate_indices"))
_register_scatter(scatter_nd, ("mode", "validate_indices"))
