"""A small Python IR for MIL programs, parsed from ``MIL.proto``'s ``Program``.

Values keep the program's names. Constants are parsed to numpy (weights stay memory-mapped
views of the blob file until lowering decides what becomes a parameter).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from mlc.runtime import limits
from mlc._errors import MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.io.blob import BlobFile, packed_size, unpack_subbyte
from mlc.io.spec import inside
from mlc.runtime.dtypes import MIL_DTYPE_NAMES, NUMPY_DTYPES

_SUBBYTE_BITS = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}


@dataclasses.dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[int | None, ...] | None  # None: rank unknown; None entries: unknown dims

    def __str__(self) -> str:
        dims = "*" if self.shape is None else ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"tensor<{self.dtype}, [{dims}]>"


@dataclasses.dataclass(frozen=True)
class ListType:
    elem: Any
    length: int | None


@dataclasses.dataclass(frozen=True)
class TupleType:
    elems: tuple


@dataclasses.dataclass(frozen=True)
class DictType:
    key: Any
    value: Any


@dataclasses.dataclass(frozen=True)
class StateType:
    wrapped: TensorType


@dataclasses.dataclass
class NamedValue:
    name: str
    type: Any


@dataclasses.dataclass
class Binding:
    """One argument: a reference to a value by name, or an immediate constant."""

    name: str | None = None
    value: Any = None


@dataclasses.dataclass
class Operation:
    type: str
    name: str
    inputs: dict[str, list[Binding]]
    outputs: list[NamedValue]
    blocks: list["Block"]
    attributes: dict[str, Any]


@dataclasses.dataclass
class Block:
    inputs: list[NamedValue]
    outputs: list[str]
    operations: list[Operation]


@dataclasses.dataclass
class Function:
    name: str
    inputs: list[NamedValue]
    opset: str
    block: Block

    def iter_operations(self):
        """Every operation, nested blocks included, in program order."""
        return walk(self.block)


def walk(block: Block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from walk(inner)


@dataclasses.dataclass
class Program:
    version: int
    functions: dict[str, Function]
    attributes: dict[str, Any]


class _Parser:
    """Turns proto messages into IR; ``model_dir`` resolves ``@model_path`` blob files."""

    def __init__(self, model_dir: str | None, where: str, missing_weights: bool = False):
        self.model_dir = model_dir
        self.where = where
        self.missing_weights = missing_weights
        self._blobs: dict[str, BlobFile] = {}
        self._depth = 0

    # -- types ---------------------------------------------------------------------------
    def value_type(self, vt, what: str) -> Any:
        kind = vt.WhichOneof("type")
        if kind == "tensorType":
            return self.tensor_type(vt.tensorType, what)
        if kind == "listType":
            length = vt.listType.length
            n = length.constant.size if length.WhichOneof("dimension") == "constant" else None
            return ListType(self.value_type(vt.listType.type, f"an element of {what}"), n)
        if kind == "tupleType":
            return TupleType(tuple(self.value_type(t, f"an element of {what}") for t in vt.tupleType.types))
        if kind == "dictionaryType":
            d = vt.dictionaryType
            return DictType(self.value_type(d.keyType, f"the keys of {what}"), self.value_type(d.valueType, f"the values of {what}"))
        if kind == "stateType":
            return StateType(self.value_type(vt.stateType.wrappedType, what))
        raise MLCParametersError(f"{self.where}: {what} has no type")

    def tensor_type(self, tt, what: str) -> TensorType:
        """A declared tensor type; a known shape larger than ``mlc.runtime.limits`` allows is refused
        here, before any op could allocate it."""
        if tt.dataType not in MIL_DTYPE_NAMES:
            raise MLCParametersError(f"{self.where}: {what} has an unknown MIL data type code {tt.dataType}")
        dtype = MIL_DTYPE_NAMES[tt.dataType]
        if tt.rank < 0:
            return TensorType(dtype, None)
        dims = []
        for d in tt.dimensions:
            if d.WhichOneof("dimension") == "constant":
                dims.append(int(d.constant.size))
            else:
                dims.append(None)
        if len(dims) != tt.rank:
            raise MLCParametersError(f"{self.where}: {what} has a tensor type of rank {tt.rank} listing {len(dims)} dimensions")
        limits.check_tensor(dims, _itemsize(dtype), f"{self.where}: {what} ({dtype})")
        return TensorType(dtype, tuple(dims))

    # -- values --------------------------------------------------------------------------
    def value(self, v, what: str) -> Any:
        vtype = self.value_type(v.type, what)
        kind = v.WhichOneof("value")
        if kind == "immediateValue":
            return self.immediate(v.immediateValue, vtype, what)
        if kind == "blobFileValue":
            return self.blob(v.blobFileValue, vtype, what)
        raise MLCParametersError(f"{self.where}: {what} has no value")

    def immediate(self, iv, vtype, what: str) -> Any:
        kind = iv.WhichOneof("value")
        if kind == "tensor":
            if not isinstance(vtype, TensorType):
                raise MLCParametersError(f"{self.where}: {what} holds a tensor but is typed {vtype}")
            return self.tensor_value(iv.tensor, vtype, what)
        if kind == "list":
            return [self.value(x, what) for x in iv.list.values]
        if kind == "tuple":
            return tuple(self.value(x, what) for x in iv.tuple.values)
        if kind == "dictionary":
            return {self._key(self.value(kv.key, what), what): self.value(kv.value, what) for kv in iv.dictionary.values}
        raise MLCParametersError(f"{self.where}: {what} has an empty immediate value")

    def _key(self, x, what: str):
        """A dictionary key as a Python scalar; a key that is a tensor of several values is refused."""
        if isinstance(x, np.ndarray):
            if x.size != 1:
                raise MLCParametersError(f"{self.where}: {what} has a dictionary key of shape {x.shape}, not a scalar")
            return x.reshape(()).item()
        try:
            hash(x)
        except TypeError:
            raise MLCParametersError(f"{self.where}: {what} has a dictionary key that is a {type(x).__name__}, not a scalar") from None
        return x

    def tensor_value(self, tv, ttype: TensorType, what: str) -> np.ndarray:
        shape = ttype.shape
        if shape is None or any(d is None for d in shape):
            raise MLCParametersError(f"{self.where}: constant {what} has an unknown shape")
        count = int(np.prod(shape, dtype=np.int64))
        kind = tv.WhichOneof("value")
        dtype = NUMPY_DTYPES[ttype.dtype]
        if kind is None:
            if count:
                raise MLCParametersError(f"{self.where}: constant {what} of shape {shape} has no data")
            return np.zeros(shape, dtype=dtype)
        if kind == "bytes":
            raw = np.frombuffer(tv.bytes.values, dtype=np.uint8)
            if ttype.dtype in _SUBBYTE_BITS:
                nbits = _SUBBYTE_BITS[ttype.dtype]
                if raw.size != packed_size(count, nbits):
                    raise MLCParametersError(f"{self.where}: constant {what}: {raw.size} bytes cannot hold {count} {ttype.dtype}")
                return unpack_subbyte(raw, nbits, count, ttype.dtype.startswith("int")).reshape(shape)
            if raw.size != count * dtype.itemsize:
                raise MLCParametersError(
                    f"{self.where}: constant {what}: {raw.size} bytes do not match {ttype.dtype} of shape {shape}"
                )
            return raw.view(dtype).reshape(shape).copy()
        values = getattr(tv, kind).values
        if kind == "strings":
            data = np.array(list(values), dtype=object)
        else:
            data = np.asarray(values)
        if data.size != count:
            if data.size == 1 and count > 1:  # a splat, as coremltools writes for fill-like constants
                data = np.full(count, data.reshape(-1)[0])
            else:
                raise MLCParametersError(f"{self.where}: constant {what} has {data.size} values for shape {shape}")
        if ttype.dtype == "str":
            return data.reshape(shape)
        return data.astype(dtype).reshape(shape)

    def blob(self, bv, vtype, what: str) -> np.ndarray:
        if not isinstance(vtype, TensorType) or vtype.shape is None or any(d is None for d in vtype.shape):
            raise MLCParametersError(f"{self.where}: blob constant {what} needs a tensor type with a known shape")
        name = bv.fileName
        if self.model_dir is None:
            raise MLCIOError(f"{self.where}: constant {what} lives in {name!r} but the model's weights folder is unknown; pass weights_dir=")
        prefix = "@model_path/"
        relative = name[len(prefix) :] if name.startswith(prefix) else name
        path = inside(self.model_dir, relative, f"{self.where}: constant {what}")
        if self.missing_weights and not os.path.exists(path):  # describing a model whose weights are absent
            return np.broadcast_to(np.zeros((), NUMPY_DTYPES[vtype.dtype]), vtype.shape)
        if path not in self._blobs:
            self._blobs[path] = BlobFile(path)
        return self._blobs[path].read(int(bv.offset), vtype.dtype, vtype.shape)

    # -- structure -----------------------------------------------------------------------
    def named(self, nvt, what: str) -> NamedValue:
        return NamedValue(nvt.name, self.value_type(nvt.type, f"{what} {nvt.name!r}"))

    def attributes(self, attrs, what: str) -> dict[str, Any]:
        return {k: self.value(v, f"attribute {k!r} of {what}") for k, v in attrs.items()}

    def operation(self, op) -> Operation:
        attrs = self.attributes(op.attributes, f"a {op.type} operation")
        name = attrs.get("name")
        if isinstance(name, np.ndarray) and name.size != 1:
            raise MLCParametersError(f"{self.where}: a {op.type} operation's name is a tensor of shape {name.shape}, not a string")
        name = str(name.item()) if isinstance(name, np.ndarray) else (op.outputs[0].name if op.outputs else op.type)
        what = f"operation {name!r} ({op.type})"
        inputs = {}
        for key, arg in op.inputs.items():
            bindings = []
            for b in arg.arguments:
                which = b.WhichOneof("binding")
                if which == "name":
                    bindings.append(Binding(name=b.name))
                elif which == "value":
                    bindings.append(Binding(value=self.value(b.value, f"input {key!r} of {what}")))
                else:
                    raise MLCParametersError(f"{self.where}: input {key!r} of {what} is empty")
            inputs[key] = bindings
        return Operation(
            type=op.type,
            name=name,
            inputs=inputs,
            outputs=[self.named(o, f"output of {what}:") for o in op.outputs],
            blocks=[self.block(b, f"a block of {what}") for b in op.blocks],
            attributes=attrs,
        )

    def block(self, blk, what: str) -> Block:
        """A block; nesting deeper than ``mlc.runtime.limits.MAX_NESTING`` is refused."""
        self._depth += 1
        try:
            if self._depth > limits.MAX_NESTING:
                raise MLCParametersError(f"{self.where}: {what} nests blocks more than {limits.MAX_NESTING} deep")
            inputs = [self.named(i, f"input of {what}:") for i in blk.inputs]
            return Block(inputs, list(blk.outputs), [self.operation(o) for o in blk.operations])
        finally:
            self._depth -= 1

    def function(self, name: str, fn) -> Function:
        opset = fn.opset
        if opset not in fn.block_specializations:
            raise MLCParametersError(f"{self.where}: function {name!r} has no block for its opset {opset!r}")
        inputs = [self.named(i, f"input of function {name!r}:") for i in fn.inputs]
        return Function(name, inputs, opset, self.block(fn.block_specializations[opset], f"function {name!r}"))


def parse_program(program, model_dir: str | None, where: str, *, missing_weights: bool = False) -> Program:
    """Parse a ``MIL.proto`` ``Program``; ``model_dir`` resolves ``@model_path`` weight files.

    ``missing_weights=True`` (describing a model, not running it) lets a weight file that does
    not exist stand as read-only zeros of the declared shape, as for compiled models published
    without their weights; a file that exists is still read and checked."""
    if model_dir is not None and not os.path.isdir(model_dir):
        raise MLCIOError(f"{where}: model folder {model_dir!r} does not exist")
    parser = _Parser(model_dir, where, missing_weights)
    if program.version != 1:
        raise MLCUnsupportedError(f"{where}: ML Program version {program.version} is unknown (only version 1 exists)")
    functions = {name: parser.function(name, fn) for name, fn in program.functions.items()}
    return Program(program.version, functions, parser.attributes(program.attributes, "the program"))


def _itemsize(dtype: str) -> int:
    """Bytes per element of a MIL dtype as mlc holds it (sub-byte types unpack to a byte each)."""
    if dtype in _SUBBYTE_BITS:
        return 1
    numpy_dtype = NUMPY_DTYPES.get(dtype)
    return 8 if numpy_dtype is None or numpy_dtype == object else numpy_dtype.itemsize
