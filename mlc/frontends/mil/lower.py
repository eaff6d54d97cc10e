"""Lower a MIL function to a pure JAX function ``fn(params, inputs) -> outputs``.

* Weights are params: float constants with more than one element go into a params dict
  (keyed by the const's output name), so XLA compiles fast, ``jax.grad`` reaches them, and
  ``save`` can write them back. Scalars, integer, bool and string constants stay numpy.
* Compressed weights stay compressed: the data of ``constexpr_*`` ops (indices, LUTs, scales,
  masks; inputs from iOS18 on, attributes in iOS16/17) are params of whatever dtype, and the
  op decompresses them inside the jitted function. (As numpy constants XLA would fold the
  decompression at compile time and hold the dense weight.)
* Static vs traced: an op whose inputs are all static (numpy) is evaluated at trace time
  under ``jax.ensure_compile_time_eval`` and its result kept as numpy, so the shape
  arithmetic MIL programs do (``shape`` -> ``gather`` -> ``concat`` -> ``reshape``) folds away.
* Data-dependent shapes: an input an op declares ``static`` that turns out to be computed
  from the model's inputs raises ``DataDependentShapeError`` under tracing; ``Model`` then
  runs that model op by op (eager), where the value is concrete. Ops whose output shape
  depends on data whatever their inputs (``non_zero``) are marked ``eager`` up front.
* Debugging: ``MLC_DEBUG=1`` prints every op's outputs (shape, dtype), ``MLC_DEBUG=2`` also
  their range; ``MLC_LIMIT=n`` stops after the n-th op and returns its outputs. Both run the
  model op by op, without ``jit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCError, MLCParametersError
from mlc.runtime import checks, dtypes, observe
from mlc.runtime.interpreter import (
    STATES,
    Node,
    NodeLimitReached,
    node_done,
    program_call,
    run_node,
    static_argument,
)
from mlc.frontends.mil.ir import Block, Function, Operation, StateType, TensorType
from mlc.frontends.mil.ops.state import StateCell
from mlc.frontends.mil.registry import InvalidProgram, OpDef, lookup


@dataclasses.dataclass
class Lowered:
    fn: Callable[[dict, dict], dict]
    params: dict[str, np.ndarray]
    eager: bool  # some op has a data-dependent output shape: do not jit the whole function
    storage: dict[str, str] = dataclasses.field(default_factory=dict)


def _static_const(v: Any) -> Any:
    """A constant as computed inside: fp16 -> fp32 under that policy, int64 -> int32."""
    if isinstance(v, np.ndarray) and v.dtype != object:
        return v.astype(dtypes.compute_array_dtype(v.dtype), copy=False)
    if isinstance(v, list):
        return [_static_const(x) for x in v]
    return v


class FunctionLowering:
    """Holds the resolved op definitions and constants of one MIL function."""

    def __init__(self, function: Function, model: str, fp16_as_fp32: bool):
        self.function = function
        self.model = model
        self.fp16_as_fp32 = fp16_as_fp32
        self.defs: dict[int, OpDef] = {}
        static_names: set[str] = set()
        compressed_names: set[str] = set()
        for op in function.iter_operations():
            if op.type == "const":
                continue
            d = lookup(op.type, function.opset, op_name=op.name, model=model)
            self.defs[id(op)] = d
            for key, bindings in op.inputs.items():
                names = {b.name for b in bindings if b.name}
                if key in d.static:
                    static_names.update(names)
                elif is_constexpr(op):
                    compressed_names.update(names)
        self.params: dict[str, np.ndarray] = {}
        self._output_shapes: dict = {}  # (op, input signature) -> output shapes (``_check_output_sizes``)
        self.widened: set[str] = set()  # params kept fp16 as stored, widened to fp32 where read (``_param``)
        self.consts: dict[str, Any] = {}
        self.storage: dict[str, str] = {}  # params key -> the MIL dtype it is stored in, or "compressed"
        with dtypes.precision(fp16_as_fp32):
            for op in function.iter_operations():
                if is_constexpr(op):
                    static = self.defs[id(op)].static
                    for key, value in constexpr_attributes(op).items():
                        if _is_array(value) and key not in static:  # a static one (an iOS16 shape) stays numpy
                            self.params[attribute_param(op, key)] = self._param_array(attribute_param(op, key), value)
                            self.storage[attribute_param(op, key)] = "compressed"
                if op.type != "const":
                    continue
                if "val" not in op.attributes or len(op.outputs) != 1:
                    raise MLCError(f"{model}: const operation {op.name!r} has no value")
                name, value = op.outputs[0].name, op.attributes["val"]
                if self._is_param(name, value, static_names) or (name in compressed_names and _is_array(value)):
                    self.params[name] = self._param_array(name, value)
                    self.storage[name] = "compressed" if name in compressed_names else _storage_name(value.dtype)
                else:
                    self.consts[name] = _static_const(value)

    def _param_array(self, name: str, value: np.ndarray) -> np.ndarray:
        """``value`` as a param. An fp16 weight computed in fp32 stays fp16 (a view of the
        memory-mapped weight file, which the device takes without copying on CPU): the program
        widens it where it reads it (``_param``), which ``mlc.runtime.hoist`` does once, not at load."""
        dtype = dtypes.compute_array_dtype(value.dtype)
        if value.dtype == np.float16 and dtype == np.float32:
            self.widened.add(name)
            return value
        return np.asarray(value, dtype=dtype)

    def _param(self, params: dict, name: str) -> Any:
        """The param ``name`` as the program computes with it: fp32 for an fp16 weight kept as
        stored; a param given already widened (``Model.params``, trained values) as it is."""
        value = params[name]
        return value.astype(np.float32) if name in self.widened and value.dtype == np.float16 else value

    @staticmethod
    def _is_param(name: str, value: Any, static_names: set[str]) -> bool:
        return (
            isinstance(value, np.ndarray)
            and value.dtype != object
            and dtypes.is_float(value.dtype)
            and value.size > 1
            and name not in static_names
        )

    @property
    def eager(self) -> bool:
        return any(d.eager for d in self.defs.values())

    # -- running ---------------------------------------------------------------------------
    @property
    def state_names(self) -> list[str]:
        return [nv.name for nv in self.function.inputs if isinstance(nv.type, StateType)]

    def __call__(self, params: dict, inputs: dict) -> dict:
        """Outputs by name; a stateful function also returns its final states under ``STATES``,
        and one with run-time checks (``mlc.runtime.checks``) their flags under ``CHECKS``."""
        with dtypes.precision(self.fp16_as_fp32), checks.collecting() as flags:
            env: dict[str, Any] = dict(inputs)
            cells = {name: StateCell(name, inputs[name]) for name in self.state_names}
            env.update(cells)
            try:
                with program_call():
                    self.run_block(self.function.block, env, params)
            except NodeLimitReached as stop:
                return stop.outputs
            outputs = {name: env[name] for name in self.function.block.outputs}
            for name, value in outputs.items():
                if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":  # strings: no Core ML output holds them
                    raise MLCParametersError(f"{self.model}: function {self.function.name!r} returns {name!r} as a string tensor")
            if cells:
                outputs[STATES] = {name: cell.value for name, cell in cells.items()}
            if flags:
                outputs[checks.CHECKS] = dict(flags)
            return outputs

    def run_block(self, block: Block, env: dict, params: dict) -> list:
        """Run ``block`` in ``env`` (updated in place); return its outputs in order."""
        for op in block.operations:
            if op.type == "const":
                name = op.outputs[0].name
                env[name] = self._param(params, name) if name in params else self.consts[name]
                continue
            results = self.run_op(op, env, params)
            for out, value in zip(op.outputs, results):
                env[out.name] = value
            node_done(op.type, op.name, {o.name: v for o, v in zip(op.outputs, results)})
        return [env[name] for name in block.outputs]

    def _argument(self, op: Operation, key: str, d: OpDef, env: dict) -> Any:
        values = []
        for b in op.inputs[key]:
            if b.name is None:
                values.append(_static_const(b.value))
            elif b.name in env:
                values.append(env[b.name])
            else:
                raise MLCError(f"{self.model}: operation {op.name!r} ({op.type}) reads {b.name!r}, which is not defined before it")
        value = tuple(values) if key in d.variadic else (values[0] if len(values) == 1 else tuple(values))
        if key in d.static:
            value = static_argument(value, f"{self.model}: operation {op.name!r} ({op.type})", repr(key))
        return value

    def run_op(self, op: Operation, env: dict, params: dict) -> tuple:
        d = self.defs[id(op)]
        kwargs = {key: self._argument(op, key, d, env) for key in op.inputs}
        if is_constexpr(op):
            for key, value in constexpr_attributes(op).items():
                param = attribute_param(op, key)
                kwargs[key] = self._param(params, param) if param in params else _static_const(value)
        if op.blocks:
            kwargs["_blocks"] = [self._block_runner(b, env, params) for b in op.blocks]
        what = f"{self.model}: operation {op.name!r} ({op.type})"

        def compute():
            with checks.operation(what):
                try:
                    return d.fn(**kwargs)
                except InvalidProgram as e:
                    raise MLCParametersError(f"{what}: {e}") from e

        keys = sorted(kwargs)
        node = Node(
            what=what, compute=compute, args=[kwargs[k] for k in keys], static_args=[k in d.static for k in keys],
            fold=d.fold, nested=bool(op.blocks), key=id(op), scope=op.name,
        )
        result, folded = run_node(node, self._output_shapes)
        if (observer := observe.current()) is not None:
            observer.mil_op(op, d, kwargs, folded)
        results = () if not op.outputs else result if len(op.outputs) > 1 else (result,)
        if len(results) != len(op.outputs):
            raise MLCError(f"{what} gave {len(results)} outputs, expected {len(op.outputs)}")
        if is_constexpr(op) and self.fp16_as_fp32:
            results = tuple(_as_materialised(v, out.type) for v, out in zip(results, op.outputs))
        return results

    def _block_runner(self, block: Block, env: dict, params: dict):
        """A callable running a nested block with its inputs bound (for control-flow ops)."""

        def run(*block_inputs):
            inner = dict(env)
            for nv, v in zip(block.inputs, block_inputs):
                inner[nv.name] = v
            with checks.not_collecting():
                return self.run_block(block, inner, params)

        return run


def is_constexpr(op: Operation) -> bool:
    return op.type.startswith("constexpr_")


def _as_materialised(value: Any, declared: Any) -> Any:
    """A ``constexpr_*`` op's fp16 output as Core ML holds it: the weight is decompressed once,
    when the model loads, into a tensor of the op's declared dtype, so an fp16 model computing in
    fp32 still reads fp16-rounded weights (coremltools' ``decompress_weights`` writes the same
    fp16 values as ``const``; test/optimize/coreml compares the two at rtol 1e-7)."""
    if isinstance(declared, TensorType) and declared.dtype == "fp16" and jnp.result_type(value) == jnp.float32:
        return jnp.asarray(value).astype(jnp.float16).astype(jnp.float32)
    return value


def constexpr_attributes(op: Operation) -> dict[str, Any]:
    """The data an iOS16/17 ``constexpr_*`` op carries as attributes rather than inputs."""
    return {k: v for k, v in op.attributes.items() if k != "name" and k not in op.inputs}


def attribute_param(op: Operation, key: str) -> str:
    """The params key of a constexpr op's attribute ``key``."""
    return f"{op.name}@{key}"


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype != object and value.size > 1


def _storage_name(dtype) -> str:
    """The MIL name of a float param's stored dtype ("fp32", "fp16", "bf16", ...)."""
    return next((name for name in dtypes.FLOAT_NAMES if dtypes.NUMPY_DTYPES[name] == np.dtype(dtype)), str(np.dtype(dtype)))


def lower_function(function: Function, *, model: str, fp16_as_fp32: bool = True) -> Lowered:
    lowering = FunctionLowering(function, model, fp16_as_fp32)
    return Lowered(lowering, lowering.params, lowering.eager, lowering.storage)


def unsupported_ops(function: Function) -> dict[str, int]:
    """The op types of ``function`` mlc cannot lower, with their counts (nothing runs)."""
    from mlc.frontends.mil.registry import find

    missing: dict[str, int] = {}
    for op in function.iter_operations():
        if op.type != "const" and find(op.type, function.opset) is None:
            missing[op.type] = missing.get(op.type, 0) + 1
    return missing


