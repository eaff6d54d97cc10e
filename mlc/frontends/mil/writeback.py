"""Write fine-tuned params back into an ML Program, and save it as an ``.mlpackage``.

Params are keyed as ``mlc.frontends.mil.lower`` keys them: a float ``const`` by its output name. Each new
value replaces the const's ``val`` (``MIL.proto`` ``Operation.attributes["val"]``): a
``Value.blobFileValue`` gets a blob in a new weight file, a ``Value.immediateValue.tensor``
its ``floats`` (fp32) or ``bytes`` (fp16), as coremltools' ``backend/mil/helper.py`` writes them.

The weight file is rebuilt from scratch: every ``BlobFileValue`` in the program (const values,
constexpr attributes, values bound inline to inputs, values nested in lists, tuples and
dictionaries, at program, function, block and operation level) is copied from its original file (dtype code and
padding bits kept) or given the new data; values that shared one blob (multifunction
programs share weights) share one blob again, and every offset is rewritten.

Compressed weights (the data of ``constexpr_*`` ops) cannot be written back: a new dense value
would have to be compressed again, which is coremltools' ``ct.optimize`` job.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from mlc._errors import MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.io.blob import BLOB_CODE_BY_NAME, BlobFile, BlobWriter
from mlc.io.spec import LoadedSpec, inside
from mlc.io.writer import WEIGHT_FILE, check_model_path, write_mlpackage
from mlc.runtime.dtypes import MIL_DTYPE_NAMES

WEIGHT_FILE_NAME = f"@model_path/weights/{WEIGHT_FILE}"
_WRITABLE = {"fp32": np.dtype("<f4"), "fp16": np.dtype("<f2")}


# -- walking the program proto ------------------------------------------------------------------
def _block_operations(block) -> Iterator[Any]:
    """Every ``Operation`` of ``block``, nested blocks (``cond``, ``while_loop``) included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _block_operations(inner)


def _operations(program, function_name: str | None) -> Iterator[Any]:
    """Every operation of every function (of ``function_name`` only, when given) and of every
    block specialization (``Function.block_specializations``, one per opset)."""
    for name, function in program.functions.items():
        if function_name is None or name == function_name:
            for block in function.block_specializations.values():
                yield from _block_operations(block)


def _values(value) -> Iterator[Any]:
    """``value`` and every ``Value`` nested in its immediate list, tuple or dictionary."""
    yield value
    immediate = value.immediateValue if value.WhichOneof("value") == "immediateValue" else None
    kind = immediate.WhichOneof("value") if immediate is not None else None
    if kind in ("list", "tuple"):
        for inner in getattr(immediate, kind).values:
            yield from _values(inner)
    elif kind == "dictionary":
        for pair in immediate.dictionary.values:
            yield from _values(pair.key)
            yield from _values(pair.value)


def _op_name(op) -> str:
    """The ``name`` attribute, as ``mlc.frontends.mil.ir`` reads it (the first output's name without one)."""
    if "name" in op.attributes:
        strings = op.attributes["name"].immediateValue.tensor.strings.values
        if strings:
            return strings[0].decode() if isinstance(strings[0], bytes) else str(strings[0])
    return op.outputs[0].name if op.outputs else op.type


# -- which params can be written ------------------------------------------------------------------
def _compressed_keys(program) -> set[str]:
    """Params keys of compressed data: constexpr attributes (``mlc.frontends.mil.lower.attribute_param``,
    ``"op@key"``) and the names bound to constexpr inputs (iOS18 consts holding the data)."""
    keys: set[str] = set()
    for op in _operations(program, None):
        if not op.type.startswith("constexpr_"):
            continue
        name = _op_name(op)
        keys.update(f"{name}@{key}" for key in op.attributes if key != "name" and key not in op.inputs)
        for argument in op.inputs.values():
            keys.update(b.name for b in argument.arguments if b.WhichOneof("binding") == "name")
    return keys


def _const_names(program, function_name: str | None) -> set[str]:
    """Output names of the ``const`` ops (of ``function_name`` only, when given)."""
    return {op.outputs[0].name for op in _operations(program, function_name) if op.type == "const" and len(op.outputs) == 1}


def _check_keys(params: dict, consts: set[str], compressed: set[str], where: str) -> None:
    for key in params:
        if key in compressed:
            raise MLCUnsupportedError(
                f"{where}: param {key!r}: compressed weights cannot be written back; their data belongs to a "
                "constexpr_* op. Leave it out of the params to save, or compress the dense weights again "
                "with coremltools.optimize"
            )
        if key not in consts:
            raise MLCParametersError(f"{where}: param {key!r} names no const of the program; nothing to write it into")


# -- one const's new value -----------------------------------------------------------------------
def _declared(value, key: str, where: str) -> tuple[str, tuple[int, ...]]:
    """``(dtype name, shape)`` of a const's ``val`` from its ``TensorType``."""
    if value.type.WhichOneof("type") != "tensorType":
        raise MLCParametersError(f"{where}: const {key!r} is not a tensor; a param cannot replace it")
    tensor = value.type.tensorType
    shape = []
    for dim in tensor.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            raise MLCParametersError(f"{where}: const {key!r} has a dimension of unknown size")
        shape.append(int(dim.constant.size))
    return MIL_DTYPE_NAMES.get(tensor.dataType, str(tensor.dataType)), tuple(shape)


def _cast(new: Any, key: str, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``new`` as a little-endian array of the const's declared ``dtype``, after checking its shape."""
    if dtype not in _WRITABLE:
        raise MLCParametersError(f"{where}: const {key!r} is {dtype}; only fp32 and fp16 consts can take new values")
    array = np.asarray(new)
    if array.shape != shape:
        raise MLCParametersError(f"{where}: param {key!r} has shape {array.shape}; the const is declared {shape}")
    if array.dtype.kind not in "fiub":
        raise MLCParametersError(f"{where}: param {key!r} holds {array.dtype} values, not numbers")
    with np.errstate(over="ignore"):
        cast = np.ascontiguousarray(array, dtype=_WRITABLE[dtype])
    overflow = np.isinf(cast) & np.isfinite(array)
    if overflow.any():
        raise MLCParametersError(
            f"{where}: param {key!r} has values beyond {dtype}'s range (e.g. {array[overflow].flat[0].item()!r}); they would become inf"
        )
    return cast


def _set_immediate(value, array: np.ndarray, dtype: str) -> None:
    """Store ``array`` in ``Value.immediateValue.tensor``: fp32 in ``floats``, fp16 as ``bytes``."""
    tensor = value.immediateValue.tensor
    tensor.Clear()
    if dtype == "fp32":
        tensor.floats.SetInParent()
        tensor.floats.values.extend(array.reshape(-1).tolist())
    else:
        tensor.bytes.SetInParent()
        tensor.bytes.values = array.tobytes()


# -- the weight file -------------------------------------------------------------------------------
class _WeightRebuilder:
    """Copies or replaces every blob the program references into one new ``BlobWriter``."""

    def __init__(self, loaded: LoadedSpec):
        self.loaded = loaded
        self.writer = BlobWriter()
        self._files: dict[str, BlobFile] = {}
        self._offsets: dict[tuple, int] = {}  # (source, what) -> offset in the new file

    def _file(self, file_name: str) -> tuple[str, BlobFile]:
        where = self.loaded.name
        if self.loaded.model_dir is None:
            raise MLCIOError(f"{where}: the program's weights live in {file_name!r} but the model's weights folder is unknown")
        prefix = "@model_path/"
        relative = file_name[len(prefix) :] if file_name.startswith(prefix) else file_name
        path = inside(self.loaded.model_dir, relative, f"{where}: weight file {file_name!r}")
        if path not in self._files:
            self._files[path] = BlobFile(path)
        return path, self._files[path]

    def copy_all(self, values) -> None:
        """Copy the blob of every ``BlobFileValue`` in ``values`` (nested values included)."""
        for value in values:
            for inner in _values(value):
                if inner.WhichOneof("value") == "blobFileValue":
                    self.copy(inner.blobFileValue)

    def copy(self, blob_value) -> None:
        """Point ``blob_value`` (a ``BlobFileValue``) at a copy of its original blob."""
        path, blob_file = self._file(blob_value.fileName)
        key = ("copy", path, int(blob_value.offset))
        if key not in self._offsets:
            code, data, padding_bits = blob_file.raw(int(blob_value.offset))
            self._offsets[key] = self.writer.add(code, data, padding_bits)
        self._point(blob_value, key)

    def replace(self, blob_value, param: str, array: np.ndarray, dtype: str) -> None:
        """Point ``blob_value`` at a blob holding ``array``; one blob per (param, dtype)."""
        key = ("param", param, dtype)
        if key not in self._offsets:
            self._offsets[key] = self.writer.add(BLOB_CODE_BY_NAME[dtype], array)
        self._point(blob_value, key)

    def _point(self, blob_value, key: tuple) -> None:
        blob_value.fileName = WEIGHT_FILE_NAME
        blob_value.offset = self._offsets[key]


def _write_param(const_op, key: str, new: Any, weights: _WeightRebuilder, where: str) -> None:
    value = const_op.attributes["val"] if "val" in const_op.attributes else None
    if value is None:
        raise MLCParametersError(f"{where}: const {key!r} has no val attribute")
    dtype, shape = _declared(value, key, where)
    array = _cast(new, key, dtype, shape, where)
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        weights.replace(value.blobFileValue, key, array, dtype)
    elif kind == "immediateValue" and value.immediateValue.WhichOneof("value") == "tensor":
        _set_immediate(value, array, dtype)
    else:
        raise MLCParametersError(f"{where}: const {key!r} holds no tensor value to replace")


def _rebuild_block(block, params: dict[str, Any], weights: _WeightRebuilder, where: str) -> None:
    """Write ``params`` into the block's consts and copy every other blob it references."""
    weights.copy_all(block.attributes.values())
    for op in block.operations:
        replaced = op.type == "const" and len(op.outputs) == 1 and op.outputs[0].name in params
        if replaced:
            _write_param(op, op.outputs[0].name, params[op.outputs[0].name], weights, where)
        weights.copy_all(value for key, value in op.attributes.items() if not (replaced and key == "val"))
        for argument in op.inputs.values():
            weights.copy_all(b.value for b in argument.arguments if b.WhichOneof("binding") == "value")
        for inner in op.blocks:
            _rebuild_block(inner, params, weights, where)


def mlprogram_with_params(
    loaded: LoadedSpec, params: dict[str, Any], *, function_name: str | None = None
) -> tuple[Any, BlobWriter]:
    """A copy of ``loaded.spec`` holding ``params`` and the new weight file its blobs point to.

    ``params`` maps const output names to arrays (numpy or JAX) of the declared shape; they are
    cast to the const's dtype (fp32 or fp16). A const name can stand in several functions of a
    multifunction program: all of them take the value, or only those of ``function_name``.
    ``loaded`` is never changed.
    """
    where = loaded.name
    if loaded.spec.WhichOneof("Type") != "mlProgram":
        raise MLCUnsupportedError(
            f"{where}: params can be written back into ML Programs only; this model is {loaded.spec.WhichOneof('Type')!r}"
        )
    spec = type(loaded.spec)()
    spec.CopyFrom(loaded.spec)
    program = spec.mlProgram
    if function_name is not None and function_name not in program.functions:
        raise MLCParametersError(f"{where}: no function {function_name!r}; the program has {sorted(program.functions)}")
    _check_keys(params, _const_names(program, function_name), _compressed_keys(program), where)
    weights = _WeightRebuilder(loaded)
    for name, function in program.functions.items():
        targets = params if function_name in (None, name) else {}
        weights.copy_all(function.attributes.values())
        for block in function.block_specializations.values():
            _rebuild_block(block, targets, weights, where)
    weights.copy_all(program.attributes.values())
    return spec, weights.writer


def save_mlprogram(
    loaded: LoadedSpec, params: dict[str, Any], path: str | os.PathLike, *, function_name: str | None = None
) -> None:
    """Save ``loaded`` with ``params`` written back as the ``.mlpackage`` ``path`` (atomically:
    a package already there stays as it was if anything fails)."""
    check_model_path(path, ".mlpackage", loaded.spec)
    spec, weights = mlprogram_with_params(loaded, params, function_name=function_name)
    write_mlpackage(path, spec, weights if len(weights) else None)
