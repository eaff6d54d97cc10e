"""Text MIL (a compiled ML Program's ``model.mil``) parsed into the ``MIL.proto`` ``Program``.

``coremlc`` writes an ML Program's program as text. The protobuf this module builds is the
one coremltools would have written for the same program (the oracle: the uncompiled twins of
the test folders), so ``mlc.frontends.mil`` loads and lowers it unchanged. The grammar::

    program    := "program" "(" VERSION ")" attrs? "{" function* "}"
    function   := "func" NAME "<" OPSET ">" "(" params? ")" attrs? body ";"
    body       := "{" statement* "}" "->" "(" names? ")"
    params     := type NAME ("," type NAME)*
    statement  := outputs "=" OP "(" inputs? ")" attrs? block* ";"
                | OP "(" inputs? ")" attrs? block* ";"          (an op without outputs)
    outputs    := type NAME ("," type NAME)*
    inputs     := NAME "=" argument ("," NAME "=" argument)*
    argument   := NAME | literal | "(" (NAME | literal) ("," ...)* ")"   (variadic: tuple of bindings)
    attrs      := "[" NAME "=" literal ("," NAME "=" literal)* "]"
    block      := NAME? ("(" params? ")")? body        (cond's branches, while_loop's cond and body)
    type       := "tensor" "<" DTYPE "," "[" (INT | "?") ... "]" ">" | DTYPE  (a scalar)
                | "list" "<" type "," (INT | "?") ">" | "tuple" "<" type, ... ">"
                | "dict" "<" type "," type ">" | "state" "<" type ">"
    literal    := type "(" value ")"
    value      := scalar | "[" value, ... "]" (tensors, lists) | "(" value, ... ")" (tuples)
                | "{" "{" key "," value "}", ... "}" (dicts) | BLOBFILE "(" "path" "=" literal "," "offset" "=" literal ")"
    scalar     := INT | FLOAT | hex float (0x1.388p+13) | inf | nan | -inf | STRING | true | false

``OPSET`` is ``ios15`` ... ``ios18`` or ``ios26`` (``CoreML5`` ... ``CoreML9`` in the proto).
``//`` starts a comment. Immediate values are stored as coremltools stores them (fp16, 8-bit
and sub-byte integers and uint32 as raw little-endian bytes, int64/uint64 as ``longInts``,
int16/uint16/int32 as ``ints``); a ``BLOBFILE`` becomes a ``BlobFileValue`` whose path must
start with ``@model_path/`` and stay inside the compiled folder. Blocks of a ``while_loop``
named ``..._cond`` / ``..._body`` are put in the proto's order (condition first).

Hostile input: nesting of blocks, types and literals is limited to
``mlc.runtime.limits.MAX_NESTING`` levels, every declared tensor shape is checked against the
tensor size limit before anything is built, integers are checked against their type's range,
and a literal never allocates more than its text holds. Every error is a ``MILSyntaxError``
(an ``MLCIOError``) naming the file, the line and the column.
"""

from __future__ import annotations

import collections
import math
import os
import re
from bisect import bisect_right
from typing import Any

import ml_dtypes
import numpy as np

from mlc._errors import MLCIOError, MLCParametersError
from mlc.io.blob import packed_size
from mlc.io.loaded import inside
from mlc.io.proto import proto
from mlc.runtime import limits

MAX_MIL_BYTES = 2 << 30
MODEL_PATH_PREFIX = "@model_path/"

# text opset -> MIL.proto Function.opset
OPSETS = {"ios15": "CoreML5", "ios16": "CoreML6", "ios17": "CoreML7", "ios18": "CoreML8", "ios26": "CoreML9"}

# text dtype -> (MIL.proto DataType name, numpy dtype for the values, proto field, bits for sub-byte types)
_DTYPES: dict[str, tuple[str, Any, str, int]] = {
    "bool": ("BOOL", np.bool_, "bools", 0),
    "string": ("STRING", object, "strings", 0),
    "fp16": ("FLOAT16", np.float16, "bytes", 0),
    "fp32": ("FLOAT32", np.float32, "floats", 0),
    "fp64": ("FLOAT64", np.float64, "doubles", 0),
    "bf16": ("BFLOAT16", "bfloat16", "bytes", 0),
    "fp8e4m3fn": ("FLOAT8E4M3FN", "float8_e4m3fn", "bytes", 0),
    "fp8e5m2": ("FLOAT8E5M2", "float8_e5m2", "bytes", 0),
    "int4": ("INT4", np.int8, "bytes", 4),
    "int8": ("INT8", np.int8, "bytes", 0),
    "int16": ("INT16", np.int16, "ints", 0),
    "int32": ("INT32", np.int32, "ints", 0),
    "int64": ("INT64", np.int64, "longInts", 0),
    "uint1": ("UINT1", np.uint8, "bytes", 1),
    "uint2": ("UINT2", np.uint8, "bytes", 2),
    "uint3": ("UINT3", np.uint8, "bytes", 3),
    "uint4": ("UINT4", np.uint8, "bytes", 4),
    "uint6": ("UINT6", np.uint8, "bytes", 6),
    "uint8": ("UINT8", np.uint8, "bytes", 0),
    "uint16": ("UINT16", np.uint16, "ints", 0),
    "uint32": ("UINT32", np.uint32, "bytes", 0),
    "uint64": ("UINT64", np.uint64, "longInts", 0),  # held in int64 longInts, as coremltools holds it
}
_INT_RANGES = {
    "int4": (-8, 7),
    "uint1": (0, 1),
    "uint2": (0, 3),
    "uint3": (0, 7),
    "uint4": (0, 15),
    "uint6": (0, 63),
    **{n: (int(np.iinfo(d).min), int(np.iinfo(d).max)) for n, (_, d, _, b) in _DTYPES.items() if n[:3] in ("int", "uin") and not b},
    "uint64": (0, (1 << 63) - 1),  # the proto's longInts are int64
}
_ITEMSIZE = {n: 1 if bits else np.dtype(getattr(ml_dtypes, d) if isinstance(d, str) else d).itemsize for n, (_, d, _, bits) in _DTYPES.items()}
_TYPE_KEYWORDS = frozenset(("tensor", "list", "tuple", "dict", "state", *_DTYPES))

_TOKEN = re.compile(
    r"""
    (?P<space>(?:[ \t\r\n]+|//[^\n]*)+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?
                | (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>->|[()\[\]{}<>,=;?*\-])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"', "'": "'", "?": "?"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{1,3}|.)", re.DOTALL)


class MILSyntaxError(MLCIOError):
    """Text MIL that does not parse, or whose values are invalid; names the file, line and column."""

    def __init__(self, message: str, where: str = "", line: int = 0, column: int = 0):
        super().__init__(message)
        self.where, self.line, self.column = where, line, column


class _Tensor:
    """A parsed tensor type: MIL dtype name and shape (``None`` entries: ``?``)."""

    __slots__ = ("dtype", "shape")

    def __init__(self, dtype: str, shape: tuple):
        self.dtype, self.shape = dtype, shape


class _Compound:
    """A parsed list / tuple / dict / state type."""

    __slots__ = ("kind", "items", "length")

    def __init__(self, kind: str, items: tuple, length: int | None = None):
        self.kind, self.items, self.length = kind, items, length


class _Level:
    """One level of nesting (a block, a type, a value); refuses more than ``MAX_NESTING``."""

    __slots__ = ("parser", "offset")

    def __init__(self, parser: "_Parser", offset: int):
        self.parser, self.offset = parser, offset

    def __enter__(self):
        self.parser.depth += 1
        if self.parser.depth > limits.MAX_NESTING:
            self.parser.fail(f"blocks, types or values nest more than {limits.MAX_NESTING} levels deep", self.offset)

    def __exit__(self, *exc):
        self.parser.depth -= 1


class _Parser:
    def __init__(self, text: str, where: str, model_dir: str | None, sources: dict | None = None):
        self.text = text
        self.sources = sources
        self.function_name = ""
        self.where = where
        self.model_dir = model_dir
        self.tokens = _TOKEN.finditer(text)
        self.buffer: collections.deque[tuple[str, str, int]] = collections.deque()
        self.depth = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.mil = proto("MIL")

    # -- tokens ------------------------------------------------------------------------------
    def _scan(self) -> tuple[str, str, int]:
        for m in self.tokens:
            kind = m.lastgroup
            if kind == "space":
                continue
            if kind == "bad":
                self.fail(f"unexpected character {m.group()!r}", m.start())
            return (kind, m.group(), m.start())
        return ("end", "", len(self.text))

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        buffer = self.buffer
        while len(buffer) <= k:
            buffer.append(self._scan())
        return buffer[k]

    def next(self) -> tuple[str, str, int]:
        buffer = self.buffer
        if not buffer:
            buffer.append(self._scan())
        return buffer.popleft()

    def at(self, text: str, k: int = 0) -> bool:
        """Whether token ``k`` ahead is the punctuation or word ``text`` (a string or number
        token never equals one: strings keep their quotes)."""
        buffer = self.buffer
        while len(buffer) <= k:
            buffer.append(self._scan())
        return buffer[k][1] == text

    def expect(self, text: str, what: str = "") -> tuple[str, str, int]:
        token = self.peek()
        if not self.at(text):
            self.fail(f"expected {text!r}{' ' + what if what else ''}, found {self.show(token)}", token[2])
        return self.next()

    def name(self, what: str) -> tuple[str, int]:
        kind, value, offset = self.next()
        if kind != "name":
            self.fail(f"expected {what}, found {self.show((kind, value, offset))}", offset)
        return value, offset

    @staticmethod
    def show(token) -> str:
        kind, value, _ = token
        if kind == "end":
            return "the end of the file"
        return repr(value if len(value) <= 40 else value[:37] + "...")

    def location(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.newlines, offset - 1)
        start = self.newlines[line - 1] + 1 if line else 0
        return line + 1, offset - start + 1

    def fail(self, message: str, offset: int | None = None):
        offset = self.peek()[2] if offset is None else offset
        line, column = self.location(offset)
        raise MILSyntaxError(f"{self.where}:{line}:{column}: {message}", self.where, line, column)

    def nest(self, offset: int) -> "_Level":
        return _Level(self, offset)

    # -- types -------------------------------------------------------------------------------
    def type_(self):
        word, offset = self.name("a type")
        with self.nest(offset):
            if word in _DTYPES:
                return _Tensor(word, ())
            if word == "tensor":
                self.expect("<")
                dtype, d_offset = self.name("a data type")
                if dtype not in _DTYPES:
                    self.fail(f"unknown data type {dtype!r} (known: {', '.join(_DTYPES)})", d_offset)
                self.expect(",")
                shape = self.shape()
                self.expect(">")
                try:
                    limits.check_tensor(shape, _ITEMSIZE[dtype], f"a tensor<{dtype}>")
                except MLCParametersError as e:  # named where the type starts, not where the parser has read to
                    self.fail(e.message, offset)
                return _Tensor(dtype, shape)
            if word in ("list", "tuple", "dict", "state"):
                self.expect("<")
                items = [self.type_()]
                length = None
                if word == "list":
                    self.expect(",")
                    length = None if self.at("?") and self.next() else self.integer("a list length", 0, 1 << 62)
                elif word == "dict":
                    self.expect(",")
                    items.append(self.type_())
                elif word == "tuple":
                    while self.at(","):
                        self.next()
                        items.append(self.type_())
                self.expect(">")
                if word == "state" and not isinstance(items[0], _Tensor):
                    self.fail("a state must wrap a tensor type", offset)
                return _Compound(word, tuple(items), length)
        self.fail(f"unknown type {word!r} (expected tensor<...>, list<...>, tuple<...>, dict<...>, state<...> or a data type)", offset)

    def shape(self) -> tuple:
        self.expect("[", "to open a shape")
        dims = []
        if not self.at("]"):
            while True:
                if self.at("?"):
                    self.next()
                    dims.append(None)
                else:
                    dims.append(self.integer("a dimension", 0, 1 << 62))
                if not self.at(","):
                    break
                self.next()
        self.expect("]", "to close a shape")
        return tuple(dims)

    def integer(self, what: str, low: int, high: int) -> int:
        negative = self.at("-") and self.next()
        kind, value, offset = self.next()
        if kind != "number" or not re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]+", value):
            self.fail(f"expected {what} (an integer), found {self.show((kind, value, offset))}", offset)
        n = _int(value) * (-1 if negative else 1)
        if not low <= n <= high:
            self.fail(f"{what} {_short(value, negative)} is outside [{low}, {high}]", offset)
        return n

    def value_type(self, t, shape_override=None):
        """The ``MIL.ValueType`` of a parsed type."""
        vt = self.mil.ValueType()
        if isinstance(t, _Tensor):
            tt = vt.tensorType
            tt.dataType = self.mil.DataType.Value(_DTYPES[t.dtype][0])
            shape = t.shape if shape_override is None else shape_override
            tt.rank = len(shape)
            for d in shape:
                dim = tt.dimensions.add()
                if d is None:
                    dim.unknown.variadic = False
                else:
                    dim.constant.size = d
        elif t.kind == "list":
            vt.listType.type.CopyFrom(self.value_type(t.items[0]))
            if t.length is None:
                vt.listType.length.unknown.variadic = False
            else:
                vt.listType.length.constant.size = t.length
        elif t.kind == "tuple":
            for item in t.items:
                vt.tupleType.types.add().CopyFrom(self.value_type(item))
        elif t.kind == "dict":
            vt.dictionaryType.keyType.CopyFrom(self.value_type(t.items[0]))
            vt.dictionaryType.valueType.CopyFrom(self.value_type(t.items[1]))
        else:  # state
            vt.stateType.wrappedType.CopyFrom(self.value_type(t.items[0]))
        return vt

    # -- literals ----------------------------------------------------------------------------
    def literal(self):
        """``type(value)``: a ``MIL.Value``."""
        offset = self.peek()[2]
        t = self.type_()
        self.expect("(", "to open a value")
        value = self.value(t, offset)
        self.expect(")", "to close a value")
        return value

    def value(self, t, offset: int):
        """A value of type ``t`` (the text between a literal's parentheses, or an element)."""
        with self.nest(offset):
            if self.typed_literal_ahead():
                return self.literal()  # a typed element, as in ``[fp16(1), fp16(2)]``
            if isinstance(t, _Tensor):
                if self.at("BLOBFILE"):
                    return self.blobfile(t)
                return self.tensor_value(t)
            v = self.mil.Value()
            v.type.CopyFrom(self.value_type(t))
            if t.kind == "list":
                for item in self.sequence("[", "]", lambda o: self.value(t.items[0], o)):
                    v.immediateValue.list.values.add().CopyFrom(item)
                if t.length is not None and len(v.immediateValue.list.values) != t.length:
                    self.fail(f"a list<..., {t.length}> holds {len(v.immediateValue.list.values)} values", offset)
            elif t.kind == "tuple":
                items = self.sequence("(", ")", lambda o, it=iter(t.items): self.value(next(it, t.items[-1]), o))
                if len(items) != len(t.items):
                    self.fail(f"a tuple of {len(t.items)} types holds {len(items)} values", offset)
                for item in items:
                    v.immediateValue.tuple.values.add().CopyFrom(item)
            elif t.kind == "dict":
                for key, val in self.sequence("{", "}", lambda o: self.pair(t, o)):
                    kv = v.immediateValue.dictionary.values.add()
                    kv.key.CopyFrom(key)
                    kv.value.CopyFrom(val)
            else:
                self.fail("a state has no literal value", offset)
            return v

    def typed_literal_ahead(self) -> bool:
        kind, value, _ = self.peek()
        return kind == "name" and value in _TYPE_KEYWORDS and (self.at("(", 1) or self.at("<", 1))

    def sequence(self, open_: str, close: str, item) -> list:
        self.expect(open_)
        items = []
        if not self.at(close):
            while True:
                items.append(item(self.peek()[2]))
                if not self.at(","):
                    break
                self.next()
        self.expect(close)
        return items

    def pair(self, t, offset: int):
        self.expect("{", "to open a key-value pair")
        key = self.value(t.items[0], offset)
        self.expect(",")
        val = self.value(t.items[1], offset)
        self.expect("}", "to close a key-value pair")
        return key, val

    def nested(self, offset: int):
        """A scalar or a nested ``[...]`` list of scalars, as Python lists of ``(token, negative)``."""
        if self.at("["):
            with self.nest(offset):
                return self.sequence("[", "]", self.nested)
        if self.peek()[1] in _DTYPES and self.at("(", 1):  # a typed scalar, as in ``[fp16(1), fp16(2)]``
            self.next()
            self.next()
            scalar = self.nested(offset)
            self.expect(")", "to close a typed scalar")
            if isinstance(scalar, list):
                self.fail("a typed scalar holds a list", offset)
            return scalar
        negative = bool(self.at("-") and self.next())
        token = self.next()
        if token[0] not in ("number", "string", "name"):
            self.fail(f"expected a value, found {self.show(token)}", token[2])
        return (token, negative)

    def tensor_value(self, t: _Tensor):
        offset = self.peek()[2]
        data = self.nested(offset)
        shape, flat = _flatten(data)
        if shape is None:
            self.fail("a nested list of values is ragged (its rows differ in length)", offset)
        declared = t.shape
        if shape != () and len(shape) != len(declared) and len(shape) == 1 and None not in declared:
            if shape[0] != math.prod(declared):
                self.fail(f"{shape[0]} values do not fill a tensor<{t.dtype}, {_show(declared)}>", offset)
            shape = declared  # a flat list for a higher-rank tensor
        elif shape == () and declared != ():
            shape = None  # a splat: one value for the whole tensor (ir.py expands it)
        elif len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
            self.fail(f"a value of shape {_show(shape)} does not match tensor<{t.dtype}, {_show(declared)}>", offset)
        if shape is None and None in declared:
            self.fail(f"one value cannot fill tensor<{t.dtype}, {_show(declared)}> of unknown shape", offset)
        values = [self.scalar(t.dtype, token, negative) for token, negative in flat]
        v = self.mil.Value()
        v.type.CopyFrom(self.value_type(t, declared if shape is None else shape))
        _store(v.immediateValue.tensor, t.dtype, values)
        return v

    def scalar(self, dtype: str, token, negative: bool):
        kind, text, offset = token
        sign = -1 if negative else 1
        if dtype == "string":
            if kind != "string" or negative:
                self.fail(f"expected a string, found {self.show(token)}", offset)
            return self.unescape(text[1:-1], offset)
        if dtype == "bool":
            if kind == "name" and text in ("true", "false") and not negative:
                return text == "true"
            if kind == "number" and text in ("0", "1") and not negative:
                return text == "1"
            self.fail(f"expected true or false, found {self.show(token)}", offset)
        if dtype in _INT_RANGES:
            if kind != "number" or not re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]+", text):
                self.fail(f"expected an integer for {dtype}, found {self.show(token)}", offset)
            n = sign * _int(text)
            low, high = _INT_RANGES[dtype]
            if not low <= n <= high:
                self.fail(f"{_short(text, negative)} is outside the range of {dtype} [{low}, {high}]", offset)
            return n
        # floats
        if kind == "name" and text in ("inf", "nan", "infinity", "NaN", "INF", "NAN"):
            return sign * float(text.lower().replace("infinity", "inf"))
        if kind != "number":
            self.fail(f"expected a number for {dtype}, found {self.show(token)}", offset)
        try:
            x = float.fromhex(text) if text[:2] in ("0x", "0X") else float(text)
        except (ValueError, OverflowError) as e:
            self.fail(f"{text!r} is not a {dtype} number ({e})", offset)
        return sign * x

    def unescape(self, body: str, offset: int) -> str:
        if "\\" not in body:
            return body

        def one(m):
            e = m.group(1)
            if e[0] in "xuU" and len(e) > 1:
                code = int(e[1:], 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    self.fail(f"escape \\{e} is not a Unicode code point", offset)
                return chr(code)
            if e[0] in "01234567":
                return chr(int(e, 8))
            if e in _ESCAPES:
                return _ESCAPES[e]
            self.fail(f"unknown escape \\{e} in a string", offset)

        return _ESCAPE.sub(one, body)

    def blobfile(self, t: _Tensor):
        _, offset = self.name("BLOBFILE")
        if None in t.shape:
            self.fail(f"a BLOBFILE value needs a known shape, not tensor<{t.dtype}, {_show(t.shape)}>", offset)
        fields = {}
        for key, value in self.sequence("(", ")", lambda o: self.keyword_literal()):
            if key in fields or key not in ("path", "offset"):
                self.fail(f"BLOBFILE takes path and offset once each, not {key!r}", offset)
            fields[key] = value
        if set(fields) != {"path", "offset"}:
            self.fail("BLOBFILE needs both path = string(...) and offset = uint64(...)", offset)
        path = _single(fields["path"], "strings")
        where_offset = _single(fields["offset"], "longInts")
        if path is None or not isinstance(path, (str, bytes)):
            self.fail("BLOBFILE's path must be a string", offset)
        if where_offset is None or where_offset < 0:
            self.fail("BLOBFILE's offset must be a non-negative integer (uint64)", offset)
        path = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
        if not path.startswith(MODEL_PATH_PREFIX):
            self.fail(f"BLOBFILE path {path!r} does not start with {MODEL_PATH_PREFIX!r}", offset)
        if self.model_dir is not None:
            try:
                inside(self.model_dir, path[len(MODEL_PATH_PREFIX) :], "BLOBFILE")
            except MLCIOError as e:
                self.fail(f"BLOBFILE path {path!r} leaves the model folder ({e.message})", offset)
        v = self.mil.Value()
        v.type.CopyFrom(self.value_type(t))
        v.blobFileValue.fileName = path
        v.blobFileValue.offset = where_offset
        return v

    def keyword_literal(self):
        key, _ = self.name("a keyword")
        self.expect("=")
        return key, self.literal()

    # -- structure ---------------------------------------------------------------------------
    def params(self) -> list:
        """``(type name, ...)`` as ``MIL.NamedValueType``s."""
        out = []
        for t, name in self.sequence("(", ")", lambda o: self.typed_name()):
            nvt = self.mil.NamedValueType(name=name)
            nvt.type.CopyFrom(self.value_type(t))
            out.append(nvt)
        return out

    def typed_name(self):
        t = self.type_()
        name, _ = self.name("a value name")
        return t, name

    def attributes(self, target) -> None:
        offset = self.peek()[2]
        for key, value in self.sequence("[", "]", lambda o: self.keyword_literal()):
            if key in target:
                self.fail(f"attribute {key!r} is given twice", offset)
            target[key].CopyFrom(value)

    def body(self, block) -> None:
        """``{ statements } -> (outputs)`` into a ``MIL.Block``."""
        self.expect("{", "to open a block")
        while not self.at("}"):
            if self.peek()[0] == "end":
                self.fail("the file ends inside a block")
            self.operation(block.operations.add())
        self.next()
        self.expect("->", "after a block")
        block.outputs.extend(name for name in self.sequence("(", ")", lambda o: self.name("an output name")[0]))

    def operation(self, op) -> None:
        offset = self.peek()[2]
        if not (self.peek()[0] == "name" and self.at("(", 1)):
            outputs = [self.typed_name()]
            while self.at(","):
                self.next()
                outputs.append(self.typed_name())
            self.expect("=", "after an operation's outputs")
            for t, name in outputs:
                o = op.outputs.add(name=name)
                o.type.CopyFrom(self.value_type(t))
        op.type, type_offset = self.name("an operation type")
        for key, bindings in self.sequence("(", ")", lambda o: self.input()):
            if key in op.inputs:
                self.fail(f"input {key!r} of {op.type} is given twice", type_offset)
            op.inputs[key].arguments.extend(bindings)
        if self.at("["):
            self.attributes(op.attributes)
        while not self.at(";"):
            kind, value, _ = self.peek()
            if kind == "end":
                self.fail(f"the file ends inside the {op.type} operation that starts here", offset)
            if kind != "name" and value not in ("(", "{"):
                self.fail(f"expected ';' to end the {op.type} operation, found {self.show(self.peek())}")
            with self.nest(self.peek()[2]):
                self.block(op)
        self.next()
        if self.sources is not None:
            name = _single(op.attributes["name"], "strings") if "name" in op.attributes else None
            name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            line, column = self.location(type_offset)
            key = (self.function_name, name or (op.outputs[0].name if op.outputs else op.type))
            self.sources.setdefault(key, f"{self.where}:{line}:{column}")

    def block(self, op) -> None:
        """A nested block: ``name? (params)? { ... } -> (...)``."""
        label = ""
        if self.peek()[0] == "name":
            label = self.next()[1]
        block = self.mil.Block()
        if self.at("("):
            block.inputs.extend(self.params())
        self.body(block)
        if op.type == "while_loop" and label.endswith("cond") and len(op.blocks) == 1:
            op.blocks.insert(0, block)  # the proto's order: condition, then body
        else:
            op.blocks.append(block)

    def input(self):
        key, _ = self.name("an input name")
        self.expect("=")
        if self.at("("):
            bindings = self.sequence("(", ")", lambda o: self.binding())
            if not bindings:
                self.fail(f"input {key!r} is an empty tuple")
            return key, bindings
        return key, [self.binding()]

    def binding(self):
        arg = self.mil.Argument.Binding()
        kind, value, _ = self.peek()
        if kind == "name" and (value not in _TYPE_KEYWORDS or not (self.at("(", 1) or self.at("<", 1))):
            arg.name = self.next()[1]
        else:
            arg.value.CopyFrom(self.literal())
        return arg

    def function(self, program) -> None:
        self.expect("func")
        name, offset = self.name("a function name")
        if name in program.functions:
            self.fail(f"function {name!r} is defined twice", offset)
        self.expect("<")
        opset_text, opset_offset = self.name("an opset (ios15 ... ios18)")
        if opset_text not in OPSETS:
            self.fail(f"unknown opset {opset_text!r} (known: {', '.join(OPSETS)})", opset_offset)
        self.expect(">")
        fn = program.functions[name]
        self.function_name = name
        fn.opset = OPSETS[opset_text]
        fn.inputs.extend(self.params())
        if self.at("["):
            self.attributes(fn.attributes)
        with self.nest(offset):
            self.body(fn.block_specializations[fn.opset])
        self.expect(";", "after a function")

    def program(self):
        program = self.mil.Program()
        self.expect("program", "(a text MIL file starts with program(1.x))")
        self.expect("(")
        kind, version, offset = self.next()
        if kind != "number" or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", version):
            self.fail(f"expected the program version (like 1.0), found {self.show((kind, version, offset))}", offset)
        major = _int(version.split(".")[0])
        if major != 1:
            self.fail(f"program version {_short(version, False)} is unknown (mlc reads version 1.x)", offset)
        program.version = major
        self.expect(")")
        if self.at("["):
            self.attributes(program.attributes)
        self.expect("{", "to open the program")
        while self.at("func"):
            self.function(program)
        self.expect("}", "to close the program (or 'func' for another function)")
        if self.peek()[0] != "end":
            self.fail(f"unexpected {self.show(self.peek())} after the end of the program")
        if not program.functions:
            self.fail("the program has no function", offset)
        return program


def _int(text: str) -> int:
    """An integer literal; one longer than any MIL integer stands for one out of every range."""
    if len(text) > 40:
        return 1 << 200
    return int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)


def _short(text: str, negative: bool) -> str:
    return ("-" if negative else "") + (text if len(text) <= 24 else text[:20] + "...")


def _show(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _flatten(data) -> tuple[tuple | None, list]:
    """The shape of a rectangular nested list and its leaves in order; ragged lists have no shape."""
    if not isinstance(data, list):
        return (), [data]
    if not data:
        return (0,), []
    shapes, flat = [], []
    for item in data:
        shape, leaves = _flatten(item)
        shapes.append(shape)
        flat.extend(leaves)
    if any(s is None or s != shapes[0] for s in shapes):
        return None, flat  # ragged
    return (len(data), *shapes[0]), flat


def _single(value, field: str):
    tensor = value.immediateValue.tensor
    kind = tensor.WhichOneof("value")
    if kind is None:
        return None
    values = getattr(tensor, kind).values
    if kind == "bytes" or len(values) != 1:
        return None
    x = values[0]
    if field == "longInts" and kind in ("ints", "longInts"):
        return int(x)
    if field == "strings" and kind == "strings":
        return x
    return None


def _store(tensor, dtype: str, values: list) -> None:
    """Put ``values`` into a ``MIL.TensorValue`` in the field coremltools uses for ``dtype``."""
    _, numpy_dtype, field, bits = _DTYPES[dtype]
    if field == "strings":
        tensor.strings.values.extend(v.encode("utf-8") for v in values)
    elif field == "bytes":
        if bits:
            packed = np.packbits(
                ((np.asarray(values, dtype=np.int64).reshape(-1, 1) % (1 << bits)) >> np.arange(bits)) & 1, bitorder="little"
            )
            raw = packed.tobytes()[: packed_size(len(values), bits)]
        else:
            dt = getattr(ml_dtypes, numpy_dtype) if isinstance(numpy_dtype, str) else numpy_dtype
            with np.errstate(over="ignore", invalid="ignore"):
                raw = np.asarray(values, dtype=np.float64 if np.dtype(dt).kind in "fV" else np.int64).astype(dt).tobytes()
        tensor.bytes.values = raw
        if not values:
            tensor.bytes.SetInParent()
    else:
        target = getattr(tensor, field)
        if numpy_dtype is np.float32:
            with np.errstate(over="ignore"):
                values = np.asarray(values, dtype=np.float64).astype(np.float32).tolist()
        target.values.extend(values)
        if not values:
            target.SetInParent()


def parse_mil_text(text: str, where: str = "<model.mil>", model_dir: str | None = None, sources: dict | None = None):
    """Parse text MIL into a ``MIL.proto`` ``Program``.

    ``model_dir`` (the compiled folder) is what ``@model_path`` names; a ``BLOBFILE`` whose path
    leaves it is refused. Raises ``MILSyntaxError`` (an ``MLCIOError``) naming the line and column.
    ``sources``, when given, receives ``"file:line:column"`` of each operation's type, keyed by
    (function name, operation name), for errors raised later (an op mlc cannot run).
    """
    parser = _Parser(text, where, model_dir, sources)
    try:
        return parser.program()
    except MILSyntaxError:
        raise
    except MLCParametersError as e:  # a declared tensor beyond the size limit
        line, column = parser.location(parser.buffer[0][2] if parser.buffer else len(text))
        raise MILSyntaxError(f"{where}:{line}:{column}: {e.message}", where, line, column) from e
    except RecursionError as e:  # only if MAX_NESTING were raised past Python's stack
        raise MILSyntaxError(f"{where}: nests too deeply to parse", where) from e


def read_mil_file(path: str | os.PathLike, model_dir: str | None = None, where: str | None = None, sources: dict | None = None):
    """Read and parse a ``model.mil`` file (UTF-8) into a ``MIL.proto`` ``Program``."""
    path = os.fspath(path)
    where = where or path
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the read forever
        raise MLCIOError(f"{where}: not a regular file (a folder, FIFO or device), so not read")
    try:
        size = os.path.getsize(path)
        if size > MAX_MIL_BYTES:
            raise MLCIOError(f"{where}: {size} bytes is larger than any text MIL program mlc reads ({MAX_MIL_BYTES} bytes)")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MLCIOError(f"{where}: cannot be read ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise MILSyntaxError(f"{where}:{line}:{column}: the file is not UTF-8 text ({e.reason})", where, line, column) from e
    return parse_mil_text(text, where, model_dir, sources)
