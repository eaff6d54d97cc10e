"""``Model``: a loaded Core ML model with coremltools' ``MLModel`` API, run through XLA."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import numpy as np

from mlc import compilation_cache, limits
from mlc import features as F
from mlc import xla_options
from mlc._errors import MLCFeatureTypeError, MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.classification import Classification
from mlc.executable import Executable
from mlc.format.description import check_description
from mlc.format.mlc_file import is_mlc_file
from mlc.format.spec import LoadedSpec, load_spec
from mlc.hoist import HoistedFunction, host_aligned
from mlc.mil import checks, dtypes
from mlc.mil.lower import STATES, DataDependentShapeError, debugging

_PRECISIONS = ("auto", "float32", "float16")


def resolve_device(device: Any) -> jax.Device:
    """``None`` (JAX's default), ``"cpu"``/``"gpu"``/``"tpu"`` or a ``jax.Device``."""
    if device is None:
        return jax.devices()[0]
    if isinstance(device, jax.Device):
        return device
    if isinstance(device, str):
        kind, _, index = device.partition(":")
        try:
            devices = jax.devices(kind.lower())
        except RuntimeError as e:
            raise MLCParametersError(f"device {device!r} is not available here: {e}") from e
        i = int(index) if index else 0
        if i >= len(devices):
            raise MLCParametersError(f"device {device!r}: only {len(devices)} {kind} device(s) exist")
        return devices[i]
    raise MLCParametersError(f"device must be 'cpu', 'gpu', 'tpu' or a jax.Device, got {device!r}")


def _build(loaded: LoadedSpec, function_name: str | None, fp16_as_fp32: bool, lower: bool = True) -> Executable:
    """The model's executable. Nesting is limited where mlc recurses (``mlc.limits.MAX_NESTING``);
    a structure so deep that Python's own recursion limit is reached first is refused too."""
    try:
        return _build_kind(loaded, function_name, fp16_as_fp32, lower)
    except RecursionError as e:
        raise MLCParametersError(f"{loaded.name}: the model nests its parts too deeply to load ({e})") from None


def _build_kind(loaded: LoadedSpec, function_name: str | None, fp16_as_fp32: bool, lower: bool) -> Executable:
    kind = loaded.spec.WhichOneof("Type")
    if kind is None:
        raise MLCParametersError(f"{loaded.name}: the model's Type is not set (an empty or corrupt specification)")
    check_description(loaded.spec, loaded.name)
    if kind == "mlProgram":
        from mlc.mil.frontend import build

        return build(loaded, function_name=function_name, fp16_as_fp32=fp16_as_fp32, lower=lower)
    from mlc.nn import frontend as nn

    if kind in nn.KINDS:
        return nn.build(loaded, lower=lower)
    from mlc.classic import frontend as classic

    if classic.handles(kind):
        return classic.build(loaded, fp16_as_fp32=fp16_as_fp32, lower=lower)
    raise MLCUnsupportedError(f"{loaded.name}: Core ML model type {kind!r} is not supported by mlc yet")


class Model:
    """A Core ML model compiled with JAX. Create it with ``mlc.load``."""

    def __init__(
        self,
        source: Any,
        *,
        function_name: str | None = None,
        device: Any = None,
        compute_precision: str = "auto",
        weights_dir: str | None = None,
        cache_dir: Any = None,
        max_tensor_bytes: int | str | None = None,
    ):
        if compute_precision not in _PRECISIONS:
            raise MLCParametersError(f"compute_precision must be one of {_PRECISIONS}, got {compute_precision!r}")
        self.device = resolve_device(device)
        self.cache_dir = compilation_cache.configure(cache_dir)
        self._default_device = self.device == jax.devices()[0]
        self.compute_precision = compute_precision
        self._fp16_as_fp32 = compute_precision == "float32" or (compute_precision == "auto" and self.device.platform == "cpu")
        self._compiled = None
        self.max_tensor_bytes = limits.resolve(max_tensor_bytes)  # None: $MLC_MAX_TENSOR_BYTES or the default
        with self._limits():
            if is_mlc_file(source):
                self._load_compiled(os.fspath(source), function_name)
            else:
                self._loaded = load_spec(source, weights_dir)
                self.spec = self._loaded.spec
                self._name = self._loaded.name
                self._exe = _build(self._loaded, function_name, self._fp16_as_fp32)
        with self._x64():
            # On CPU the device takes the memory-mapped weights without copying them (their data
            # is 64-byte aligned): loading reads no weight. fp16 weights stay fp16 until
            # ``params`` is read; the program widens them itself, once (mlc.hoist).
            self._params = jax.device_put(self._device_ready(self._exe.params), self.device)
        self._jitted = None
        self._batched = None
        self._input_targets: dict[str, Any] = {}  # input name -> the numpy dtype the program takes (None: as given)
        self._changed: frozenset[str] = frozenset()  # params trained since load: save writes them back

    def _device_ready(self, params: dict) -> dict:
        """``params`` (the executable's, updated in place) with each numpy array a CPU device
        would copy (a front end's own array at a 16-byte boundary, a NeuralNetwork's weights)
        moved to a 64-byte boundary, one at a time: the device then holds that memory, not a
        second copy beside it. Memory-mapped weights are aligned already and stay as they are."""
        if self.device.platform == "cpu":
            for key, value in params.items():
                if isinstance(value, np.ndarray) and value.nbytes >= 1 << 16:
                    params[key] = host_aligned(value)
        return params

    def _load_compiled(self, path: str, function_name: str | None) -> None:
        """A ``.mlc`` file from ``mlc compile`` (``mlc.aot``): no Core ML spec, no coremltools."""
        from mlc.aot import load_compiled

        self._exe, self._compiled = load_compiled(path, self.device)
        self._loaded, self.spec, self._name = None, None, self._compiled.name
        if function_name is not None and function_name != self._exe.function_name:
            raise MLCParametersError(f"{path}: compiled from function {self._exe.function_name!r}, not {function_name!r}")
        if self.compute_precision != "auto" and (self.compute_precision == "float32") != self._compiled.fp16_as_fp32:
            raise MLCParametersError(f"{path}: compiled with compute precision {self._compiled.header.get('compute_precision')!r}; load it with the default 'auto'")
        self._fp16_as_fp32 = self._compiled.fp16_as_fp32

    def compile(self, path: str | os.PathLike, *, platforms: tuple[str, ...] | None = None):
        """Write this model ahead-of-time compiled, as a ``.mlc`` file (``mlc.aot``): it loads
        with ``mlc.load`` without coremltools and without lowering the program again."""
        from mlc.aot import compile_model

        return compile_model(self, path, platforms=platforms)

    # -- params ------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The weights by name, as the program computes with them (an fp16 weight as fp32 where
        the model computes fp16 in fp32): what ``jax_function``, training and ``with_params``
        take. Loading keeps such weights as the file stores them; the first read widens them."""
        if any(self._public_dtype(v) != v.dtype for v in self._params.values()):
            with self._x64():
                self._params = {k: v.astype(self._public_dtype(v)) for k, v in self._params.items()}
        return self._params

    @params.setter
    def params(self, value: dict) -> None:
        self._params = value

    def _public_dtype(self, value) -> np.dtype:
        """The dtype ``params`` gives ``value`` (a param as held): fp16 as fp32 when computed so."""
        return np.dtype(np.float32) if self._fp16_as_fp32 and value.dtype == np.float16 else np.dtype(value.dtype)

    # -- trained copies and saving ------------------------------------------------------------
    def with_params(self, params: dict) -> "Model":
        """A copy of this model computing with ``params`` (a dict with some or all of
        ``model.params``' keys, same shapes); ``save`` writes the changed ones back.

        Values are rounded to the precision the file stores them in (an fp16 weight through
        fp16), so the saved and reloaded model predicts exactly as the returned one.
        """
        unknown = [k for k in params if k not in self._params]
        if unknown:
            raise MLCParametersError(f"{self.name}: {unknown[0]!r} is not a param of the model")
        new = {}
        for key, value in params.items():
            old = self._params[key]
            if tuple(np.shape(value)) != tuple(old.shape):
                raise MLCParametersError(f"{self.name}: param {key!r} has shape {tuple(old.shape)}, got {tuple(np.shape(value))}")
            new[key] = _round_to_storage(np.asarray(value), self._exe.param_storage.get(key)).astype(self._public_dtype(old))
        copy = object.__new__(Model)
        copy.__dict__.update(self.__dict__)
        with self._x64():
            copy._params = {**self._params, **jax.device_put(new, self.device)}  # the others as held: not widened here
        copy._changed = self._changed | frozenset(new)
        copy._jitted = copy._batched = None  # their weight-only parts were computed from the old params
        return copy

    def as_flax(self, trainable=None):
        """A ``flax.nnx`` Module holding this model's weights (``mlc.train.flax_module``):
        those matching ``trainable`` (names or glob patterns; default every fp32/fp16 weight)
        as ``nnx.Param``, the rest frozen. ``module.save(path)`` writes the trained weights
        back as Core ML."""
        from mlc.train.flax_module import CoreMLModule

        return CoreMLModule(self, trainable)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as a Core ML file, trained weights included (an ML Program's, a
        NeuralNetwork's, or those of the NeuralNetwork models of a pipeline).

        ``.mlmodel`` for NeuralNetwork and classic models, ``.mlpackage`` for any model (ML
        Programs must be packages). Written atomically: a failure leaves nothing behind and an
        existing file at ``path`` untouched. The file the model was loaded from is never
        overwritten.
        """
        from mlc.format import writer

        path = os.fspath(path)
        if self._compiled is not None:
            raise MLCUnsupportedError(f"{self.name}: a compiled .mlc model cannot be saved back as Core ML; save the model it was compiled from")
        if self._loaded.path and os.path.abspath(path) == os.path.abspath(self._loaded.path):
            raise MLCIOError(f"{path}: this is the file the model was loaded from; save to a new path")
        changed = {k: np.asarray(self._params[k]) for k in sorted(self._changed)}  # with_params gave them as params has them
        kind = self.spec.WhichOneof("Type")
        if kind == "mlProgram":
            from mlc.mil.writeback import save_mlprogram

            return save_mlprogram(self._loaded, changed, path, function_name=self.function_name)
        spec = self.spec
        if changed:
            from mlc.nn.writeback import model_spec_with_params

            spec = model_spec_with_params(spec, changed, self.name)  # a NeuralNetwork, or a pipeline of them
        if path.endswith(".mlpackage"):
            writer.write_mlpackage(path, spec, None)
        else:
            writer.write_mlmodel(path, spec)

    # -- descriptions ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def input_description(self) -> F.FeatureDescriptions:
        return self._exe.inputs

    @property
    def output_description(self) -> F.FeatureDescriptions:
        return self._exe.outputs

    @property
    def short_description(self) -> str:
        if self._compiled is not None:
            return self._compiled.short_description
        return self.spec.description.metadata.shortDescription

    @property
    def function_name(self) -> str | None:
        return self._exe.function_name

    @property
    def user_defined_metadata(self) -> dict[str, str]:
        if self._compiled is not None:
            return dict(self._compiled.user_defined)
        return dict(self.spec.description.metadata.userDefined)

    def __repr__(self) -> str:
        return (
            f"mlc.Model({self.name!r}, {self._exe.kind}, device={self.device}, compute_precision={self.compute_precision!r})\n"
            f"inputs:\n{self.input_description}\noutputs:\n{self.output_description}"
        )

    @contextlib.contextmanager
    def _limits(self):
        """This model's tensor size limit in force (``mlc.limits``) while it parses, traces and
        takes inputs; a refusal names the model."""
        with limits.tensor_limit(self.max_tensor_bytes):
            try:
                yield
            except limits.TensorLimitError as e:
                name = getattr(self, "_name", None)
                if name is None or e.message.startswith(name):
                    raise
                raise limits.TensorLimitError(f"{name}: {e.message}") from None

    def _x64(self):
        """Classic models compute in double (as Core ML does): JAX's 64-bit mode while they run."""
        return jax.enable_x64(True) if self._exe.x64 else contextlib.nullcontext()

    # -- the pure function -------------------------------------------------------------------
    def jax_function(self):
        """``(fn, params)`` with ``fn(params, inputs) -> outputs`` pure: jit, grad and vmap work.

        ``inputs`` are program-level arrays by name (an image as float32 ``(1, C, H, W)`` in
        the declared channel order); classifier outputs come back as ``Classification``.
        Classic models compute in double: ``fn`` enters JAX's 64-bit mode itself, but
        ``jax.jit``, ``jax.grad`` and ``jax.vmap`` around it must run inside
        ``with jax.enable_x64(True):`` too (outside it JAX turns float64 arguments and
        cotangents into float32).
        """
        fn = _without_checks(self._exe.fn)
        return (_in_x64(fn) if self._exe.x64 else fn), self.params

    def _run(self, inputs: dict) -> dict:
        """One call: jitted, or op by op for data-dependent shapes and debugging (MLC_DEBUG).

        Run-time checks the program asserted (``mlc.mil.checks``) raise here.
        """
        with self._x64():
            raw = self._call(inputs)
        checks.raise_failed(raw.pop(checks.CHECKS, {}))
        return raw

    def _call(self, inputs: dict) -> dict:
        if self._exe.eager or debugging():
            return self._exe.fn(self._params, inputs)
        if self._jitted is None:
            self._jitted = self._hoisted(self._exe.fn)
        try:
            return self._jitted(self._params, inputs)
        except DataDependentShapeError:
            self._exe.eager = True  # found while tracing: this model runs op by op from now on
            return self._exe.fn(self._params, inputs)

    def _hoisted(self, fn) -> HoistedFunction:
        """``fn`` jitted for this model's device, its weight-only part computed once (``mlc.hoist``)."""
        cpu = self.device.platform == "cpu"
        return HoistedFunction(fn, compiler_options=xla_options.compiler_options(self.device), host_prepare=cpu)

    def _compiled_batched(self):
        if self._exe.states:
            raise MLCUnsupportedError(f"{self.name}: predict_batch does not take a state; call predict per example")
        if self._exe.eager:
            raise MLCUnsupportedError(f"{self.name}: predict_batch cannot vmap a model whose output shapes depend on data; use predict")
        if self._compiled is not None and self._exe.batched is None:
            raise MLCUnsupportedError(f"{self.name}: this compiled model holds no batched version; call predict per example")
        if self._batched is None:
            batched = self._exe.batched or jax.vmap(self._exe.fn, in_axes=(None, 0))
            self._batched = self._hoisted(batched)
        return self._batched

    # -- inputs ------------------------------------------------------------------------------
    def _program_input(self, name: str, arr: Any) -> Any:
        """The input as the numpy dtype the program computes it in (still on the host)."""
        if not isinstance(arr, (np.ndarray, np.generic)):
            return arr
        target = self._input_targets.get(name, False)
        if target is False:
            target = self._input_targets[name] = self._program_dtype(name)
        return arr if target is None else np.asarray(arr).astype(target, copy=False)

    def _program_dtype(self, name: str) -> np.dtype | None:
        mil = self._exe.input_dtypes.get(name)
        if mil is None:
            return None
        if self._exe.x64 and mil in ("fp64", "int64"):
            return dtypes.NUMPY_DTYPES[mil]
        with dtypes.precision(self._fp16_as_fp32):
            return dtypes.compute_dtype(mil)

    def _on_device(self, inputs: dict) -> dict:
        """Array inputs for the model's device. On JAX's default device numpy arrays go
        straight into the jitted call (its own transfer is the cheapest: an explicit
        ``device_put`` costs more than a small model's whole run); elsewhere, one transfer."""
        if self._default_device:
            return inputs
        arrays = {n: v for n, v in inputs.items() if isinstance(v, np.ndarray)}
        if arrays:
            with self._x64():
                inputs = {**inputs, **jax.device_put(arrays, self.device)}
        return inputs

    def _prepare(self, data: dict) -> dict:
        F.check_input_names(data, self.input_description, self.name)
        out = {}
        for name, value in data.items():
            feature = self.input_description[name]
            arr = F.convert_input(feature, value, f"{self.name}: input {name!r}")
            out[name] = self._program_input(name, arr)
        return self._on_device(out)

    def _traceable_inputs(self, values: dict) -> dict:
        """Program-level inputs for ``values``, with a fresh state for a stateful model: what
        tracing the program needs (``mlc.aot`` exports, ``mlc.cost`` costs)."""
        inputs = self._prepare(values)
        if self._exe.states:
            inputs = self._with_state(dict(inputs), self.make_state())
        return inputs

    def _prepare_batch(self, data: dict) -> tuple[dict, int]:
        F.check_input_names(data, self.input_description, self.name)
        out, sizes = {}, set()
        for name, value in data.items():
            feature = self.input_description[name]
            arr = F.batch_input(feature, value, f"{self.name}: input {name!r}")
            sizes.add(arr.shape[0])
            out[name] = self._program_input(name, arr)
        if len(sizes) > 1:
            raise MLCFeatureTypeError(f"{self.name}: batched inputs have different leading sizes {sorted(sizes)}")
        return self._on_device(out), sizes.pop() if sizes else 0

    # -- outputs -----------------------------------------------------------------------------
    def _output(self, name: str, value: Any) -> Any:
        feature = self.output_description.get(name)
        if isinstance(value, Classification):
            if feature is not None and feature.kind == "dictionary":
                return value.probability_dict()
            if feature is not None and feature.kind == "multiArray":
                return F.multiarray_output(value.probabilities, feature)
            return value.label()
        if feature is None:
            return np.asarray(value)
        if feature.kind in F.SCALAR_KINDS or feature.kind in ("dictionary", "sequence"):
            return F.host_output(value, feature, f"{self.name}: output {name!r}")
        if feature.kind == "image":
            return F.image_output(np.asarray(value), feature)
        return F.multiarray_output(value, feature)

    def _outputs(self, raw: dict) -> dict:
        names = list(self.output_description) or list(raw)
        missing = [n for n in names if n not in raw]
        if missing:
            raise MLCParametersError(f"{self.name}: the model declares output {missing[0]!r} but its program does not produce it")
        return {n: self._output(n, raw[n]) for n in names}

    # -- state -------------------------------------------------------------------------------
    @property
    def state_description(self) -> F.FeatureDescriptions:
        return self._exe.states

    def make_state(self) -> State:
        """A fresh state (zeros) for a stateful model, to pass to ``predict(..., state=)``."""
        if not self._exe.states:
            raise MLCParametersError(f"{self.name}: the model has no state; make_state is for stateful (iOS18) models")
        return State(self, {n: np.zeros(f.shape, f.dtype or np.float32) for n, f in self._exe.states.items()})

    def _with_state(self, inputs: dict, state: State | None) -> dict:
        if not self._exe.states:
            if state is not None:
                raise MLCParametersError(f"{self.name}: the model has no state, but predict was given one")
            return inputs
        if not isinstance(state, State) or state.model is not self:
            raise MLCParametersError(f"{self.name}: a stateful model needs state=model.make_state() of this model")
        with dtypes.precision(self._fp16_as_fp32):
            for name, value in state.values.items():
                inputs[name] = jax.device_put(value.astype(dtypes.compute_array_dtype(value.dtype)), self.device)
        return inputs

    # -- prediction --------------------------------------------------------------------------
    def predict(self, data: dict | list[dict], state: State | None = None) -> dict | list[dict]:
        """Like ``MLModel.predict``: a dict of inputs -> a dict of outputs (or lists of them).

        Stateful models take ``state=model.make_state()``, which the call updates in place.
        """
        if isinstance(data, (list, tuple)):
            return [self.predict(d, state=state) for d in data]
        with self._limits():
            inputs = self._with_state(self._prepare(data), state)
            raw = self._run(inputs)
        if state is not None:
            for name, value in raw.pop(STATES).items():
                state.values[name] = np.asarray(value).astype(state.values[name].dtype)
        return self._outputs(raw)

    def predict_batch(self, data: dict) -> dict:
        """Inputs with a leading batch axis -> outputs with one; one compile, vmapped.

        Image inputs take a list of PIL images. Classifier outputs come back as a list of
        labels and a list of probability dicts.
        """
        with self._limits():
            inputs, n = self._prepare_batch(data)
            with self._x64():
                raw = self._compiled_batched()(self._params, inputs)
        return self._batch_outputs(raw, n)

    def _batch_outputs(self, raw: dict, n: int) -> dict:
        """The batched program's raw outputs (leading axis ``n``) as ``predict_batch`` returns them."""
        checks.raise_failed(raw.pop(checks.CHECKS, {}))
        out = {}
        for name in list(self.output_description) or list(raw):
            value = raw[name]
            feature = self.output_description.get(name)
            if isinstance(value, Classification):
                out[name] = [self._output(name, c) for c in value.unbatch()]
            elif feature is not None and feature.kind == "image":
                out[name] = [F.image_output(v, feature) for v in np.asarray(value)]
            elif feature is not None and feature.kind in ("double", "int64"):
                out[name] = np.asarray(value).reshape(n).astype(np.float64 if feature.kind == "double" else np.int64)
            else:
                out[name] = self._output(name, value)
        return out


class State:
    """The state of a stateful model (Core ML's ``MLState``): named arrays, updated by predict."""

    def __init__(self, model: Model, values: dict[str, np.ndarray]):
        self.model = model
        self.values = values

    def read_state(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise MLCParametersError(f"{self.model.name}: no state {name!r}; the states are {list(self.values)}")
        return self.values[name].copy()

    def write_state(self, name: str, value: Any) -> None:
        current = self.read_state(name)
        value = np.asarray(value)
        if value.shape != current.shape:
            raise MLCFeatureTypeError(f"{self.model.name}: state {name!r} has shape {current.shape}, got {value.shape}")
        self.values[name] = value.astype(current.dtype)


def _round_to_storage(value: np.ndarray, storage: str | None) -> np.ndarray:
    """``value`` as the file will hold it: through fp16 for fp16 storage."""
    return value.astype(np.float16) if storage == "fp16" else value


def _without_checks(fn):
    """``fn`` without the run-time check flags in its outputs (a pure function cannot raise on them)."""

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


def load(
    source: Any,
    *,
    function_name: str | None = None,
    device: Any = None,
    compute_precision: str = "auto",
    weights_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    max_tensor_bytes: int | str | None = None,
) -> Model:
    """Load a ``.mlpackage``, ``.mlmodel``, coremltools ``MLModel`` or ``Model`` proto.

    ``device``: ``"cpu"``, ``"gpu"``, ``"tpu"`` or a ``jax.Device`` (default: JAX's default).
    ``compute_precision``: ``"auto"`` computes fp16 programs in fp32 on CPU and in fp16 on
    accelerators; ``"float32"`` or ``"float16"`` force one.
    ``function_name``: which function of a multifunction package (default: the spec's).
    ``cache_dir``: XLA's persistent compilation cache, so a later process starts without
    compiling again: ``None`` uses ``<mlc cache root>/xla`` (``$MLC_CACHE_DIR`` or
    ``~/.cache/mlc``), a path that folder, ``False`` none (``mlc.compilation_cache``). The
    cache is process-wide, as JAX's is.
    ``max_tensor_bytes``: the largest tensor the model may declare, build or take as input
    (``mlc.limits``; default ``$MLC_MAX_TENSOR_BYTES`` or 4 GiB): a file that asks for more is
    refused before anything is allocated.
    """
    return Model(
        source,
        function_name=function_name,
        device=device,
        compute_precision=compute_precision,
        weights_dir=None if weights_dir is None else os.fspath(weights_dir),
        cache_dir=cache_dir,
        max_tensor_bytes=max_tensor_bytes,
    )


def inspect(source: Any, *, function_name: str | None = None) -> Executable:
    """Read a model's description and op histogram without lowering it (for ``mlc info``)."""
    loaded = load_spec(source)
    return _build(loaded, function_name, True, lower=False), loaded
