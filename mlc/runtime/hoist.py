"""Weight-only computation done once per set of weights, not on every call.

A lowered Core ML program recomputes on every call whatever depends on its weights alone:
fp16 weights widened to fp32 (fp16 programs on CPU), constexpr dequantization (palettized,
affine-quantized, sparse weights), convolution kernels moved to the layout XLA's CPU kernels
read, folded scales. XLA cannot fold any of it because weights are arguments of the compiled
function (``params``), not constants; on a ResNet-18 that is most of a call's memory traffic.

``HoistedFunction(fn)`` is called like ``jax.jit(fn)``. For each input signature it traces
``fn(params, inputs)`` once and splits the program by partial evaluation (JAX's own
``partial_eval_jaxpr_nounits``, params known, inputs unknown) into

- *prepare*: ``params -> residuals``, everything that reads only weights, run once per params
  object: with numpy on the host when it is only layout and arithmetic (``mlc.runtime.host_jaxpr``;
  ``host_prepare=True``, what ``Model`` asks for on CPU), else jitted;
- *run*: ``(residuals, inputs) -> outputs``, jitted and run per prediction.

Residuals that are plain params are passed through, not copied. A function with nothing to
hoist, inputs that are not arrays, or residuals larger than ``max_residual_bytes`` run as one
plain ``jax.jit``; so does one whose weight-only part has effects (the host call that draws a
fresh random key must run on every call).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

import jax
import numpy as np

from mlc.runtime import host_jaxpr, limits


@dataclasses.dataclass
class _Split:
    prepare: Callable  # (*param leaves) -> computed residuals
    known: Any  # the weight-only jaxpr (a ClosedJaxpr) that ``prepare`` compiles
    run: Callable  # (*residuals, *input leaves) -> output leaves
    forwards: list[int | None]  # per residual: the param leaf it is, or None (computed)
    out_tree: Any


class HoistedFunction:
    """``fn(params, inputs)`` jitted, with its weight-only part computed once per params."""

    def __init__(self, fn: Callable, *, max_residual_bytes: int | None = None, compiler_options: dict | None = None, host_prepare: bool = False):
        self.fn = fn
        self.host_prepare = host_prepare  # weight-only parts made only of layout/arithmetic run in numpy
        self.max_residual_bytes = max_residual_bytes
        self.compiler_options = compiler_options
        self._plain = jax.jit(fn, compiler_options=compiler_options)
        self._splits: dict[Any, _Split | None] = {}
        self._prepared: dict[Any, tuple[Any, list]] = {}  # signature -> (params, residuals)
        self._lock = threading.Lock()
        self._nothing_to_hoist = False

    def __call__(self, params: dict, inputs: dict):
        if self._nothing_to_hoist:
            return self._plain(params, inputs)
        leaves, tree = jax.tree_util.tree_flatten(inputs)
        signature = _signature(tree, leaves)
        if signature is None:
            return self._plain(params, inputs)
        split = self._splits.get(signature, False)
        if split is False:
            split = self._split_for(signature, params, inputs)
        if split is None:
            return self._plain(params, inputs)
        residuals = self._residuals(signature, split, params)
        return jax.tree_util.tree_unflatten(split.out_tree, split.run(*residuals, *leaves))

    def compiled_signatures(self) -> int:
        """How many input signatures have been compiled (one per shape set: a run that pads its
        last batch should see 1)."""
        split = sum(1 for v in self._splits.values() if v is not None)
        return split + self._plain._cache_size()

    def hoisted(self, signature_inputs: dict) -> bool:
        """Whether calls with inputs shaped like ``signature_inputs`` run split (for tests)."""
        leaves, tree = jax.tree_util.tree_flatten(signature_inputs)
        return bool(self._splits.get(_signature(tree, leaves)))

    def parts_for(self, params: dict, inputs: dict) -> tuple[Callable, list | None, Any, list | None]:
        """What a call with ``inputs``' signature and ``params`` ran, after it ran (for
        ``mlc.runtime.trace_cache``): ``(run, residuals, out_tree, forwards)`` with
        ``run(*residuals, *input leaves)`` jitted, or ``(jit of fn, None, None, None)`` when
        such calls run as one plain jit."""
        leaves, tree = jax.tree_util.tree_flatten(inputs)
        signature = _signature(tree, leaves)
        split = self._splits.get(signature) if signature is not None else None
        prepared = self._prepared.get(signature) if split else None
        if not split or prepared is None or prepared[0] is not params:
            return self._plain, None, None, None
        return split.run, prepared[1], split.out_tree, split.forwards

    def _split_for(self, signature, params: dict, inputs: dict) -> _Split | None:
        with self._lock:
            if signature not in self._splits:
                split = split_weight_only(self.fn, params, inputs, self._limit(params), self.compiler_options)
                # A program with nothing weight-only at one input shape has none at others (what it
                # reads of its weights does not depend on input shapes): from now on, the fast path.
                self._nothing_to_hoist = split is None and not self._splits
                self._splits[signature] = split
            return self._splits[signature]

    def _limit(self, params: dict) -> int:
        if self.max_residual_bytes is not None:
            return self.max_residual_bytes
        return 4 * _bytes(jax.tree_util.tree_leaves(params)) + (256 << 20)

    def _residuals(self, signature, split: _Split, params: dict) -> list:
        cached = self._prepared.get(signature)
        if cached is not None and cached[0] is params:
            return cached[1]
        param_leaves = jax.tree_util.tree_leaves(params)
        computed = iter(self._prepare(split, param_leaves))
        residuals = [next(computed) if f is None else param_leaves[f] for f in split.forwards]
        self._prepared[signature] = (params, residuals)
        return residuals


    def _prepare(self, split: _Split, param_leaves: list) -> list:
        """The computed residuals: with numpy when the weight-only part is simple enough (no
        XLA compile on a cold start), else with the compiled ``prepare``."""
        if self.host_prepare and host_jaxpr.supported(split.known.jaxpr):
            values = host_jaxpr.evaluate(split.known.jaxpr, list(split.known.consts), [np.asarray(v) for v in param_leaves])
            devices = getattr(param_leaves[0], "devices", None) if param_leaves else None
            device = next(iter(devices())) if devices else None
            out = []
            for i, value in enumerate(values):  # one at a time: at most one host copy beside the residuals
                out.append(jax.device_put(host_aligned(value), device))
                values[i] = value = None
            return out
        return split.prepare(*param_leaves)


def _signature(tree, leaves) -> tuple | None:
    """The input signature (tree, shapes, dtypes); None when an input is not an array."""
    parts = []
    for leaf in leaves:
        if not isinstance(leaf, (np.ndarray, np.generic, jax.Array)):
            return None
        parts.append((leaf.shape, leaf.dtype))
    return tree, tuple(parts)


def split_weight_only(fn: Callable, params: dict, inputs: dict, max_residual_bytes: int, compiler_options: dict | None = None) -> _Split | None:
    """Split ``fn`` into prepare (weights only) and run parts, or None when not worth it."""
    from jax._src import core
    from jax._src.interpreters import partial_eval as pe

    param_leaves = jax.tree_util.tree_leaves(params)
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(params, inputs)
    limits.check_jaxpr(closed, "a value of the traced program")  # before XLA compiles or allocates it
    n_known, n_all = len(param_leaves), len(closed.jaxpr.invars)
    unknowns = [False] * n_known + [True] * (n_all - n_known)
    known, unknown, _, _ = pe.partial_eval_jaxpr_nounits(closed, unknowns, instantiate=True)
    if not known.jaxpr.eqns:
        return None  # nothing reads weights alone: one plain jit
    if known.effects:
        return None  # a host call (fresh random keys) must run on every call, not once
    position = {v: i for i, v in enumerate(known.jaxpr.invars)}
    forwards = [position.get(v) if isinstance(v, core.Var) else None for v in known.jaxpr.outvars]
    computed = [f is None for f in forwards]
    if _bytes(v.aval for v, c in zip(known.jaxpr.outvars, computed) if c) > max_residual_bytes:
        return None
    pruned, _ = pe.dce_jaxpr(known.jaxpr, computed, instantiate=True)
    known_part = core.ClosedJaxpr(pruned, known.consts)
    prepare = jax.jit(core.jaxpr_as_fun(known_part), compiler_options=compiler_options)
    run = jax.jit(core.jaxpr_as_fun(unknown), compiler_options=compiler_options)
    return _Split(prepare, known_part, run, forwards, jax.tree_util.tree_structure(out_shape))


def host_aligned(value: np.ndarray, alignment: int = 64) -> np.ndarray:
    """``value`` C-contiguous at an ``alignment``-byte boundary (copied there unless it is):
    XLA's CPU client then takes it as it is, where it would copy it and free the host array
    only later."""
    value = np.asarray(value)
    if value.flags.c_contiguous and value.ctypes.data % alignment == 0:
        return value
    buffer = np.empty(value.nbytes + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    out = buffer[start : start + value.nbytes].view(value.dtype).reshape(value.shape)
    np.copyto(out, value)
    return out


def _bytes(arrays) -> int:
    """Total size of arrays or abstract values (anything with ``shape`` and ``dtype``)."""
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in arrays)
