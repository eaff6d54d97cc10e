"""Check a parsed MIL function's structure before anything runs.

MIL is SSA in program order (``MIL.proto``: "an operation's inputs must be defined by an
earlier operation of the block, an enclosing block, or be inputs of the block or function").
A hostile or corrupt file can break that: read a name nothing defines, read a name defined
only later (a cycle, since the program runs in order), define a name twice, or end a block
with an output it does not have. Core ML's validator refuses such programs at load; so does
mlc, naming the operation and the value, instead of failing somewhere inside a trace.
"""

from __future__ import annotations

from mlc._errors import MLCParametersError
from mlc.frontends.mil.ir import Block, Function


def verify_function(function: Function, where: str) -> None:
    """Raise ``MLCParametersError`` unless every value ``function`` reads is defined before it."""
    defined_anywhere = _all_definitions(function)
    scope = {nv.name for nv in function.inputs}
    _verify_block(function.block, scope, defined_anywhere, f"{where}: function {function.name!r}")


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
