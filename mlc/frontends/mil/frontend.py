"""ML Program (``mlProgram``) front end: spec -> MIL IR -> ``Program`` (or a ``Summary`` for ``mlc info``)."""

from __future__ import annotations

from collections import Counter

from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.program.program import Interface, Program, Summary
from mlc.features import FeatureDescriptions
from mlc.io.spec import LoadedSpec
from mlc.frontends.mil.ir import Function, TensorType, parse_program
from mlc.frontends.mil.ir import Program as MILProgram
from mlc.frontends.mil.lower import lower_function, unsupported_ops
from mlc.frontends.mil.verify import verify_default_shapes, verify_function, verify_interface


def select_function(loaded: LoadedSpec, program: MILProgram, function_name: str | None):
    """The function to run and its description (multifunction packages list several)."""
    desc = loaded.spec.description
    if function_name is None:
        function_name = desc.defaultFunctionName or ("main" if "main" in program.functions else None)
        if function_name is None and len(program.functions) == 1:
            function_name = next(iter(program.functions))
    if function_name not in program.functions:
        raise MLCParametersError(
            f"{loaded.name}: no function {function_name!r}; the program defines {sorted(program.functions)}"
        )
    fdesc = desc
    for f in desc.functions:
        if f.name == function_name:
            fdesc = f
    return program.functions[function_name], fdesc


def _program_input_dtypes(function: Function) -> dict:
    out = {}
    for nv in function.inputs:
        if isinstance(nv.type, TensorType):
            out[nv.name] = nv.type.dtype
    return out


def _interface(loaded: LoadedSpec, program: MILProgram, function: Function, fdesc) -> Interface:
    return Interface(
        inputs=FeatureDescriptions.from_proto(fdesc.input),
        outputs=FeatureDescriptions.from_proto(fdesc.output),
        states=FeatureDescriptions.from_proto(fdesc.state),
        predicted_feature_name=fdesc.predictedFeatureName or None,
        predicted_probabilities_name=fdesc.predictedProbabilitiesName or None,
        input_dtypes=_program_input_dtypes(function),
        function_name=function.name,
        functions=tuple(program.functions),
    )


def _parsed(loaded: LoadedSpec, function_name: str | None, *, missing_weights: bool = False):
    program = parse_program(loaded.spec.mlProgram, loaded.model_dir, loaded.name, missing_weights=missing_weights)
    function, fdesc = select_function(loaded, program, function_name)
    interface = _interface(loaded, program, function, fdesc)
    verify_function(function, loaded.name)
    verify_interface(function, interface.inputs, interface.outputs, interface.states, loaded.name)
    return function, interface


def describe(loaded: LoadedSpec, *, function_name: str | None) -> Summary:
    """The model's interface and op histogram, nothing lowered (``mlc info``)."""
    function, interface = _parsed(loaded, function_name, missing_weights=True)
    histogram = Counter(op.type for op in function.iter_operations())
    return Summary(interface, f"mlProgram ({function.opset})", dict(histogram.most_common()), unsupported_ops(function))


def build(loaded: LoadedSpec, *, function_name: str | None, fp16_as_fp32: bool) -> Program:
    function, interface = _parsed(loaded, function_name)
    missing = unsupported_ops(function)
    if missing:
        first = next(op for op in function.iter_operations() if op.type in missing)
        others = f"; all unsupported ops: {', '.join(f'{k} (x{v})' for k, v in missing.items())}" if len(missing) > 1 else ""
        source = (loaded.sources or {}).get((function.name, first.name))
        raise MLCUnsupportedError(
            f"{loaded.name}: MIL op {first.type!r} (operation {first.name!r}, function {function.name!r}, "
            f"opset {function.opset}{', at ' + source if source else ''}) is not supported by mlc yet{others}"
        )
    lowered = lower_function(function, model=loaded.name, fp16_as_fp32=fp16_as_fp32)
    verify_default_shapes(function, lowered.fn, lowered.params, {**interface.inputs, **interface.states}, fp16_as_fp32,
                          loaded.name)
    histogram = Counter(op.type for op in function.iter_operations())
    return Program(
        fn=lowered.fn,
        params=lowered.params,
        interface=interface,
        kind=f"mlProgram ({function.opset})",
        param_storage=lowered.storage,
        eager=lowered.eager,
        op_histogram=dict(histogram.most_common()),
    )
