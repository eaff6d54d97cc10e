"""Check a parsed MIL function's structure before anything runs.

MIL is SSA in program order (``MIL.proto``: "an operation's inputs must be defined by an
earlier operation of the block, an enclosing block, or be inputs of the block or function").
A hostile or corrupt file can break that: read a name nothing defines, read a name defined
only later (a cycle, since the program runs in order), define a name twice, or end a block
with an output it does not have. Core ML's validator refuses such programs at load; so does
mlc, naming the operation and the value, instead of failing somewhere inside a trace.

Shapes: an op whose operands must share a shape (``stack``) is refused at load when the
declared types already differ, or when they differ at the inputs' default shapes, which Core ML
compiles the program for (``verify_default_shapes``, after lowering).
"""

from __future__ import annotations

import jax
import numpy as np

from mlc._errors import MLCParametersError
from mlc.frontends.mil.ir import Block, Function, StateType, TensorType
from mlc.frontends.mil.registry import InvalidProgram
from mlc.runtime import checks, dtypes, observe


def verify_function(function: Function, where: str) -> None:
    """Raise ``MLCParametersError`` unless every value ``function`` reads is defined before it."""
    defined_anywhere = _all_definitions(function)
    scope = {nv.name for nv in function.inputs}
    _verify_block(function.block, scope, defined_anywhere, f"{where}: function {function.name!r}")
    verify_declared_shapes(function, where)


def _all_definitions(function: Function) -> set[str]:
    names = {nv.name for nv in function.inputs}
    for op in function.iter_operations():
        names.update(o.name for o in op.outputs)
        for block in op.blocks:
            names.update(nv.name for nv in block.inputs)
    return names


def _verify_block(block: Block, outer: set[str], defined_anywhere: set[str], where: str) -> None:
    scope = set(outer)
    for nv in block.inputs:
        _define(nv.name, scope, f"{where}: block input")
    for op in block.operations:
        what = f"{where}: operation {op.name!r} ({op.type})"
        for key, bindings in op.inputs.items():
            for b in bindings:
                if b.name is not None and b.name not in scope:
                    raise MLCParametersError(_undefined(what, f"input {key!r}", b.name, defined_anywhere))
        for inner in op.blocks:
            _verify_block(inner, scope, defined_anywhere, what)
        for out in op.outputs:
            _define(out.name, scope, what)
    for name in block.outputs:
        if name not in scope:
            raise MLCParametersError(_undefined(where, "block output", name, defined_anywhere))


def _define(name: str, scope: set[str], what: str) -> None:
    if not name:
        raise MLCParametersError(f"{what} defines a value with an empty name")
    if name in scope:
        raise MLCParametersError(f"{what} defines {name!r} again; a MIL value is defined once")
    scope.add(name)


def _undefined(what: str, role: str, name: str, defined_anywhere: set[str]) -> str:
    if name in defined_anywhere:
        return (
            f"{what}: {role} reads {name!r}, which is defined only after it or in a block it cannot see "
            f"(the program has a cycle or is out of order)"
        )
    return f"{what}: {role} reads {name!r}, which nothing in the program defines"



def verify_interface(function: Function, inputs, outputs, states, where: str) -> None:
    """The model description (``FeatureDescriptions`` of inputs, outputs and states) and the
    function must agree: every described input and state is a function input whose declared
    shape fits the description, every function input is described, and every described output
    is one the function returns."""
    program_inputs = {nv.name: nv.type for nv in function.inputs}
    described = {**inputs, **states}
    for name, feature in described.items():
        if name not in program_inputs:
            raise MLCParametersError(
                f"{where}: the model description declares input {name!r}, but function {function.name!r} "
                f"takes only {sorted(program_inputs)}"
            )
        _check_type(feature, program_inputs[name], f"{where}: input {name!r}")
        _check_shape(feature, program_inputs[name], f"{where}: input {name!r}")
    undescribed = [n for n in program_inputs if n not in described]
    if undescribed:
        raise MLCParametersError(
            f"{where}: function {function.name!r} takes input {undescribed[0]!r}, which the model description does not declare"
        )
    returned = set(function.block.outputs)
    for name in outputs:
        if name not in returned:
            raise MLCParametersError(
                f"{where}: the model description declares output {name!r}, but function {function.name!r} "
                f"returns only {sorted(returned)}"
            )


def _check_type(feature, program_type, where: str) -> None:
    """A described multiarray, image or state is a numeric tensor in the program (a program
    taking a string tensor or a list there would receive an array it cannot hold)."""
    if feature.kind not in ("multiArray", "image", "state"):
        return
    wrapped = program_type.wrapped if isinstance(program_type, StateType) else program_type
    if not isinstance(wrapped, TensorType) or wrapped.dtype == "str":
        raise MLCParametersError(f"{where}: the model description declares a {feature.kind}, but the program's input is {wrapped}")


def _check_shape(feature, program_type, where: str) -> None:
    """A fixed multiarray or image shape in the description against the program's declared type
    (dimensions the program leaves unknown, and flexible descriptions, are not compared)."""
    wrapped = getattr(program_type, "wrapped", program_type)  # a state's tensor
    shape = getattr(wrapped, "shape", None)
    if shape is None or feature.shape_ranges is not None or feature.enumerated_shapes:
        return
    if feature.kind in ("multiArray", "state") and feature.shape and not feature.rank5_mapped:
        expected = tuple(feature.shape)
    elif feature.kind == "image":
        expected = (None, None) + tuple(feature.shape)  # (1, C, H, W): channels checked by the image path
        if len(shape) != 4:
            raise MLCParametersError(f"{where}: the description declares an image, but the program's input is {wrapped}")
    else:
        return
    if len(shape) != len(expected) or any(e is not None and d is not None and d != e for d, e in zip(shape, expected)):
        raise MLCParametersError(
            f"{where}: the model description declares shape {tuple(feature.shape)}, but the program declares {wrapped}"
        )


# -- ops whose inputs must agree in shape --------------------------------------------------------
#
# ``stack`` takes values of one shape (no broadcasting). Core ML checks it when it compiles the
# program at load, on the shapes it infers from the inputs' default shapes (a flexible input's
# description shape): coremltools' ``TestStack::test_stack_dynamic_range_dim`` expects a model
# stacking a (2, 3, RangeDim(default=2)) input with (2, 3, 4) ones to be refused even when every
# prediction feeds (2, 3, 4). mlc refuses it at load as well: from the declared types when they
# already differ (``verify_declared_shapes``), else by inferring the shapes at the defaults
# (``verify_default_shapes``); and at run time (the ``stack`` op) whatever the shapes.

_SAME_SHAPE_OPS = {"stack": "values"}


def _declared_types(function: Function) -> dict:
    types = {nv.name: nv.type for nv in function.inputs}
    for op in function.iter_operations():
        types.update((o.name, o.type) for o in op.outputs)
        for block in op.blocks:
            types.update((nv.name, nv.type) for nv in block.inputs)
    return types


def _declared_shape(binding, types: dict):
    """The declared shape of an argument (None entries unknown), or None when its rank is unknown."""
    if binding.name is None:
        return tuple(np.shape(binding.value))
    t = types.get(binding.name)
    return t.shape if isinstance(t, TensorType) else None


def _same_shape_operands(function: Function, types: dict):
    """``(op, [(label, declared shape or None)])`` for each op whose operands must share a shape."""
    for op in function.iter_operations():
        key = _SAME_SHAPE_OPS.get(op.type)
        if key is None or key not in op.inputs:
            continue
        yield op, [(b.name or "a constant", _declared_shape(b, types)) for b in op.inputs[key]]


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def verify_declared_shapes(function: Function, where: str) -> None:
    """Refuse a ``stack`` whose values' declared shapes differ in rank or in a size both declare."""
    for op, operands in _same_shape_operands(function, _declared_types(function)):
        known = [(label, shape) for label, shape in operands if shape is not None]
        for _, shape in known[1:]:
            first = known[0][1]
            if len(shape) != len(first) or any(a is not None and b is not None and a != b for a, b in zip(first, shape)):
                listed = ", ".join(f"{_fmt(s)} ({lab!r})" for lab, s in known)
                raise MLCParametersError(
                    f"{where}: function {function.name!r}: operation {op.name!r} ({op.type}): its values must all have "
                    f"the same shape, but the program declares {listed}"
                )


def _needs_default_shapes(function: Function) -> bool:
    """Some ``stack`` whose values' declared shapes do not settle the question (an unknown size)."""
    for _, operands in _same_shape_operands(function, _declared_types(function)):
        shapes = [shape for _, shape in operands]
        if any(s is None or None in s for s in shapes):
            return True
    return False


def _default_input(nv, feature):
    """The input ``nv`` at its default shape, as ``(shape, MIL dtype)``; None when unknown."""
    t = nv.type.wrapped if isinstance(nv.type, StateType) else nv.type
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    shape = list(t.shape)
    if None in shape and feature is not None:
        default = tuple(feature.shape)
        if feature.kind == "image" and len(shape) == 4 and len(default) == 2:
            default = (shape[0], shape[1]) + default
        if len(default) != len(shape):
            return None
        shape = [d if d is not None else e for d, e in zip(shape, default)]
    if any(d is None or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape), t.dtype


def verify_default_shapes(function: Function, fn, params: dict, features: dict, fp16_as_fp32: bool, where: str) -> None:
    """Refuse, at load, a program whose ``stack`` gets values of different shapes when its inputs
    have their default shapes (a flexible input's description shape), as Core ML does when it
    compiles the program. The lowered ``fn`` is traced abstractly (``jax.eval_shape``: shapes,
    no data), only for programs where the declared types leave such a ``stack`` open. Any other
    failure of that trace (a data-dependent shape, say) is left to the prediction that meets it."""
    if not _needs_default_shapes(function):
        return
    defaults = {}
    for nv in function.inputs:
        found = _default_input(nv, features.get(nv.name))
        if found is None:
            return
        defaults[nv.name] = found
    with dtypes.precision(fp16_as_fp32):
        structs = {
            name: jax.ShapeDtypeStruct(shape, dtypes.compute_array_dtype(dtypes.NUMPY_DTYPES[dtype]))
            for name, (shape, dtype) in defaults.items()
        }
    try:
        with observe.observing(None), checks.not_collecting():
            jax.eval_shape(fn, params, structs)
    except MLCParametersError as e:
        if not isinstance(e.__cause__, InvalidProgram):
            return
        flexible = {n: s for n, (s, _) in defaults.items() if _flexible(function, n, features.get(n))}
        shown = flexible or {n: s for n, (s, _) in defaults.items()}
        raise MLCParametersError(
            f"{e.message}, at the inputs' default shapes {shown}, which Core ML compiles the program for when it loads it"
        ) from e
    except Exception:  # noqa: BLE001 - not this check's business; the prediction that meets it raises it
        return


def _flexible(function: Function, name: str, feature) -> bool:
    nv = next(v for v in function.inputs if v.name == name)
    t = nv.type.wrapped if isinstance(nv.type, StateType) else nv.type
    declared_open = isinstance(t, TensorType) and t.shape is not None and None in t.shape
    return declared_open or (feature is not None and (feature.shape_ranges is not None or bool(feature.enumerated_shapes)))
