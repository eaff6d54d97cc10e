"""``Runner``: a ``Program`` placed on a device, jitted per input signature, and called.

The runner owns everything about running a program that is not Core ML's API:

* **device placement**: the params on the device once; numpy inputs go straight into the
  jitted call on JAX's default device (its own transfer is the cheapest), else one transfer;
* **weight-only hoisting** (``mlc.runtime.hoist``): what depends on the weights alone is
  computed once per params, not per call;
* **one compile per input signature**, for ``call`` (jit) and ``call_batch`` (vmap + jit);
  on CPU ``call_batch`` runs parts of the batch at once, one thread each (``batch_split``),
  each part in chunks of a few examples where its activations would leave the cache
  (``batch_chunks``);
* **the op-by-op fallback**: a program whose output shapes depend on data runs node by node
  (``Program.eager``, or a ``DataDependentShapeError`` found while tracing, which the runner
  remembers: its own state, the program stays as built); so does a debugging run
  (``MLC_DEBUG`` / ``MLC_LIMIT``);
* **64-bit mode** for programs that compute in double (classic models);
* **the target platform** (``mlc.runtime.target``): the program is traced knowing its device's
  platform, so that kernels pick their algorithm for it (Winograd convolutions on CPU only);
* **run-time checks** (``mlc.runtime.checks``): the flags a program returns raise here.

A runner is immutable from the outside: ``with_params`` returns a new one.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import numpy as np

from mlc._errors import DataDependentShapeError, MLCUnsupportedError
from mlc.program.program import Program
from mlc.runtime import batch_chunks, batch_split, checks, dtypes, target, xla_options
from mlc.runtime.hoist import HoistedFunction, ResidualStore, host_aligned
from mlc.runtime.interpreter import debugging


class Runner:
    """Runs ``program`` on ``device``. ``fp16_as_fp32``: fp16 programs compute in fp32."""

    def __init__(self, program: Program, *, device: jax.Device, fp16_as_fp32: bool, name: str):
        self.program = program
        self.device = device
        self.fp16_as_fp32 = fp16_as_fp32
        self.name = name
        self._default_device = device == jax.devices()[0]
        with self.x64():
            # On CPU the device takes the memory-mapped weights without copying them (their data
            # is 64-byte aligned): loading reads no weight. fp16 weights stay fp16 until
            # ``params`` is read; the program widens them itself, once (mlc.runtime.hoist).
            self._params = jax.device_put(self._device_ready(dict(program.params)), device)
        self._eager = program.eager
        self._jitted: HoistedFunction | None = None
        self._batched: HoistedFunction | None = None
        self._input_targets: dict[str, Any] = {}  # input name -> the numpy dtype the program takes (None: as given)
        self._store = ResidualStore()  # call and predict_batch share what they compute alike
        self._splitter = batch_split.BatchSplitter()  # predict_batch's parts on CPU

    def _device_ready(self, params: dict) -> dict:
        """``params`` with each numpy array a CPU device would copy (a front end's own array at
        a 16-byte boundary, a NeuralNetwork's weights) moved to a 64-byte boundary, one at a
        time: the device then holds that memory, not a second copy beside it. Memory-mapped
        weights are aligned already and stay as they are."""
        if self.device.platform == "cpu":
            for key, value in params.items():
                if isinstance(value, np.ndarray) and value.nbytes >= 1 << 16:
                    params[key] = host_aligned(value)
        return params

    # -- params ------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The weights by name as the program computes with them (an fp16 weight as fp32 where
        the program computes fp16 in fp32). The first read widens weights held as stored."""
        if any(self.public_dtype(v) != v.dtype for v in self._params.values()):
            with self.x64():
                self._params = {k: v.astype(self.public_dtype(v)) for k, v in self._params.items()}
        return self._params

    @property
    def held_params(self) -> dict:
        """The weights as the device holds them now (fp16 weights as stored until ``params``
        is first read): for measuring memory, not for computing."""
        return dict(self._params)

    def public_dtype(self, value) -> np.dtype:
        """The dtype ``params`` gives ``value`` (a param as held): fp16 as fp32 when computed so."""
        return np.dtype(np.float32) if self.fp16_as_fp32 and value.dtype == np.float16 else np.dtype(value.dtype)

    def with_params(self, new: dict) -> "Runner":
        """A runner of the same program computing with ``new`` (some or all params by key, as
        ``params`` gives them, checked by the caller) and the others as held; its compiled
        functions start afresh, since their weight-only parts came from the old params."""
        copy = object.__new__(Runner)
        copy.__dict__.update(self.__dict__)
        with self.x64():
            copy._params = {**self._params, **jax.device_put(new, self.device)}
        copy._jitted = copy._batched = None
        copy._store = ResidualStore()
        return copy

    # -- modes -------------------------------------------------------------------------------
    def x64(self):
        """Programs that compute in double (classic models, as Core ML does): JAX's 64-bit mode
        while they trace and run; a no-op context for the others."""
        return jax.enable_x64(True) if self.program.x64 else contextlib.nullcontext()

    @property
    def eager(self) -> bool:
        """Whether the program runs node by node: built so, or found so while tracing."""
        return self._eager

    # -- inputs ------------------------------------------------------------------------------
    def program_input(self, name: str, arr: Any) -> Any:
        """A host input as the numpy dtype the program computes it in (still on the host)."""
        if not isinstance(arr, (np.ndarray, np.generic)):
            return arr
        target = self._input_targets.get(name, False)
        if target is False:
            target = self._input_targets[name] = self._program_dtype(name)
        return arr if target is None else np.asarray(arr).astype(target, copy=False)

    def _program_dtype(self, name: str) -> np.dtype | None:
        mil = self.program.interface.input_dtypes.get(name)
        if mil is None:
            return None
        if self.program.x64 and mil in ("fp64", "int64"):
            return dtypes.NUMPY_DTYPES[mil]
        with dtypes.precision(self.fp16_as_fp32):
            return dtypes.compute_dtype(mil)

    def on_device(self, inputs: dict) -> dict:
        """Array inputs for the device. On JAX's default device numpy arrays go straight into
        the jitted call (its own transfer is the cheapest: an explicit ``device_put`` costs
        more than a small model's whole run); elsewhere, one transfer."""
        if self._default_device:
            return inputs
        arrays = {n: v for n, v in inputs.items() if isinstance(v, np.ndarray)}
        if arrays:
            with self.x64():
                inputs = {**inputs, **jax.device_put(arrays, self.device)}
        return inputs

    def state_inputs(self, states: dict[str, np.ndarray]) -> dict:
        """A state's arrays as program inputs: in the compute dtype, on the device."""
        with dtypes.precision(self.fp16_as_fp32):
            return {n: jax.device_put(v.astype(dtypes.compute_array_dtype(v.dtype)), self.device) for n, v in states.items()}

    # -- calls -------------------------------------------------------------------------------
    def call(self, inputs: dict) -> dict:
        """One call on program-level inputs: jitted, or node by node for data-dependent shapes
        and debugging. Run-time checks the program asserted raise here."""
        with self.x64():
            raw = self._call(inputs)
        checks.raise_failed(raw.pop(checks.CHECKS, {}))
        return raw

    def _call(self, inputs: dict) -> dict:
        fn = self.program.fn
        if self._eager or debugging():
            with target.lowering_for(self.device.platform):
                return fn(self._params, inputs)
        if self._jitted is None:
            self._jitted = self._hoisted(fn)
        try:
            return self._jitted(self._params, inputs)
        except DataDependentShapeError:
            self._eager = True  # found while tracing: this program runs node by node from now on
            with target.lowering_for(self.device.platform):
                return fn(self._params, inputs)

    def prepared_call(self, inputs: dict) -> tuple[tuple[str, ...], Any, dict] | None:
        """After ``call(inputs)`` ran jitted: ``(names, call, params)``, where ``call(*arrays)`` is
        ``call`` for inputs of the same signature given as arrays in ``names`` order, without
        finding the compiled function and the weight-only results again (``mlc.call_plan``).
        None where a call needs more: node by node, another device than JAX's default, inputs
        not a flat dict of arrays. ``params``: the weights ``call`` computes with; the caller checks
        ``holds(params)`` and the debug switches before each call."""
        if self._eager or self._jitted is None:
            return None
        return self._prepared(self._jitted, inputs)

    def prepared_call_batch(self, inputs: dict) -> tuple[tuple[str, ...], Any, dict] | None:
        """``prepared_call`` for ``call_batch``: after ``call_batch(inputs)`` ran, where batches of
        that size run as one call (not split over threads, ``batch_split``); run-time checks
        raise in ``call``. The caller also checks that ``batch_split.SPLIT_VARIABLE`` is as it
        was."""
        if self._eager or self._batched is None:
            return None
        parts = batch_split.parts_for(batch_split.batch_size(inputs) or 1, self.device.platform)
        if not self._splitter.runs_whole(inputs, parts, key=id(self._params)):
            return None
        return self._prepared(self._batched, inputs)

    def _prepared(self, compiled, inputs: dict) -> tuple[tuple[str, ...], Any, dict] | None:
        """``compiled``'s leaf call for ``inputs`` wrapped as ``prepared_call`` returns it."""
        if not self._default_device:
            return None
        found = compiled.leaf_call(self._params, inputs)
        if found is None:
            return None
        names, run = found
        params = self._params

        def call(*arrays):
            with self.x64():
                raw = run(*arrays)
            flags = raw.pop(checks.CHECKS, None) if isinstance(raw, dict) else None
            if flags:
                checks.raise_failed(flags)
            return raw

        return names, call, params

    def holds(self, params: dict) -> bool:
        """Whether this runner still computes with ``params``, the object ``prepared_call``
        returned (reading ``params`` replaces weights held as fp16 by their widened copies)."""
        return params is self._params

    def call_batch(self, inputs: dict) -> dict:
        """One call on inputs with a leading batch axis (vmapped, one compile per signature).
        Run-time check flags stay in the result (``checks.CHECKS``) for the caller to raise."""
        batched = self._compiled_batched()
        parts = batch_split.parts_for(batch_split.batch_size(inputs) or 1, self.device.platform)
        params = self._params
        with self.x64():
            return self._splitter(lambda part: batched(params, part), inputs, parts, key=id(params), enter=self.x64, force=batch_split.forced())

    def _compiled_batched(self) -> HoistedFunction:
        program = self.program
        if program.interface.states:
            raise MLCUnsupportedError(f"{self.name}: predict_batch does not take a state; call predict per example")
        if self._eager:
            raise MLCUnsupportedError(f"{self.name}: predict_batch cannot vmap a model whose output shapes depend on data; use predict")
        if self._batched is None:
            self._batched = self._hoisted(program.batched or batch_chunks.vmapped(program.fn), batched=True)
        return self._batched

    def _hoisted(self, fn, batched: bool = False) -> HoistedFunction:
        """``fn`` jitted for the device, its weight-only part computed once (``mlc.runtime.hoist``).
        ``batched``: ``fn`` vmaps one example's program over the inputs' leading axis."""
        cpu = self.device.platform == "cpu"
        hoisted = HoistedFunction(self._for_device(fn, batched), compiler_options=functools.partial(xla_options.compiler_options, self.device), host_prepare=cpu,
                                  store=self._store)
        if self._trace_cache is None:
            return hoisted
        return self._trace_cache.wrap(hoisted, params=self._trace_params, kind="batch" if batched else "call", device=self.device)

    _trace_cache = None  # mlc.runtime.trace_cache.ModelCache, set by use_trace_cache

    def use_trace_cache(self, cache) -> None:
        """Look up what tracing produces in ``cache`` (``mlc.runtime.trace_cache``) before
        tracing, and store it there after: while this runner computes with the weights it holds
        now (a ``with_params`` copy, or ``params`` widening fp16 weights, traces as without)."""
        self._trace_cache, self._trace_params = cache, self._params

    def _for_device(self, fn, batched: bool = False):
        """``fn`` traced for this runner's platform (``mlc.runtime.target``), and for ``batched``
        the batch it vmaps over (the inputs' leading axis), so that kernels choose their
        algorithm for the data one call really computes. A new function per call: JAX caches
        traces by function, and another runner of the same program may trace it for another
        platform."""
        platform = self.device.platform

        @functools.wraps(fn)
        def traced_for_device(params, inputs):
            leaves = jax.tree_util.tree_leaves(inputs) if batched else []
            batch = leaves[0].shape[0] if leaves and getattr(leaves[0], "ndim", 0) else 1
            with target.lowering_for(platform, vmapped_batch=batch):
                return fn(params, inputs)

        return traced_for_device

    def compiled_signatures(self) -> int:
        """How many input signatures ``call`` has compiled."""
        return 0 if self._jitted is None else self._jitted.compiled_signatures()

    def hoisted_for(self, inputs: dict) -> bool:
        """Whether ``call`` computes a weight-only part once for ``inputs``' signature."""
        return self._jitted is not None and self._jitted.hoisted(inputs)

    # -- the pure function -------------------------------------------------------------------
    def pure_function(self):
        """``(fn, params)``: the program's function without run-time check flags (a pure
        function cannot raise on them), in 64-bit mode for a program computing in double,
        traced for the runner's platform (its kernels chosen for this device)."""
        fn = self._for_device(_without_checks(self.program.fn))
        return (_in_x64(fn) if self.program.x64 else fn), self.params


def _without_checks(fn):
    """``fn`` without the run-time check flags in its outputs."""

    @functools.wraps(fn)
    def pure(params, inputs):
        out = fn(params, inputs)
        if isinstance(out, dict) and checks.CHECKS in out:
            out = {k: v for k, v in out.items() if k != checks.CHECKS}
        return out

    return pure


def _in_x64(fn):
    """``fn`` traced and run in JAX's 64-bit mode (the pure function of a classic model)."""

    @functools.wraps(fn)
    def wide(params, inputs):
        with jax.enable_x64(True):
            return fn(params, inputs)

    return wide
