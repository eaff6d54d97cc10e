"""Resource limits: what a model file or an input may make mlc allocate.

A downloaded model is untrusted: a declared shape of ``[100000, 100000, 100000]``, a
``fill`` to that shape, or an input of that size would exhaust memory before anything
fails. mlc refuses any single tensor larger than ``max_tensor_bytes()`` *before* allocating
it, with an error that names the file, the field and the limit.

The limit is 4 GiB per tensor unless ``$MLC_MAX_TENSOR_BYTES`` or
``mlc.load(..., max_tensor_bytes=)`` says otherwise (a byte count; ``8G``, ``512M``,
``64K`` accepted). It applies to declared shapes while a model is parsed, to tensors an op
builds from constants while the program is traced, to every intermediate value of the traced
program before XLA compiles it, and to inputs before they are converted.

Nesting (blocks inside blocks, pipelines inside pipelines) is limited to ``MAX_NESTING``
levels, far beyond any real model and far below Python's recursion limit. A declared shape has
at most ``MAX_RANK`` dimensions, the most a numpy array can have.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from typing import Iterable, Iterator

import numpy as np

from mlc._errors import MLCParametersError

ENV = "MLC_MAX_TENSOR_BYTES"
DEFAULT_MAX_TENSOR_BYTES = 4 << 30
MAX_NESTING = 64
MAX_RANK = 64  # numpy's NPY_MAXDIMS: an array of more dimensions cannot be made

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("mlc_max_tensor_bytes", default=None)


def parse_bytes(value: int | str, what: str = ENV) -> int:
    """A positive byte count from an int or a string like ``"8G"`` / ``"512M"`` / ``"4096"``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    elif isinstance(value, str):
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        suffix = text[-1:] if text[-1:] in _SUFFIXES and text[-1:] else ""
        number = text[: len(text) - len(suffix)]
        try:
            n = int(float(number) * _SUFFIXES[suffix]) if number else -1
        except ValueError:
            n = -1
    else:
        n = -1
    if n <= 0:
        raise MLCParametersError(f"{what}: {value!r} is not a positive byte count (e.g. 4294967296, 8G, 512M)")
    return n


def max_tensor_bytes() -> int:
    """The largest tensor mlc will allocate, in bytes (see the module docstring)."""
    override = _override.get()
    if override is not None:
        return override
    env = os.environ.get(ENV)
    return parse_bytes(env) if env else DEFAULT_MAX_TENSOR_BYTES


def resolve(value: int | str | None) -> int | None:
    """A ``max_tensor_bytes=`` argument checked, or None to follow the environment."""
    return None if value is None else parse_bytes(value, "max_tensor_bytes")


@contextlib.contextmanager
def tensor_limit(limit: int | None) -> Iterator[None]:
    """Within the block, ``max_tensor_bytes()`` is ``limit`` (None: unchanged)."""
    if limit is None:
        yield
        return
    token = _override.set(limit)
    try:
        yield
    finally:
        _override.reset(token)


def tensor_bytes(shape: Iterable[int], itemsize: int) -> int:
    """Bytes of a tensor of ``shape`` (exact Python integers: no overflow)."""
    return math.prod(int(d) for d in shape) * int(itemsize)


class TensorLimitError(MLCParametersError):
    """A tensor the model asks for is larger than ``max_tensor_bytes()`` (or has a negative size)."""


def check_tensor(shape: Iterable[int | None], itemsize: int, what: str, error: type = TensorLimitError) -> None:
    """Refuse a negative dimension, more than ``MAX_RANK`` dimensions, or a tensor larger than the
    limit, before it is allocated.

    Unknown dimensions (None) are skipped: they are checked when they become known.
    """
    dims = tuple(shape)
    if len(dims) > MAX_RANK:
        raise error(f"{what}: a shape of rank {len(dims)}; no array has more than {MAX_RANK} dimensions")
    known = [int(d) for d in dims if d is not None]
    if any(d < 0 for d in known):
        raise error(f"{what}: shape {_show(dims)} has a negative dimension")
    size = tensor_bytes(known, itemsize)
    limit = max_tensor_bytes()
    if size > limit:
        raise error(
            f"{what}: shape {_show(dims)} would take {_human(size)}, more than the limit of {_human(limit)} per tensor "
            f"(raise it with mlc.load(..., max_tensor_bytes=) or ${ENV} if the model is trusted)"
        )


def check_range(start: float, end: float, step: float, itemsize: int) -> int:
    """The length of ``arange(start, end, step)`` (``step`` non-zero), refused when it is not
    finite or the result would exceed the limit."""
    count = (end - start) / step
    what = f"the range [{start}, {end}) by {step}"
    if not math.isfinite(count):
        raise TensorLimitError(f"{what} has no finite length")
    n = max(math.ceil(count), 0)
    check_tensor((n,), itemsize, what)
    return n


def _show(dims: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _human(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit} ({n} bytes)"
    return f"{n} bytes"


def check_abstract(compute, what: str, *, cache: dict | None = None, key=None) -> None:
    """Refuse, before running it, a computation (a thunk) whose outputs would exceed the limit.

    Ops evaluated on concrete values (constant folding at trace time, or a model running op by
    op) allocate their outputs at once; their sizes can come from values in the file (a
    ``fill`` whose shape constant says 200000 x 200000), which no declared type bounds. The
    thunk is first traced abstractly (``jax.eval_shape``: shapes and dtypes, no data), with op
    observers and run-time check collection suspended (the trace is not a run). A computation
    that cannot be traced abstractly (it needs a concrete value) is not checked here; the traced
    program's check before compiling (``check_jaxpr``) still applies to it.

    ``cache``/``key``: the output shapes found for ``key`` (an op and its ``signature``) are
    kept in ``cache``, so a model running op by op traces each op once per input signature,
    not once per call. A ``key`` of None is not cached.
    """
    shapes = cache.get(key) if cache is not None and key is not None else None
    if shapes is None:
        shapes = _abstract_shapes(compute, what)
        if cache is not None and key is not None:
            cache[key] = shapes
    for shape, itemsize in shapes:
        check_tensor(shape, itemsize, what)


def _abstract_shapes(compute, what: str) -> tuple:
    """``(shape, itemsize)`` of each output of ``compute``, traced abstractly; () when it cannot be."""
    import jax

    from mlc.runtime import observe
    from mlc.runtime import checks

    try:
        with observe.observing(None), checks.not_collecting():
            shapes = jax.eval_shape(compute)
    except TensorLimitError as e:  # an op's own check, on a size it computes before allocating
        raise TensorLimitError(f"{what}: {e.message}") from None
    except Exception:  # noqa: BLE001 - whatever it is, the real evaluation raises it properly
        return ()
    leaves = ((getattr(leaf, "shape", None), getattr(leaf, "dtype", None)) for leaf in jax.tree_util.tree_leaves(shapes))
    return tuple((tuple(shape), _itemsize(dtype)) for shape, dtype in leaves if shape is not None and dtype is not None)


def signature(value, static: bool):
    """What an op's output shapes can depend on, hashable: an array's shape and dtype, and the
    value of an input the op declares static (a shape, a count) or of a small numpy array (a
    folded shape vector, which numpy code paths may read); None when ``value`` holds something
    else (a list or state object), which is then not cached."""
    import jax

    if isinstance(value, (list, tuple)):
        parts = tuple(signature(v, static) for v in value)
        return None if any(p is None for p in parts) else (type(value).__name__, parts)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not isinstance(value, jax.core.Tracer):
        small_numpy = isinstance(value, (np.ndarray, np.generic)) and value.size <= 64
        data = np.asarray(value).tobytes() if static or small_numpy else None
        return (tuple(value.shape), str(value.dtype), data)
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    return None


def check_jaxpr(closed_jaxpr, what: str) -> None:
    """Refuse a traced program (a ``ClosedJaxpr``) any of whose values, inner jaxprs included,
    exceeds the limit: before XLA compiles it, and so before anything is allocated."""
    for jaxpr in _all_jaxprs(closed_jaxpr.jaxpr):
        for var in [*jaxpr.invars, *(v for eqn in jaxpr.eqns for v in eqn.outvars)]:
            aval = getattr(var, "aval", None)
            shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
            if shape is not None and dtype is not None and all(isinstance(d, int) for d in shape):
                check_tensor(shape, _itemsize(dtype), what)


def _itemsize(dtype) -> int:
    """Bytes per element of a numpy dtype or of JAX's extended dtypes (random keys)."""
    itemsize = getattr(dtype, "itemsize", None)
    return int(itemsize) if itemsize is not None else np.dtype(dtype).itemsize


def _all_jaxprs(jaxpr):
    from jax._src import core

    yield jaxpr
    for eqn in jaxpr.eqns:
        for sub in core.jaxprs_in_params(eqn.params):
            yield from _all_jaxprs(sub)
