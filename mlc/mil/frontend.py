"""ML Program (``mlProgram``) front end: spec -> IR -> lowered function + features."""

from __future__ import annotations

from collections import Counter

from mlc._errors import MLCParametersError, MLCUnsupportedError
from mlc.executable import Executable
from mlc.features import FeatureDescriptions
from mlc.format.spec import LoadedSpec
from mlc.mil.ir import Function, Program, TensorType, parse_program
from mlc.mil.lower import lower_function, unsupported_ops
from mlc.mil.verify import verify_function, verify_interface


def select_function(loaded: LoadedSpec, program: Program, function_name: str | None):
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


def build(loaded: LoadedSpec, *, function_name: str | None, fp16_as_fp32: bool, lower: bool = True) -> Executable:
    program = parse_program(loaded.spec.mlProgram, loaded.model_dir, loaded.name)
    function, fdesc = select_function(loaded, program, function_name)
    inputs = FeatureDescriptions.from_proto(fdesc.input)
    outputs = FeatureDescriptions.from_proto(fdesc.output)
    states = FeatureDescriptions.from_proto(fdesc.state)
    verify_function(function, loaded.name)
    verify_interface(function, inputs, outputs, states, loaded.name)
    histogram = Counter(op.type for op in function.iter_operations())
    missing = unsupported_ops(function)
    exe = Executable(
        fn=None,
        params={},
        inputs=inputs,
        outputs=outputs,
        states=states,
        function_name=function.name,
        functions=tuple(program.functions),
        predicted_feature_name=fdesc.predictedFeatureName or None,
        predicted_probabilities_name=fdesc.predictedProbabilitiesName or None,
        input_dtypes=_program_input_dtypes(function),
        op_histogram=dict(histogram.most_common()),
        unsupported=missing,
        kind=f"mlProgram ({function.opset})",
    )
    if not lower:
        return exe
    if missing:
        first = next(op for op in function.iter_operations() if op.type in missing)
        others = f"; all unsupported ops: {', '.join(f'{k} (x{v})' for k, v in missing.items())}" if len(missing) > 1 else ""
        raise MLCUnsupportedError(
            f"{loaded.name}: MIL op {first.type!r} (operation {first.name!r}, function {function.name!r}, "
            f"opset {function.opset}) is not supported by mlc yet{others}"
        )
    lowered = lower_function(function, model=loaded.name, fp16_as_fp32=fp16_as_fp32)
    exe.fn, exe.params, exe.eager = lowered.fn, lowered.params, lowered.eager
    exe.param_storage = lowered.storage
    return exe


