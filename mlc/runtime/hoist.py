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

Residuals that are plain params are passed through, not copied. Memory, in the order a first
call spends it: ``run`` is compiled before the residuals exist (from their shapes), and the
compiler's freed memory is handed back to the system before they are computed; a residual
that would only be a cheap expansion of smaller values (a mask or a bias broadcast over the
batch, under ``predict_batch``'s vmap) is not kept but recomputed in ``run`` from them;
residuals two functions compute alike (``predict`` and ``predict_batch``, several input
signatures) are computed and held once when they share a ``ResidualStore``; and the pages of a
memory-mapped weight (a read-only file mapping: an ML Program's blob, a ``.mlc`` section) that
only the weight-only part reads are dropped from the process once it has read them (the file
stays mapped: a later read, ``model.params`` or ``with_params``, pages them in again).

A function with nothing to
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
    keys: list | None = None  # per computed residual: what it computes (``_residual_keys``), for a ResidualStore
    compiled: bool = False  # whether ``run`` was compiled for its signature already


class ResidualStore:
    """Weight-only values computed from one params object, shared by several ``HoistedFunction``
    (a runner's ``predict`` and ``predict_batch``): a value that two of them compute alike (the
    same equations on the same weights: a transposed kernel, widened fp16) is computed and held
    once. Values of other params objects are dropped when one is stored."""

    def __init__(self):
        self._params = None
        self._values: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, params, key):
        with self._lock:
            return self._values.get(key) if params is self._params and key is not None else None

    def put(self, params, key, value) -> None:
        if key is None:
            return
        with self._lock:
            if params is not self._params:
                self._params, self._values = params, {}
            self._values[key] = value

    def nbytes(self) -> int:
        """The bytes of the values held (for measuring memory)."""
        return _bytes(self._values.values())


class HoistedFunction:
    """``fn(params, inputs)`` jitted, with its weight-only part computed once per params."""

    def __init__(self, fn: Callable, *, max_residual_bytes: int | None = None, compiler_options: dict | Callable | None = None, host_prepare: bool = False,
                 store: ResidualStore | None = None):
        self.fn = fn
        self.store = store  # residuals shared with other functions of the same params
        self.host_prepare = host_prepare  # weight-only parts made only of layout/arithmetic run in numpy
        self.max_residual_bytes = max_residual_bytes
        self.compiler_options = compiler_options
        # ``compiler_options``: a dict, or ``options(jaxpr)`` choosing them per program traced
        self._plain = jax.jit(fn, compiler_options=compiler_options(None) if callable(compiler_options) else compiler_options)
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
        if not split.compiled:
            self._compile_run(split, params, leaves)
        residuals = self._residuals(signature, split, params)
        return jax.tree_util.tree_unflatten(split.out_tree, split.run(*residuals, *leaves))

    def _compile_run(self, split: _Split, params: dict, leaves: list) -> None:
        """Compile ``run`` from the residuals' shapes, before they are computed, and give the
        compiler's freed memory back to the system: the compile's peak and the residuals' then
        do not add up. Only for params on one device (their sharding is then the residuals'
        too); otherwise ``run`` compiles at its first call, as any jit."""
        split.compiled = True
        param_leaves = jax.tree_util.tree_leaves(params)
        shardings = {getattr(v, "sharding", None) for v in param_leaves}
        sharding = shardings.pop() if len(shardings) == 1 else None
        if not isinstance(sharding, jax.sharding.SingleDeviceSharding):
            return
        avals = split.known.out_avals
        computed = iter(avals)
        residuals = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding) for a in (next(computed) if f is None else param_leaves[f] for f in split.forwards)]
        split.run.lower(*residuals, *leaves).compile()
        release_freed_memory()

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

    def leaf_call(self, params: dict, inputs: dict) -> tuple[tuple[str, ...], Callable] | None:
        """After a call with ``inputs``' signature and ``params`` ran: ``(names, call)``, where
        ``call(*arrays)`` takes the inputs' arrays in ``names`` order and returns what
        ``self(params, inputs)`` returns, without finding the signature and residuals again
        (``mlc.call_plan``). None for inputs that are not a flat dict of arrays, or a signature
        not run yet with these params."""
        names = flat_dict_order(inputs)
        if names is None:
            return None
        leaves, tree = jax.tree_util.tree_flatten(inputs)
        signature = _signature(tree, leaves)
        split = None if self._nothing_to_hoist else self._splits.get(signature, False)
        if split is False:
            return None
        if split is None:
            plain = self._plain
            return names, lambda *arrays: plain(params, dict(zip(names, arrays)))
        prepared = self._prepared.get(signature)
        if prepared is None or prepared[0] is not params:
            return None
        run, residuals, out_tree = split.run, prepared[1], split.out_tree
        return names, lambda *arrays: jax.tree_util.tree_unflatten(out_tree, run(*residuals, *arrays))

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
        keys = split.keys or [None] * len(split.known.jaxpr.outvars)
        values = [self.store.get(params, k) if self.store is not None else None for k in keys]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            for i, value in zip(missing, self._prepare(split, param_leaves, missing)):
                values[i] = value
                if self.store is not None:
                    self.store.put(params, keys[i], value)
            release_freed_memory()
        computed = iter(values)
        residuals = [next(computed) if f is None else param_leaves[f] for f in split.forwards]
        self._prepared[signature] = (params, residuals)
        return residuals

    def _prepare(self, split: _Split, param_leaves: list, wanted: list[int]) -> list:
        """The computed residuals at positions ``wanted``: with numpy when the weight-only part
        is simple enough (no XLA compile on a cold start), else with the compiled ``prepare``."""
        known = split.known
        if self.host_prepare and host_jaxpr.supported(known.jaxpr):
            jaxpr = known.jaxpr
            if len(wanted) < len(jaxpr.outvars):
                from jax._src.interpreters import partial_eval as pe

                used = set(wanted)
                jaxpr, _ = pe.dce_jaxpr(jaxpr, [i in used for i in range(len(jaxpr.outvars))], instantiate=True)
            forwarded = {f for f in split.forwards if f is not None}
            args = [np.asarray(v) for v in param_leaves]
            release = _PageRelease([None if i in forwarded else a for i, a in enumerate(args)])
            values = host_jaxpr.evaluate(jaxpr, list(known.consts), args, release=release)
            del args
            devices = getattr(param_leaves[0], "devices", None) if param_leaves else None
            device = next(iter(devices())) if devices else None
            out = []
            for i, value in enumerate(values):  # one at a time: at most one host copy beside the residuals
                out.append(jax.device_put(host_aligned(value), device))
                values[i] = value = None
            return out
        everything = split.prepare(*param_leaves)
        return [everything[i] for i in wanted]


def flat_dict_order(inputs: Any) -> tuple[str, ...] | None:
    """The names of a dict of arrays in the order JAX flattens it (sorted), or None when
    ``inputs`` is not such a dict (a nested tree, a value that is not an array)."""
    if type(inputs) is not dict or not all(isinstance(v, (np.ndarray, jax.Array)) for v in inputs.values()):
        return None
    try:
        return tuple(sorted(inputs))
    except TypeError:  # keys that do not sort: JAX keeps them in insertion order
        return None


def _signature(tree, leaves) -> tuple | None:
    """The input signature (tree, shapes, dtypes); None when an input is not an array."""
    parts = []
    for leaf in leaves:
        if not isinstance(leaf, (np.ndarray, np.generic, jax.Array)):
            return None
        parts.append((leaf.shape, leaf.dtype))
    return tree, tuple(parts)


def split_weight_only(fn: Callable, params: dict, inputs: dict, max_residual_bytes: int, compiler_options: dict | Callable | None = None) -> _Split | None:
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
    known, unknown = _recompute_expansions(known, unknown)
    position = {v: i for i, v in enumerate(known.jaxpr.invars)}
    forwards = [position.get(v) if isinstance(v, core.Var) else None for v in known.jaxpr.outvars]
    computed = [f is None for f in forwards]
    if not any(computed):
        return None  # the weights as they are: one plain jit
    if _bytes(v.aval for v, c in zip(known.jaxpr.outvars, computed) if c) > max_residual_bytes:
        return None
    pruned, _ = pe.dce_jaxpr(known.jaxpr, computed, instantiate=True)
    known_part = core.ClosedJaxpr(pruned, known.consts)
    if callable(compiler_options):  # options chosen for the program (xla_options.compiler_options)
        prepare_options, compiler_options = compiler_options(known_part), compiler_options(unknown)
    else:
        prepare_options = compiler_options
    prepare = jax.jit(core.jaxpr_as_fun(known_part), compiler_options=prepare_options)
    run = jax.jit(core.jaxpr_as_fun(unknown), compiler_options=compiler_options)
    return _Split(prepare, known_part, run, forwards, jax.tree_util.tree_structure(out_shape), _residual_keys(known_part))


# A weight-only value at least this large, and more than this many times the size of what it is
# computed from, is recomputed per call rather than held: broadcasting is cheap, holding a
# causal mask broadcast over a batch of 32 for every layer of a GPT is not (120 MiB).
EXPANSION_MIN_BYTES = 1 << 20
EXPANSION_RATIO = 4  # above Winograd's transformed weights (16/9 of the kernel) and fp16 widening (2x)


def _recompute_expansions(known, unknown):
    """``(known, unknown)`` with each residual that an equation of ``known`` expands from much
    smaller values (``EXPANSION_*``) recomputed at the start of ``unknown`` instead, from those
    values (which become residuals: weights, small computed values, or constants)."""
    from jax._src import core

    kj, uj = known.jaxpr, unknown.jaxpr
    n_res = len(kj.outvars)
    producer = {v: e for e in kj.eqns for v in e.outvars}

    sources: dict = {}  # known variable -> the bytes it is expanded from (itself if no expansion)

    def source_bytes(v) -> int:
        if v not in sources:
            sources[v] = _bytes([v.aval])  # (for a cycle-free jaxpr, only a placeholder)
            e = expansion(v)
            sources[v] = _source_of(e) if e is not None else _bytes([v.aval])
        return sources[v]

    def _source_of(e) -> int:
        return sum(source_bytes(x) for x in e.invars if isinstance(x, core.Var))

    def expansion(v):
        """The equation computing ``v`` if ``v`` is a large expansion of what it is computed
        from (counting an input that is an expansion itself by what that one expands)."""
        e = producer.get(v) if isinstance(v, core.Var) else None
        if e is None or e.effects:
            return None
        out = _bytes([v.aval])
        return e if out >= EXPANSION_MIN_BYTES and out > EXPANSION_RATIO * _source_of(e) else None

    if not any(expansion(v) for v in kj.outvars):
        return known, unknown
    res_known: list = []  # the new residuals: known-side atoms
    res_run: list = []  # and the run-side variables they arrive as
    on_run: dict = {}  # known variable -> the run-side variable holding its value
    moved = []
    for kv, rv in zip(kj.outvars, uj.invars[:n_res]):
        if expansion(kv) is not None:
            moved.append((kv, rv))
        else:
            res_known.append(kv)
            res_run.append(rv)
            if isinstance(kv, core.Var):
                on_run.setdefault(kv, rv)
    prologue = []

    def provide(kv):
        if not isinstance(kv, core.Var):
            return kv  # a literal
        if kv in on_run:
            return on_run[kv]
        e = expansion(kv)
        if e is None:  # a new residual
            rv = on_run[kv] = core.Var(kv.aval)
            res_known.append(kv)
            res_run.append(rv)
            return rv
        ins = [provide(x) for x in e.invars]
        outs = []
        for o in e.outvars:
            if isinstance(o, core.DropVar):
                outs.append(o)
            else:
                outs.append(core.Var(o.aval))
                on_run[o] = outs[-1]
        prologue.append(e.replace(invars=ins, outvars=outs))
        return on_run[kv]

    subst = {rv: provide(kv) for kv, rv in moved}

    def sub(atoms):
        return [subst.get(a, a) if isinstance(a, core.Var) else a for a in atoms]

    eqns = prologue + [e.replace(invars=sub(e.invars)) for e in uj.eqns]
    new_unknown = core.ClosedJaxpr(
        core.Jaxpr(uj.constvars, res_run + list(uj.invars[n_res:]), sub(uj.outvars), eqns, uj.effects), unknown.consts
    )
    new_known = core.ClosedJaxpr(core.Jaxpr(kj.constvars, kj.invars, res_known, kj.eqns, kj.effects), known.consts)
    return new_known, new_unknown


def _residual_keys(known) -> list:
    """Per output of ``known`` (a closed weight-only jaxpr): a key naming what it computes, equal
    for two outputs that compute the same thing from the same weights (the text of the
    equations it needs, the positions of the weights they read, and the constants: small ones
    by content, others by identity). Two functions of one runner share a value by this key."""
    import hashlib

    from jax._src.interpreters import partial_eval as pe

    jaxpr = pe.convert_constvars_jaxpr(known.jaxpr)  # constants first among the inputs
    consts = list(known.consts)
    const_keys = []
    for c in consts:
        a = np.asarray(c)
        small = a.nbytes <= 1 << 20
        const_keys.append((a.dtype.str, a.shape, hashlib.sha256(a.tobytes()).hexdigest()) if small else ("id", id(c)))
    keys = []
    for i in range(len(jaxpr.outvars)):
        try:
            one, used = pe.dce_jaxpr(jaxpr, [j == i for j in range(len(jaxpr.outvars))])
            reads = tuple(const_keys[j] if j < len(consts) else j - len(consts) for j, u in enumerate(used) if u)
            if any(isinstance(k, tuple) and k[0] == "id" for k in reads):
                keys.append(None)  # a large constant: not shared (its identity may be reused)
                continue
            keys.append((str(one), reads))
        except Exception:  # noqa: BLE001 - a jaxpr that does not print: computed, not shared
            keys.append(None)
    return keys


def release_freed_memory() -> None:
    """Hand the memory the C allocator holds free back to the system (glibc's ``malloc_trim``):
    XLA's compiler and a weight-only part's temporaries free hundreds of MiB that glibc keeps
    otherwise, and the next allocations (the residuals, a batch's buffers) would add to it."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_TRIM: list = []


def _malloc_trim():
    if not _TRIM:
        fn = None
        try:
            import ctypes
            import sys

            if sys.platform.startswith("linux"):
                fn = ctypes.CDLL(None).malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _TRIM.append(fn)
    return _TRIM[0]


class _PageRelease:
    """Called with an input's position when the weight-only part has read it for the last time:
    drops the pages of that array from the process when it lies in a read-only file mapping (a
    memory-mapped weight; the file is re-read on a later access), else does nothing. Linux only."""

    def __init__(self, arrays: list):
        self.arrays = arrays  # per input position: a numpy array, or None (keep)
        self._maps = None

    def __call__(self, position: int) -> None:
        if position >= len(self.arrays):
            return
        array, self.arrays[position] = self.arrays[position], None
        if array is None or array.nbytes < 1 << 16:
            return
        try:
            start, end = array.ctypes.data, array.ctypes.data + array.nbytes
            if not self._read_only_file(start, end):
                return
            drop_file_pages(start, end)
        except Exception:  # noqa: BLE001 - only memory is at stake
            return

    def _read_only_file(self, start: int, end: int) -> bool:
        if self._maps is None:
            self._maps = read_only_file_mappings()
        return any(lo <= start and end <= hi for lo, hi in self._maps)


def read_only_file_mappings() -> list[tuple[int, int]]:
    """``(start, end)`` of this process's mappings of a file that are neither writable nor
    copy-on-write written (``r--s``/``r--p`` with a path), from ``/proc/self/maps``; [] elsewhere."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) < 6 or not parts[5].strip().startswith("/") or parts[1][:2] != "r-":
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    except OSError:
        return []
    return out


def drop_file_pages(start: int, end: int) -> None:
    """``madvise(MADV_DONTNEED)`` over the whole pages inside ``[start, end)`` of a read-only file
    mapping: they leave the process's resident set and are read from the file again if used."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # MADV_DONTNEED


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
    """Total size of arrays or abstract values (anything with ``shape`` and ``dtype``; JAX's
    extended dtypes, such as a typed PRNG key's, by their own ``itemsize``)."""
    return sum(int(np.prod(a.shape)) * _itemsize(a.dtype) for a in arrays)


def _itemsize(dtype) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # an extended dtype (key<fry>): not a numpy dtype
        return int(dtype.itemsize)
