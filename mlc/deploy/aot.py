"""Ahead-of-time compiled models: ``mlc compile MODEL -o MODEL.mlc`` and loading the result.

Core ML compiles a ``.mlmodel`` into a ``.mlmodelc`` before it runs; mlc's counterpart is a
``.mlc`` file (``mlc.io.mlc_file``) holding

- the prepared weights: what the per-call program reads, that is the weights it reads as they
  are (under their own names) and the results of the program's weight-only part
  (``mlc.runtime.hoist``: fp16 widening, constexpr dequantization, Winograd-transformed and
  relaid-out kernels; named ``prepared/<i>``), computed once when compiling. Weights that only
  feed the weight-only part are not stored. These are the compiled model's ``params``;
- ``run``: ``(residuals, inputs) -> outputs`` for one example at the declared input shapes,
  and ``run_batched``, the same over a leading batch axis of any size (a symbolic dimension),
  serialized with ``jax.export``;
- the feature descriptions, metadata and class labels as JSON.

Files written before the prepared weights (with a ``prepare`` module that computes them from the
Core ML weights at load) still load.

Loading one needs neither coremltools nor protobuf, and does not lower the program again:
``mlc.load("Model.mlc")`` deserializes the modules and returns an ``mlc.Model`` with the
usual ``predict`` / ``predict_batch``. XLA still compiles the modules for the device on first
use; the persistent compilation cache (``mlc.runtime.compilation_cache``) makes that a cache read,
and the trace cache beside it (``mlc.runtime.trace_cache``) skips the lowering too.

What a compiled model cannot do: take input shapes other than the declared defaults (flexible
shapes are compiled at their default), be saved back to Core ML, or be differentiated
(training reads Core ML files). Models whose output shapes depend on data (they run op by op)
and inputs that are not arrays (strings, dictionaries, sequences) cannot be compiled.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import warnings
from typing import Any

import jax
import numpy as np

from mlc import features as F
from mlc._errors import MLCFeatureTypeError, MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.classification import Classification
from mlc.program.program import Interface, Program
from mlc.io import mlc_file
from mlc.runtime.hoist import split_weight_only

FORMAT = "mlc-compiled"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


@dataclasses.dataclass
class CompileReport:
    path: str
    platforms: tuple[str, ...]
    batched: bool
    hoisted: bool
    bytes: int


# -- compiling --------------------------------------------------------------------------------
def compile_model(model, path: str | os.PathLike, *, platforms: tuple[str, ...] | None = None, batched: bool = True) -> CompileReport:
    """Write ``model`` (an ``mlc.Model``) as a ``.mlc`` file at ``path``; nothing is written on error."""
    path = check_output_path(path)
    program = model.program
    if model.runner.eager:
        raise MLCUnsupportedError(f"{model.name}: its output shapes depend on data (it runs op by op), so it cannot be compiled ahead of time")
    if program.batched is not None:
        raise MLCUnsupportedError(f"{model.name}: this is already a compiled model")
    params = _flat_params(model)
    inputs = example_inputs(model)
    with model.runner.x64():
        classes = _classification_outputs(program.fn, params, inputs, model.name)
        plain = _without_classifications(program.fn, classes)
        parts = _parts(plain, params, inputs)
        stored, residuals = _prepared_weights(parts, params)
        hoisted = parts.prepare is not None
        parts = dataclasses.replace(parts, prepare=None)  # the file holds its results, not a module computing them
        modules, used = _export_all(parts, params, inputs, platforms, batched, model.name)
    header = _header(model, classes, stored, residuals, used, "run_batched" in modules)
    sections = {f"param/{i}": stored[k] for i, k in enumerate(header["param_keys"])}
    sections.update(modules)
    mlc_file.write(path, header, sections)
    return CompileReport(path, used, "run_batched" in modules, hoisted, os.path.getsize(path))


def _prepared_weights(parts: _Parts, params: dict) -> tuple[dict[str, np.ndarray], list[str]]:
    """What the ``run`` module reads, by name: the weights it takes as they are (by their own
    name) and the results of the weight-only part (``prepared/<i>``: Winograd-transformed or
    relaid-out kernels, widened or dequantized weights); and per residual, its name. Weights
    that only feed the weight-only part are not needed and not stored."""
    keys = sorted(params)  # jax flattens dicts in sorted key order
    computed = iter(parts.prepare([params[k] for k in keys]) if parts.prepare is not None else ())
    stored: dict[str, np.ndarray] = {}
    names = []
    for i, forward in enumerate(parts.forwards):
        name = keys[forward] if forward is not None else f"prepared/{i}"
        stored[name] = np.asarray(params[name] if forward is not None else next(computed))
        names.append(name)
    return stored, names


def check_output_path(path: str | os.PathLike) -> str:
    """``path`` as a string, if it names a ``.mlc`` file (checked before anything is loaded)."""
    path = os.fspath(path)
    if not path.endswith(".mlc"):
        raise MLCParametersError(f"{path}: a compiled model's file name ends in .mlc")
    return path


@dataclasses.dataclass
class _Parts:
    """The program as exported: ``prepare(param leaves) -> computed residuals`` (or None) and
    ``run(residuals, inputs) -> outputs``; ``forwards[i]`` is the param leaf residual i is."""

    prepare: Any
    run: Any
    forwards: list[int | None]
    residual_avals: list[jax.ShapeDtypeStruct]


def _parts(fn, params: dict, inputs: dict) -> _Parts:
    split = split_weight_only(fn, params, inputs, max_residual_bytes=1 << 62)
    leaves = jax.tree_util.tree_leaves(params)
    if split is None:
        avals = [jax.ShapeDtypeStruct(np.shape(v), v.dtype) for v in leaves]
        return _Parts(None, lambda residuals, inputs: fn(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), residuals), inputs), list(range(len(leaves))), avals)
    computed = jax.eval_shape(lambda *ls: split.prepare(*ls), *leaves)
    it = iter(computed)
    avals = [next(it) if f is None else jax.ShapeDtypeStruct(np.shape(leaves[f]), leaves[f].dtype) for f in split.forwards]

    def prepare(param_leaves):
        return list(split.prepare(*param_leaves))

    def run(residuals, inputs):
        return jax.tree_util.tree_unflatten(split.out_tree, split.run(*residuals, *jax.tree_util.tree_leaves(inputs)))

    return _Parts(prepare, run, split.forwards, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals])


def _export_all(parts: _Parts, params, inputs, platforms, batched: bool, name: str) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """Serialized modules by section name, and the platforms they were lowered for."""
    from jax import export

    input_avals = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in inputs.items()}
    leaves = jax.tree_util.tree_leaves(params)
    param_avals = [jax.ShapeDtypeStruct(np.shape(v), v.dtype) for v in leaves]

    def lower_all(plats):
        out = {}
        if parts.prepare is not None:
            out["prepare"] = export.export(jax.jit(parts.prepare), platforms=plats)(param_avals).serialize()
        out["run"] = export.export(jax.jit(parts.run), platforms=plats)(parts.residual_avals, input_avals).serialize()
        return out

    asked = tuple(platforms) if platforms else None
    candidates = [asked] if asked else [DEFAULT_PLATFORMS, (jax.default_backend() if jax.default_backend() != "gpu" else "cuda",)]
    error = None
    for plats in candidates:
        try:
            modules = lower_all(plats)
            break
        except ImportError as e:  # jax.export's serializer needs flatbuffers
            raise MLCUnsupportedError(f"{name}: cannot write a compiled model: {e}") from e
        except Exception as e:  # a platform whose lowering rules are missing here
            error = e
    else:
        raise MLCUnsupportedError(f"{name}: cannot be exported for {', '.join(candidates[0])}: {error}") from error
    if batched:
        try:
            (b,) = export.symbolic_shape("batch")
            batched_avals = {k: jax.ShapeDtypeStruct((b, *a.shape), a.dtype) for k, a in input_avals.items()}
            fn = jax.jit(jax.vmap(parts.run, in_axes=(None, 0)))
            modules["run_batched"] = export.export(fn, platforms=plats)(parts.residual_avals, batched_avals).serialize()
        except Exception as e:
            warnings.warn(f"mlc: {name}: no batched version compiled ({e}); predict_batch will not be available", stacklevel=3)
    return {k: bytes(v) for k, v in modules.items()}, tuple(plats)


def example_inputs(model) -> dict:
    """Program-level inputs at the declared default shapes (what a compiled model accepts)."""
    values = {}
    for name, feature in model.input_description.items():
        _check_compilable(feature, model.name)
        values[name] = F.example_value(feature)
    out = {}
    for name, value in model.program_inputs(values).items():
        if not isinstance(value, (np.ndarray, np.generic, jax.Array)):
            raise MLCUnsupportedError(f"{model.name}: input {name!r} is not an array at run time, so the model cannot be compiled ahead of time")
        out[name] = np.asarray(value)
    return out


def _check_compilable(feature: F.Feature, model: str) -> None:
    if feature.kind == "multiArray" and not feature.shape:
        raise MLCUnsupportedError(f"{model}: input {feature.name!r} declares no default shape to compile for")
    if feature.kind not in ("multiArray", "image", "double", "int64"):
        raise MLCUnsupportedError(f"{model}: input {feature.name!r} is a {feature.kind}; only array, image and number inputs can be compiled ahead of time")


def _flat_params(model) -> dict:
    params = model.params
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, (np.ndarray, jax.Array)) for k, v in params.items()):
        raise MLCUnsupportedError(f"{model.name}: its parameters are not a flat dict of arrays, which .mlc files store")
    return params


def _classification_outputs(fn, params, inputs, name: str) -> dict[str, list]:
    """Outputs that are ``Classification`` values, with their class labels (JSON-able)."""
    shapes = jax.eval_shape(fn, params, inputs)
    classes = {}
    for key, value in shapes.items():
        if isinstance(value, Classification):
            labels = [c.item() if isinstance(c, np.generic) else c for c in value.classes]
            if not all(isinstance(c, (str, int)) for c in labels):
                raise MLCUnsupportedError(f"{name}: output {key!r} has class labels that are neither strings nor integers")
            classes[key] = labels
    return classes


def _without_classifications(fn, classes: dict):
    if not classes:
        return fn

    def plain(params, inputs):
        out = dict(fn(params, inputs))
        for key in classes:
            out[key] = out[key].probabilities
        return out

    return plain


def _header(model, classes: dict, params: dict, residuals: list[str], platforms: tuple[str, ...], batched: bool) -> dict:
    program = model.program
    interface = program.interface
    keys = sorted(params)  # jax flattens dicts in sorted key order
    index = {k: i for i, k in enumerate(keys)}
    return {
        "format": FORMAT,
        "mlc_version": _mlc_version(),
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "name": os.path.basename(model.name),
        "kind": program.kind,
        "function_name": interface.function_name,
        "functions": list(interface.functions),
        "short_description": model.short_description,
        "user_defined": model.user_defined_metadata,
        "platforms": list(platforms),
        "fp16_as_fp32": model.runner.fp16_as_fp32,
        "compute_precision": model.compute_precision,
        "x64": program.x64,
        "inputs": interface.inputs.to_json(),
        "outputs": interface.outputs.to_json(),
        "states": interface.states.to_json(),
        "input_dtypes": dict(interface.input_dtypes),
        "predicted_feature_name": interface.predicted_feature_name,
        "predicted_probabilities_name": interface.predicted_probabilities_name,
        "classifications": classes,
        "param_keys": keys,
        "params": [{"dtype": np.dtype(params[k].dtype).name, "shape": list(np.shape(params[k]))} for k in keys],
        "param_storage": {k: v for k, v in program.param_storage.items() if k in index},
        "residuals": [{"param": index[name]} for name in residuals],
        "batched": batched,
    }


def _mlc_version() -> str:
    from mlc._version import __version__

    return __version__


# -- loading ----------------------------------------------------------------------------------
@dataclasses.dataclass
class CompiledInfo:
    """What a compiled model knows of its source, for ``Model``'s descriptions."""

    name: str
    path: str
    short_description: str
    user_defined: dict[str, str]
    fp16_as_fp32: bool
    platforms: tuple[str, ...]
    header: dict


def load_compiled(path: str, device: jax.Device) -> tuple[Program, CompiledInfo]:
    """Read a ``.mlc`` file into a ``Program`` that calls its serialized modules."""
    f = mlc_file.MLCFile(path)
    h = f.header
    if h.get("format") != FORMAT:
        raise MLCIOError(f"{path}: header field 'format' is {h.get('format')!r}, not {FORMAT!r}")
    platforms = tuple(_field(h, "platforms", list, path))
    _check_platform(device, platforms, path)
    params = _read_params(f, h, path)
    modules = {name: _deserialize(f, name, h, path) for name in ("prepare", "run", "run_batched") if name == "run" or name in f}
    residuals = _residual_maker(modules.get("prepare"), _field(h, "residuals", list, path), len(params), path)
    keys = _field(h, "param_keys", list, path)
    classes = {k: tuple(v) for k, v in _field(h, "classifications", dict, path).items()}

    def call(module):
        def fn(params_, inputs):
            out = dict(module.call(residuals([params_[k] for k in keys]), inputs))
            for key, labels in classes.items():
                out[key] = Classification(out[key], labels)
            return out

        return fn

    run = modules["run"]
    interface = Interface(
        inputs=F.FeatureDescriptions.from_json(h.get("inputs"), f"{path}: inputs"),
        outputs=F.FeatureDescriptions.from_json(h.get("outputs"), f"{path}: outputs"),
        states=F.FeatureDescriptions.from_json(h.get("states", []), f"{path}: states"),
        predicted_feature_name=h.get("predicted_feature_name"),
        predicted_probabilities_name=h.get("predicted_probabilities_name"),
        input_dtypes=dict(_field(h, "input_dtypes", dict, path)),
        function_name=h.get("function_name"),
        functions=tuple(h.get("functions") or ()),
    )
    program = Program(
        fn=_shape_checked(call(run), run, path),
        params=dict(zip(keys, params)),
        interface=interface,
        kind=str(h.get("kind", "")),
        param_storage=dict(h.get("param_storage") or {}),
        x64=bool(h.get("x64")),
        batched=call(modules["run_batched"]) if "run_batched" in modules else None,
    )
    info = CompiledInfo(
        name=str(h.get("name") or os.path.basename(path)),
        path=path,
        short_description=str(h.get("short_description") or ""),
        user_defined={str(k): str(v) for k, v in (h.get("user_defined") or {}).items()},
        fp16_as_fp32=bool(h.get("fp16_as_fp32")),
        platforms=platforms,
        header=h,
    )
    return program, info


def _field(h: dict, key: str, kind: type, path: str):
    value = h.get(key)
    if not isinstance(value, kind):
        raise MLCIOError(f"{path}: header field {key!r} is missing or not a {kind.__name__}")
    return value


def _deserialize(f: mlc_file.MLCFile, name: str, h: dict, path: str):
    from jax import export

    try:
        return export.deserialize(bytearray(f.section(name)))
    except Exception as e:
        raise MLCIOError(
            f"{path}: section {name!r} is not a module this JAX ({jax.__version__}) can read "
            f"(compiled with JAX {h.get('jax_version')}): {e}; compile the model again"
        ) from e


def _read_params(f: mlc_file.MLCFile, h: dict, path: str) -> list[np.ndarray]:
    keys, entries = _field(h, "param_keys", list, path), _field(h, "params", list, path)
    if len(keys) != len(entries):
        raise MLCIOError(f"{path}: {len(keys)} param_keys but {len(entries)} params")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise MLCIOError(f"{path}: header params[{i}] is not an object")
        out.append(f.array(f"param/{i}", entry.get("dtype"), entry.get("shape")))
    return out


def _residual_maker(prepare, entries: list, n_params: int, path: str):
    """``residuals(param leaves)``: the run module's first argument."""
    forwards = []
    for i, e in enumerate(entries):
        p = e.get("param") if isinstance(e, dict) else None
        if isinstance(p, int) and not isinstance(p, bool) and 0 <= p < n_params:
            forwards.append(p)
        elif isinstance(e, dict) and e.get("computed") is True and prepare is not None:
            forwards.append(None)
        else:
            raise MLCIOError(f"{path}: header residuals[{i}] is malformed: {e!r}"[:300])

    def residuals(leaves):
        computed = iter(prepare.call(leaves)) if prepare is not None else iter(())
        return [next(computed) if f is None else leaves[f] for f in forwards]

    return residuals


def _check_platform(device: jax.Device, platforms: tuple[str, ...], path: str) -> None:
    platform = device.platform
    names = {"gpu": ("cuda", "rocm")}.get(platform, (platform,))
    if not any(p in platforms for p in names):
        raise MLCUnsupportedError(
            f"{path}: compiled for {', '.join(platforms)}, not for this {platform} device; "
            f"compile it with --platform {names[0]}"
        )


def _shape_checked(fn, module, path: str):
    """``fn`` refusing inputs of shapes other than those the module was compiled for."""
    (_, positions), _ = module.in_tree.unflatten(list(range(len(module.in_avals))))  # ((residuals, inputs), kwargs)
    shapes = {name: tuple(module.in_avals[i].shape) for name, i in positions.items()}

    def checked(params, inputs):
        for name, value in inputs.items():
            if name not in shapes:
                raise MLCFeatureTypeError(f"{path}: the compiled model has no input {name!r}")
            if tuple(np.shape(value)) != shapes[name]:
                raise MLCFeatureTypeError(
                    f"{path}: input {name!r} has shape {tuple(np.shape(value))}; the model was compiled for "
                    f"{shapes[name]} (compiled models take the declared default shapes)"
                )
        return fn(params, inputs)

    return checked
