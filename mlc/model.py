"""``Model``: a loaded Core ML model with coremltools' ``MLModel`` API, run through XLA."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import numpy as np

from mlc import call_plan
from mlc import features as F
from mlc._errors import MLCFeatureTypeError, MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.classification import Classification
from mlc.deploy import aot
from mlc.io.mlc_file import is_mlc_file
from mlc.io.spec import LoadedSpec, load_spec
from mlc.program.build import build_program
from mlc.program.program import Program
from mlc.runtime import checks, compilation_cache, limits, trace_cache
from mlc.runtime.interpreter import STATES, debugging, node_limit
from mlc.runtime.runner import Runner

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


class Model:
    """A Core ML model compiled with JAX. Create it with ``mlc.load``."""

    def __init__(
        self,
        runner: Runner,
        *,
        loaded: LoadedSpec | None,
        compiled: aot.CompiledInfo | None,
        compute_precision: str,
        cache_dir: str | None,
        max_tensor_bytes: int,
    ):
        self.runner = runner
        self.device = runner.device
        self.compute_precision = compute_precision
        self.cache_dir = cache_dir
        self.max_tensor_bytes = max_tensor_bytes
        self._loaded = loaded
        self._compiled = compiled
        self.spec = None if loaded is None else loaded.spec
        self._name = runner.name
        self._interface = runner.program.interface  # the same for every with_params copy
        self._changed: frozenset[str] = frozenset()  # params trained since load: save writes them back
        self._known_inputs: dict[tuple, tuple] = {}  # input signature -> its casts (_prepare's fast path)
        self._plans: dict[tuple, call_plan.CallPlan] = {}  # input signature -> predict's whole call (mlc.call_plan)

    @property
    def program(self) -> Program:
        """The lowered program this model runs (``mlc.program.Program``)."""
        return self.runner.program

    @property
    def loaded_spec(self) -> LoadedSpec | None:
        """The spec read from the file, with where it came from (``None`` for a ``.mlc`` file)."""
        return self._loaded

    @property
    def changed_params(self) -> frozenset[str]:
        """The params trained since load (``with_params``): what ``save`` writes back."""
        return self._changed

    def compile(self, path: str | os.PathLike, *, platforms: tuple[str, ...] | None = None):
        """Write this model ahead-of-time compiled, as a ``.mlc`` file (``mlc.deploy.aot``): it loads
        with ``mlc.load`` without coremltools and without lowering the program again."""
        return aot.compile_model(self, path, platforms=platforms)

    # -- params ------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The weights by name, as the program computes with them (an fp16 weight as fp32 where
        the model computes fp16 in fp32): what ``jax_function``, training and ``with_params``
        take. Loading keeps such weights as the file stores them; the first read widens them.
        To compute with other weights, use ``with_params``."""
        return self.runner.params

    # -- trained copies and saving ------------------------------------------------------------
    def with_params(self, params: dict) -> "Model":
        """A copy of this model computing with ``params`` (a dict with some or all of
        ``model.params``' keys, same shapes); ``save`` writes the changed ones back.

        Values are rounded to the precision the file stores them in (an fp16 weight through
        fp16), so the saved and reloaded model predicts exactly as the returned one.
        """
        held = self.runner.held_params
        unknown = [k for k in params if k not in held]
        if unknown:
            raise MLCParametersError(f"{self.name}: {unknown[0]!r} is not a param of the model")
        new = {}
        for key, value in params.items():
            old = held[key]
            if tuple(np.shape(value)) != tuple(old.shape):
                raise MLCParametersError(f"{self.name}: param {key!r} has shape {tuple(old.shape)}, got {tuple(np.shape(value))}")
            storage = self.program.param_storage.get(key)
            new[key] = _round_to_storage(np.asarray(value), storage).astype(self.runner.public_dtype(old))
        copy = object.__new__(Model)
        copy.__dict__.update(self.__dict__)
        copy.runner = self.runner.with_params(new)  # the others as held: not widened here
        copy._changed = self._changed | frozenset(new)
        copy._plans = {}
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
        from mlc.io import writer

        path = os.fspath(path)
        if self._compiled is not None:
            raise MLCUnsupportedError(f"{self.name}: a compiled .mlc model cannot be saved back as Core ML; save the model it was compiled from")
        if self._loaded.path and os.path.abspath(path) == os.path.abspath(self._loaded.path):
            raise MLCIOError(f"{path}: this is the file the model was loaded from; save to a new path")
        held = self.runner.held_params
        changed = {k: np.asarray(held[k]) for k in sorted(self._changed)}  # with_params gave them as params has them
        kind = self.spec.WhichOneof("Type")
        if kind == "mlProgram":
            from mlc.frontends.mil.writeback import save_mlprogram

            return save_mlprogram(self._loaded, changed, path, function_name=self.function_name)
        spec = self.spec
        if changed:
            from mlc.frontends.neuralnetwork.writeback import model_spec_with_params

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
        return self._interface.inputs

    @property
    def output_description(self) -> F.FeatureDescriptions:
        return self._interface.outputs

    @property
    def short_description(self) -> str:
        if self._compiled is not None:
            return self._compiled.short_description
        return self.spec.description.metadata.shortDescription

    @property
    def function_name(self) -> str | None:
        return self._interface.function_name

    @property
    def user_defined_metadata(self) -> dict[str, str]:
        if self._compiled is not None:
            return dict(self._compiled.user_defined)
        return dict(self.spec.description.metadata.userDefined)

    def __repr__(self) -> str:
        return (
            f"mlc.Model({self.name!r}, {self.program.kind}, device={self.device}, compute_precision={self.compute_precision!r})\n"
            f"inputs:\n{self.input_description}\noutputs:\n{self.output_description}"
        )

    def _limits(self):
        """This model's tensor size limit in force (``mlc.runtime.limits``) while it parses, traces and
        takes inputs; a refusal names the model."""
        return _named_limit(self.max_tensor_bytes, (self._name,))

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
        return self.runner.pure_function()

    # -- inputs ------------------------------------------------------------------------------
    def _fills_omitted(self) -> bool:
        """Whether an optional multiarray input left out is fed as its default (NeuralNetwork and
        ML Program models, as Core ML does); classic models read an absent input as missing
        (an imputer's, a non-maximum suppression's thresholds)."""
        return self.program.kind.startswith(("mlProgram", "neuralNetwork"))

    def _with_omitted(self, data: dict) -> dict:
        """``data`` (its names checked) with the optional inputs it leaves out filled in, for
        models that fill them (``features.omitted_inputs``)."""
        F.check_input_names(data, self.input_description, self.name)
        if not self._fills_omitted():
            return data
        return {**data, **F.omitted_inputs(data, self.input_description, self.name)}

    def convert_inputs(self, data: dict, *, batched: bool = False) -> dict:
        """Each of ``data``'s features (some or all of the model's inputs, by name) converted as
        the input description says and cast to the dtype the program computes it in, still on
        the host; with a leading batch axis where ``batched``. Names are not checked here."""
        convert = F.batch_input if batched else F.convert_input
        out = {}
        for name, value in data.items():
            arr = convert(self.input_description[name], value, f"{self.name}: input {name!r}")
            out[name] = self.runner.program_input(name, arr)
        return out

    def _prepare(self, data: dict) -> dict:
        """``data`` checked and converted for the program. Numpy arrays of a signature already
        checked (the same names, shapes and dtypes, under the same size limit) skip the checks:
        what they decided depends on nothing else, so only the casts run again."""
        signature = _input_signature(data)
        casts = self._known_inputs.get(signature) if signature is not None else None
        if casts is not None:
            return self.runner.on_device({n: data[n].astype(declared, copy=False).astype(program, copy=False) for n, declared, program in casts})
        prepared = self.convert_inputs(self._with_omitted(data))
        if signature is not None and len(self._known_inputs) < MAX_KNOWN_SIGNATURES:
            casts = self._casts_to_remember(data, prepared)
            if casts is not None:
                self._known_inputs[signature] = casts
        return self.runner.on_device(prepared)

    def _casts_to_remember(self, data: dict, prepared: dict) -> tuple | None:
        """Per input, (name, declared dtype, program dtype) where converting ``data`` was a pure
        function of the names, shapes and dtypes (multiarrays given whole, no omitted input
        filled in, no reshape, no cast that looks at values); None otherwise."""
        if prepared.keys() != data.keys():
            return None
        casts = []
        for name, value in data.items():
            feature, out = self.input_description[name], prepared[name]
            if feature.kind != "multiArray" or not isinstance(out, np.ndarray) or out.shape != value.shape:
                return None
            declared = feature.dtype or np.dtype(np.float32)
            if not F.cast_needs_no_values(value.dtype, declared):
                return None
            casts.append((name, declared, out.dtype))
        return tuple(casts)

    def program_inputs(self, data: dict) -> dict:
        """``data`` (features by name, as ``predict`` takes them) as the program's inputs,
        checked and converted, with a fresh state for a stateful model: what tracing the
        program needs (``mlc.deploy.aot`` exports it, ``mlc.deploy.cost`` costs it)."""
        with self._limits():
            inputs = self._prepare(data)
            if self._interface.states:
                inputs = self._with_state(dict(inputs), self.make_state())
        return inputs

    def program_batch(self, data: dict) -> tuple[dict, int]:
        """``data`` with a leading batch axis (as ``predict_batch`` takes it) as the program's
        batched inputs, and the batch size. An optional input left out is its default
        (``features.omitted_inputs``) for every example."""
        signature = _input_signature(data)
        key = None if signature is None else ("batch", signature)
        casts = self._known_inputs.get(key) if key is not None else None
        if casts is not None:  # as _prepare's fast path; the sizes were found equal when checked
            out = {n: data[n].astype(declared, copy=False).astype(program, copy=False) for n, declared, program in casts}
            return self.runner.on_device(out), signature[1][0][1][0]
        filled = self._with_omitted(data)
        out = self.convert_inputs(data, batched=True)
        sizes = {np.shape(arr)[0] for arr in out.values()}
        if len(sizes) > 1:
            raise MLCFeatureTypeError(f"{self.name}: batched inputs have different leading sizes {sorted(sizes)}")
        n = sizes.pop() if sizes else 0
        for name in [k for k in filled if k not in data]:
            out[name] = self.runner.program_input(name, np.broadcast_to(filled[name], (n, *filled[name].shape)))
        if key is not None and out and len(self._known_inputs) < MAX_KNOWN_SIGNATURES:
            casts = self._casts_to_remember(data, out)
            if casts is not None:
                self._known_inputs[key] = casts
        return self.runner.on_device(out), n

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
        if missing and node_limit() is not None:  # MLC_LIMIT stopped the program: the n-th node's outputs
            return {n: np.asarray(v) for n, v in raw.items() if n != STATES}
        if missing:
            raise MLCParametersError(f"{self.name}: the model declares output {missing[0]!r} but its program does not produce it")
        return {n: self._output(n, raw[n]) for n in names}

    # -- state -------------------------------------------------------------------------------
    @property
    def state_description(self) -> F.FeatureDescriptions:
        return self._interface.states

    def make_state(self) -> State:
        """A fresh state (zeros) for a stateful model, to pass to ``predict(..., state=)``."""
        if not self._interface.states:
            raise MLCParametersError(f"{self.name}: the model has no state; make_state is for stateful (iOS18) models")
        return State(self, {n: np.zeros(f.shape, f.dtype or np.float32) for n, f in self._interface.states.items()})

    def _with_state(self, inputs: dict, state: State | None) -> dict:
        if not self._interface.states:
            if state is not None:
                raise MLCParametersError(f"{self.name}: the model has no state, but predict was given one")
            return inputs
        if not isinstance(state, State) or state.model is not self:
            raise MLCParametersError(f"{self.name}: a stateful model needs state=model.make_state() of this model")
        inputs.update(self.runner.state_inputs(state.values))
        return inputs

    # -- prediction --------------------------------------------------------------------------
    def predict(self, data: dict | list[dict], state: State | None = None) -> dict | list[dict]:
        """Like ``MLModel.predict``: a dict of inputs -> a dict of outputs (or lists of them).

        Stateful models take ``state=model.make_state()``, which the call updates in place.
        """
        if isinstance(data, (list, tuple)):
            return [self.predict(d, state=state) for d in data]
        signature = _input_signature(data, self.max_tensor_bytes) if state is None else None  # as _prepare's, within _limits
        plan = self._plans.get(signature) if signature is not None else None
        if plan is not None and plan.usable(self.runner):
            return plan(data)
        with self._limits():
            inputs = self._with_state(self._prepare(data), state)
            raw = self.runner.call(inputs)
        if state is not None:
            for name, value in raw.pop(STATES).items():
                state.values[name] = np.asarray(value).astype(state.values[name].dtype)
            return self._outputs(raw)
        out = self._outputs(raw)
        if signature is not None:
            self._remember_plan(signature, inputs, raw)
        return out

    def _remember_plan(self, signature: tuple, inputs: dict, raw: dict, batch: int | None = None) -> None:
        """After a stateless call that went the whole way: a plan for later calls with the inputs'
        ``signature`` (``mlc.call_plan``), where they needed only casts (``_known_inputs``).
        ``batch``: the batch size of a ``predict_batch`` call (its plans are keyed apart)."""
        key = signature if batch is None else ("batch", signature)
        casts = self._known_inputs.get(key)
        names = list(self.output_description)
        if casts is None or not names or debugging():
            return
        known = self._plans.get(key)
        if (known is not None and known.usable(self.runner)) or (known is None and len(self._plans) >= MAX_KNOWN_SIGNATURES):
            return
        if batch is None:
            outputs = [(n, self._output_converter(n, raw[n])) for n in names]
        else:
            outputs = [(n, self._batch_output_converter(n, raw[n], batch)) for n in names]
        plan = call_plan.make(self.runner, casts, inputs, outputs, batch=batch is not None)
        if plan is not None:
            self._plans[key] = plan

    def _output_converter(self, name: str, value: Any):
        """``_output`` for ``name``, bound once: a plain multiarray's conversion directly."""
        feature = self.output_description.get(name)
        if feature is not None and feature.kind == "multiArray" and not isinstance(value, Classification):
            return functools.partial(F.multiarray_output, feature=feature)
        return functools.partial(self._output, name)

    def predict_batch(self, data: dict) -> dict:
        """Inputs with a leading batch axis -> outputs with one; one compile, vmapped.

        Image inputs take a list of PIL images. Classifier outputs come back as a list of
        labels and a list of probability dicts.
        """
        signature = _input_signature(data, self.max_tensor_bytes)
        plan = self._plans.get(("batch", signature)) if signature is not None else None
        if plan is not None and plan.usable(self.runner):
            return plan(data)
        if self._compiled is not None and self.program.batched is None:
            raise MLCUnsupportedError(f"{self.name}: this compiled model holds no batched version; call predict per example")
        with self._limits():
            inputs, n = self.program_batch(data)
            raw = self.runner.call_batch(inputs)
        out = self.batch_outputs(raw, n)
        if signature is not None:
            self._remember_plan(signature, inputs, raw, batch=n)
        return out

    def batch_outputs(self, raw: dict, n: int) -> dict:
        """The batched program's raw outputs (leading axis ``n``) as ``predict_batch`` returns
        them; run-time checks the program asserted raise here."""
        checks.raise_failed(raw.pop(checks.CHECKS, {}))
        names = list(self.output_description) or list(raw)
        return {name: self._batch_output_converter(name, raw[name], n)(raw[name]) for name in names}

    def _batch_output_converter(self, name: str, value: Any, n: int):
        """How ``batch_outputs`` converts output ``name`` (``value``, of a batch of ``n``), bound
        once for ``predict_batch``'s call plans."""
        feature = self.output_description.get(name)
        if isinstance(value, Classification):
            return lambda v: [self._output(name, c) for c in v.unbatch()]
        if feature is not None and feature.kind == "image":
            return lambda v: [F.image_output(x, feature) for x in np.asarray(v)]
        if feature is not None and feature.kind in ("double", "int64"):
            dtype = np.float64 if feature.kind == "double" else np.int64
            return lambda v: np.asarray(v).reshape(n).astype(dtype)
        if feature is not None and feature.kind == "multiArray":
            return functools.partial(F.multiarray_batch_output, feature=feature)
        return functools.partial(self._output, name)


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
    ``~/.cache/mlc``), a path that folder, ``False`` none (``mlc.runtime.compilation_cache``). The
    cache is process-wide, as JAX's is.
    ``max_tensor_bytes``: the largest tensor the model may declare, build or take as input
    (``mlc.runtime.limits``; default ``$MLC_MAX_TENSOR_BYTES`` or 4 GiB): a file that asks for more is
    refused before anything is allocated.
    """
    if compute_precision not in _PRECISIONS:
        raise MLCParametersError(f"compute_precision must be one of {_PRECISIONS}, got {compute_precision!r}")
    device = resolve_device(device)
    cache = compilation_cache.configure(cache_dir)
    max_bytes = limits.resolve(max_tensor_bytes)  # None: $MLC_MAX_TENSOR_BYTES or the default
    fp16_as_fp32 = compute_precision == "float32" or (compute_precision == "auto" and device.platform == "cpu")
    name = [None]  # known once the file is read: limit refusals then name the model
    loaded = compiled = None
    with _named_limit(max_bytes, name):
        files = trace_cache.snapshot(source, None if is_mlc_file(source) else weights_dir)  # before reading: what the program is built from
        if is_mlc_file(source):
            path = os.fspath(source)
            program, compiled = aot.load_compiled(path, device)
            name[0] = compiled.name
            _check_compiled_options(program, compiled, path, function_name, compute_precision)
            fp16_as_fp32 = compiled.fp16_as_fp32
        else:
            loaded = load_spec(source, None if weights_dir is None else os.fspath(weights_dir))
            name[0] = loaded.name
            program = build_program(loaded, function_name=function_name, fp16_as_fp32=fp16_as_fp32)
    runner = Runner(program, device=device, fp16_as_fp32=fp16_as_fp32, name=name[0])
    options = {"function_name": function_name, "compute_precision": compute_precision, "fp16_as_fp32": fp16_as_fp32, "max_tensor_bytes": max_bytes}
    traces = trace_cache.for_load(files, loaded, cache, cache_dir, options, device)
    if traces is not None:
        runner.use_trace_cache(traces)
    return Model(
        runner, loaded=loaded, compiled=compiled, compute_precision=compute_precision, cache_dir=cache, max_tensor_bytes=max_bytes
    )


def _check_compiled_options(program: Program, compiled, path: str, function_name: str | None, compute_precision: str) -> None:
    """A ``.mlc`` file runs the function and precision it was compiled for."""
    if function_name is not None and function_name != program.interface.function_name:
        raise MLCParametersError(f"{path}: compiled from function {program.interface.function_name!r}, not {function_name!r}")
    if compute_precision != "auto" and (compute_precision == "float32") != compiled.fp16_as_fp32:
        raise MLCParametersError(f"{path}: compiled with compute precision {compiled.header.get('compute_precision')!r}; load it with the default 'auto'")


MAX_KNOWN_SIGNATURES = 64


def _input_signature(data: Any, limit: int | None = None) -> tuple | None:
    """``data``'s names, shapes and dtypes with the size limit in force (``limit``, a model's
    own, else ``limits.max_tensor_bytes()``), when every value is a numpy array (the key of
    ``Model._prepare``'s fast path); None otherwise."""
    if type(data) is not dict:
        return None
    parts = []
    for name, value in data.items():
        if type(value) is not np.ndarray:
            return None
        parts.append((name, value.shape, value.dtype))
    return (limit if limit is not None else limits.max_tensor_bytes()), tuple(parts)


@contextlib.contextmanager
def _named_limit(max_bytes: int, name):
    """The tensor size limit in force while a model is read, lowered and run; a refusal names the
    model once ``name[0]`` is known (a list while loading, filled in once the file is read)."""
    with limits.tensor_limit(max_bytes):
        try:
            yield
        except limits.TensorLimitError as e:
            if name[0] is None or e.message.startswith(name[0]):
                raise
            raise limits.TensorLimitError(f"{name[0]}: {e.message}") from None
