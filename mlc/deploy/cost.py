"""Cost reports: FLOPs, transcendentals and bytes per op family, from XLA's cost analysis.

Core ML's ``MLComputePlan`` tells an app what each op of a model costs; ``cost_report`` is
mlc's answer. Every number comes from XLA's ``HloCostAnalysis``:

* **per op**: while the model is traced, an observer (``mlc.runtime.observe``) sees each op with the
  values it runs on; the op's lowering is traced again alone, as a jitted closure over the
  abstract shapes and dtypes of its array inputs (static numpy inputs stay closed-over
  constants), and ``Lowered.cost_analysis()`` (no compile) costs it. Identical ops (same
  lowering, input shapes/dtypes and attributes) are costed once and counted per occurrence.
  Ops are grouped by family, the registry file of their lowering (``mlc/mil/ops/conv.py``
  -> ``conv``, ``mlc/nn/layers/linear.py`` -> ``linear``); a classic model's family is its
  model type (each stage of a pipeline its own).
* **whole program**: the model's jitted function, lowered (before XLA's optimisations: close
  to the per-op sum, plus the work outside the op loop such as image preprocessing) and
  compiled (after fusion and simplification: what XLA actually runs on this device).

Not counted per op: ops folded at trace time (shape arithmetic on constants: they cost
nothing at run time, ``folded_ops`` counts them), and control-flow ops themselves (``cond``,
``while_loop``, ``branch``, ``loop``), whose bodies' ops are costed on their own, once per
trace as XLA counts a loop body. A model whose output shapes depend on data (``non_zero``,
host stages of classic pipelines) has no single XLA program: it is run op by op on example
inputs (zeros of the declared shapes unless ``inputs`` are given), its per-op costs hold for
those inputs, its loops count every iteration, and it has no whole-program numbers. Ops that
cannot be costed alone (an op whose output shape depends on data, a host stage) are listed
in ``uncosted`` with the reason.

Where the per-op sum and the unoptimised program differ: work outside the op loop (image
preprocessing, output conversion) is only in the program; an op a lowering traces and then
discards (``while_loop`` evaluates its condition once before deciding how to loop) is only in
the per-op sum. XLA counts the multiply-adds a convolution really does, without the taps that
fall in the padding.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Hashable

import jax
import numpy as np

from mlc.runtime import observe
from mlc._errors import DataDependentShapeError, MLCFeatureTypeError
from mlc.features import example_value
from mlc.frontends.mil.ops.state import StateCell
from mlc.frontends.neuralnetwork.context import LayerContext
from mlc.frontends.neuralnetwork.network import weight_fields
from mlc.model import Model, load
from mlc.runtime import checks

_KEYS = {"flops": "flops", "transcendentals": "transcendentals", "bytes accessed": "bytes_accessed"}


@dataclasses.dataclass(frozen=True)
class Cost:
    """What XLA's ``HloCostAnalysis`` counts for a computation."""

    flops: float = 0.0
    transcendentals: float = 0.0
    bytes_accessed: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(
            self.flops + other.flops, self.transcendentals + other.transcendentals, self.bytes_accessed + other.bytes_accessed
        )

    @classmethod
    def from_analysis(cls, analysis: Any) -> "Cost":
        """From ``cost_analysis()``: a dict (jax 0.4.30+), a list of per-module dicts (older), or None."""
        parts = analysis if isinstance(analysis, (list, tuple)) else [analysis]
        totals = {field: 0.0 for field in _KEYS.values()}
        for part in parts:
            for key, field in _KEYS.items():
                totals[field] += float((part or {}).get(key, 0.0))
        return cls(**totals)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Tally:
    """How many ops of a kind ran, and what they cost together."""

    ops: int = 0
    cost: Cost = Cost()

    def add(self, cost: Cost) -> None:
        self.ops += 1
        self.cost = self.cost + cost

    def to_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, **self.cost.to_dict()}


@dataclasses.dataclass
class FamilyCost:
    """One op family: its total, and its op types (``conv``, ``conv_transpose``) by FLOPs."""

    name: str
    total: Tally
    op_types: dict[str, Tally]

    @property
    def ops(self) -> int:
        return self.total.ops

    @property
    def cost(self) -> Cost:
        return self.total.cost


@dataclasses.dataclass
class CostReport:
    """Per-family costs of a model's ops, and the cost of its whole program (see module doc)."""

    model: str
    inputs: dict[str, str]  # the program inputs costed: name -> "float32[1,3,224,224]"
    families: dict[str, FamilyCost]  # by FLOPs, largest first
    program: Cost | None  # the whole jitted program before XLA's optimisations (None: run op by op)
    fused: Cost | None  # the compiled (fused) program
    folded_ops: int = 0
    uncosted: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # op type -> {"ops", "reason"}
    eager: bool = False  # run op by op (data-dependent shapes): no whole program

    @property
    def per_op(self) -> Cost:
        """The sum of the ops' own costs (no fusion)."""
        total = Cost()
        for family in self.families.values():
            total = total + family.cost
        return total

    @property
    def ops(self) -> int:
        return sum(f.ops for f in self.families.values())

    def to_dict(self) -> dict[str, Any]:
        flops = self.per_op.flops
        return {
            "inputs": dict(self.inputs),
            "eager": self.eager,
            "families": {
                name: {
                    **f.total.to_dict(),
                    "flops_share": f.cost.flops / flops if flops else 0.0,
                    "op_types": {t: tally.to_dict() for t, tally in f.op_types.items()},
                }
                for name, f in self.families.items()
            },
            "per_op": {"ops": self.ops, **self.per_op.to_dict()},
            "program": None if self.program is None else self.program.to_dict(),
            "fused": None if self.fused is None else self.fused.to_dict(),
            "folded_ops": self.folded_ops,
            "uncosted": {k: dict(v) for k, v in self.uncosted.items()},
        }

    def table(self) -> str:
        """The report as text: a row per family by FLOPs, then the totals."""
        return "\n".join(_table_lines(self))

    __str__ = table


# -- observing the ops --------------------------------------------------------------------------


def _family(fn: Callable) -> str:
    """The registry file a lowering lives in: ``mlc.frontends.mil.ops.conv`` -> ``conv``."""
    return (getattr(fn, "__module__", None) or "unknown").rsplit(".", 1)[-1]


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.core.Tracer))


def _aval(x: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=bool(getattr(jax.typeof(x), "weak_type", False)))


def _static_key(x: Any) -> Hashable | None:
    """A cache key for a closed-over constant, or None when it has no faithful one."""
    if isinstance(x, (np.ndarray, np.generic)):
        if x.dtype == object:
            return None
        return ("array", x.dtype.str, np.shape(x), hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return (type(x).__name__, x)
    return None


class _Observer:
    """Costs each op it is shown (``mlc.runtime.observe``'s protocol) and tallies them by family."""

    def __init__(self, cache: dict):
        self.cache = cache  # shared by the runs of one report: (lowering, avals, attributes) -> Cost or why not
        self.families: dict[str, dict[str, Tally]] = {}
        self.folded = 0
        self.uncosted: dict[str, dict[str, Any]] = {}
        self._layer_keys: dict[int, bytes] = {}

    # -- the front ends' hooks ------------------------------------------------------------------
    def mil_op(self, op, definition, kwargs: dict, folded: bool) -> None:
        family = _family(definition.fn)
        if folded:
            self.folded += 1
        elif "_blocks" in kwargs:
            self._add(family, op.type, Cost())  # control flow: its blocks' ops are costed themselves
        elif definition.eager:
            self._skip(op.type, "its output shape depends on the input values")
        else:
            run, tree = _mil_call(definition.fn, kwargs)
            self._measure(family, op.type, ("mil", definition.fn), run, tree)

    def nn_layer(self, plan, ctx, args: list, folded: bool) -> None:
        family = _family(plan.definition.fn)
        if folded:
            self.folded += 1
        elif plan.children:
            self._add(family, plan.kind, Cost())  # branch / loop: their networks' layers are costed themselves
        elif plan.definition.eager:
            self._skip(plan.kind, "its output shape depends on the input values")
        else:
            run, tree = _nn_call(plan, ctx, args)
            self._measure(family, plan.kind, ("nn", plan.definition.fn, self._layer_key(plan)), run, tree)

    def classic_stage(self, kind: str, fn: Callable, params: dict, values: dict, host: bool) -> None:
        if host:
            self._skip(kind, "it works on Python values (strings, dictionaries) on the host, outside XLA")
            return
        self._measure(kind, kind, ("classic", fn), lambda tree: fn(*tree), (params, values))

    # -- costing --------------------------------------------------------------------------------
    def _measure(self, family: str, op_type: str, head: Hashable, run: Callable, tree: Any) -> None:
        """Cost ``run(tree)`` (or find it in the cache) and add it to ``family``; an op that cannot
        be traced alone is listed as uncosted with the error, and the others are still costed."""
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        dynamic = [i for i, x in enumerate(leaves) if _is_array(x)]
        avals = [_aval(leaves[i]) for i in dynamic]
        constant = set(range(len(leaves))) - set(dynamic)
        statics = [_static_key(leaves[i]) for i in sorted(constant)]
        key = None
        if all(s is not None for s in statics):
            key = (head, treedef, tuple(statics), tuple((a.shape, a.dtype, a.weak_type) for a in avals))
        outcome = self.cache.get(key) if key is not None else None
        if outcome is None:
            try:
                outcome = _lowered_cost(run, leaves, treedef, dynamic, avals)
            except Exception as e:
                outcome = f"tracing it alone failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            if key is not None:
                self.cache[key] = outcome
        if isinstance(outcome, Cost):
            self._add(family, op_type, outcome)
        else:
            self._skip(op_type, outcome)

    def _add(self, family: str, op_type: str, cost: Cost) -> None:
        self.families.setdefault(family, {}).setdefault(op_type, Tally()).add(cost)

    def _skip(self, op_type: str, reason: str) -> None:
        entry = self.uncosted.setdefault(op_type, {"ops": 0, "reason": reason})
        entry["ops"] += 1

    def _layer_key(self, plan) -> bytes:
        """What a layer's lowering reads besides its inputs and weights: its message without
        the name, blob names and weight values (so identical layers share a cost)."""
        key = self._layer_keys.get(id(plan))
        if key is None:
            message = type(plan.layer)()
            message.CopyFrom(plan.layer)
            for field in ("name", "input", "output"):
                message.ClearField(field)
            for _, weight in weight_fields(getattr(message, plan.kind)):
                weight.Clear()
            key = self._layer_keys[id(plan)] = hashlib.sha1(message.SerializeToString(deterministic=True)).digest()
        return key

    def families_by_flops(self) -> dict[str, FamilyCost]:
        out = []
        for name, types in self.families.items():
            total = Tally()
            for tally in types.values():
                total = Tally(total.ops + tally.ops, total.cost + tally.cost)
            ordered = dict(sorted(types.items(), key=lambda kv: (-kv[1].cost.flops, -kv[1].ops, kv[0])))
            out.append(FamilyCost(name, total, ordered))
        out.sort(key=lambda f: (-f.cost.flops, -f.cost.bytes_accessed, f.name))
        return {f.name: f for f in out}


def _lowered_cost(run: Callable, leaves: list, treedef, dynamic: list[int], avals: list) -> Cost:
    """Trace ``run`` alone over abstract values for the ``dynamic`` leaves and cost it."""

    def alone(*arrays):
        full = list(leaves)
        for i, a in zip(dynamic, arrays):
            full[i] = a
        out = run(jax.tree_util.tree_unflatten(treedef, full))
        return [x for x in jax.tree_util.tree_leaves(out) if _is_array(x) or isinstance(x, (np.ndarray, np.generic))]

    with checks.not_collecting(), observe.observing(None):
        return Cost.from_analysis(jax.jit(alone).lower(*avals).cost_analysis())


def _mil_call(fn: Callable, kwargs: dict) -> tuple[Callable, dict]:
    """An ML Program op as ``run(tree)``: its state inputs (``StateCell``) become their values
    and fresh cells are made around them, so re-running the op leaves the real state alone; the
    cells' final values are outputs too (``write_state`` returns nothing but the write)."""
    cells = {k: v.name for k, v in kwargs.items() if isinstance(v, StateCell)}
    tree = {k: (v.value if k in cells else v) for k, v in kwargs.items()}

    def run(values: dict):
        fresh = {k: StateCell(cells[k], values[k]) for k in cells}
        result = fn(**{k: fresh.get(k, v) for k, v in values.items()})
        return result, [cell.value for cell in fresh.values()]

    return run, tree


def _nn_call(plan, ctx, args: list) -> tuple[Callable, tuple]:
    """A NeuralNetwork layer as ``run(tree)`` over its inputs and its own weights (a layer
    reads only those, ``LayerContext.weight``), with a context that holds nothing else."""
    weights = {k: ctx.params[k] for k in plan.weight_keys if k in ctx.params}

    def run(tree):
        own, inputs = tree
        alone = LayerContext(model=ctx.model, layer=ctx.layer, params=own, custom=ctx.custom, scope=ctx.scope)
        return plan.definition.fn(alone, plan.params, *inputs)

    return run, (weights, tuple(args))


# -- the model's inputs -------------------------------------------------------------------------


def _program_inputs(model, given: dict | None) -> dict:
    """The program-level inputs to cost the model on: ``given`` where named, examples elsewhere
    (zeros, black images: ``mlc.features.example_value``)."""
    given = dict(given or {})
    values = {}
    for name, feature in model.input_description.items():
        if name in given:
            values[name] = given.pop(name)
            continue
        values[name] = example_value(feature)
        if values[name] is None and feature.kind == "multiArray":
            raise MLCFeatureTypeError(f"{model.name}: input {name!r} declares no shape; pass inputs={{{name!r}: array}} to cost_report")
    values.update(given)  # unknown names: predict's own check names them
    return model.program_inputs(values)


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{np.dtype(value.dtype).name}[{','.join(str(d) for d in value.shape)}]"
    return type(value).__name__


def _as_jax(inputs: dict) -> dict:
    """Numeric numpy inputs as jax arrays, so that running op by op they count as computed
    values, not as constants folded at trace time."""
    return {n: jax.numpy.asarray(v) if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" else v for n, v in inputs.items()}


# -- the report ---------------------------------------------------------------------------------


def _loaded(source: Any, function_name: str | None, device: Any, compute_precision: str):
    """A freshly built ``mlc.Model`` (its jit caches empty, so tracing reaches every op)."""
    if isinstance(source, Model):
        return load(
            source.loaded_spec, function_name=source.function_name, device=source.device, compute_precision=source.compute_precision
        )
    return load(source, function_name=function_name, device=device, compute_precision=compute_precision)


def _traced(fn: Callable, params: dict, inputs: dict, cache: dict):
    """Trace the whole program once with the observer on: ``(observer, lowered)``, or raise
    ``DataDependentShapeError`` when its shapes depend on data."""
    observer = _Observer(cache)

    def program(params, inputs):  # a fresh function: jax's trace caches never skip the ops
        return fn(params, inputs)

    with observe.observing(observer):
        lowered = jax.jit(program).lower(params, inputs)
    return observer, lowered


def _run_op_by_op(fn: Callable, params: dict, inputs: dict, cache: dict) -> "_Observer":
    observer = _Observer(cache)
    with observe.observing(observer):
        fn(params, _as_jax(inputs))
    return observer


def cost_report(
    model: Any,
    *,
    inputs: dict | None = None,
    function_name: str | None = None,
    device: Any = None,
    compute_precision: str = "auto",
) -> CostReport:
    """FLOPs, transcendentals and bytes accessed per op family of ``model``, from XLA.

    ``model``: a path, a coremltools ``MLModel``, a ``Model`` proto or an ``mlc.Model`` (which
    keeps its own device, precision and function). ``inputs``: feature values to cost the model
    on (as ``predict`` takes them); the others are zeros of their declared (default) shapes.
    ``device`` and ``compute_precision`` as for ``mlc.load``: costs are for that device (an fp16
    program costs fp32 bytes on CPU, which computes it in fp32).
    """
    m = _loaded(model, function_name, device, compute_precision)
    fn, params = m.jax_function()
    with m.runner.x64():
        program_inputs = _program_inputs(m, inputs)
        cache: dict = {}
        program = fused = None
        eager = m.runner.eager
        if not eager:
            try:
                observer, lowered = _traced(fn, params, program_inputs, cache)
                program = Cost.from_analysis(lowered.cost_analysis())
                fused = Cost.from_analysis(lowered.compile().cost_analysis())
            except DataDependentShapeError:
                eager = True
        if eager:
            observer = _run_op_by_op(fn, params, program_inputs, cache)
    return CostReport(
        model=m.name,
        inputs={n: _describe(v) for n, v in program_inputs.items()},
        families=observer.families_by_flops(),
        program=program,
        fused=fused,
        folded_ops=observer.folded,
        uncosted=observer.uncosted,
        eager=eager,
    )


# -- text ---------------------------------------------------------------------------------------

_FLOP_UNITS = ((1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "KFLOPs"), (1.0, "FLOPs"))
_BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "KB"), (1.0, "B"))


def _unit(largest: float, units) -> tuple[float, str]:
    """The largest unit (decimal: 1 MB = 1e6 bytes) the largest value reaches."""
    return next(((scale, name) for scale, name in units if largest >= scale), units[-1])


def _table_lines(report: CostReport) -> list[str]:
    rows = [(f.name, f.ops, f.cost) for f in report.families.values()]
    totals = [("per-op sum (unfused)", report.ops, report.per_op)]
    if report.program is not None:
        totals.append(("whole program, unoptimized", None, report.program))
    if report.fused is not None:
        totals.append(("whole program, fused (XLA)", None, report.fused))
    everything = [c for _, _, c in rows + totals]
    fscale, funit = _unit(max((c.flops for c in everything), default=0.0), _FLOP_UNITS)
    bscale, bunit = _unit(max((c.bytes_accessed for c in everything), default=0.0), _BYTE_UNITS)
    inputs = ", ".join(f"{n}: {d}" for n, d in report.inputs.items())
    lines = [f"cost (XLA cost analysis on {inputs or 'no inputs'}):"]
    width = max([len(name) for name, _, _ in rows + totals] + [6])
    lines.append(f"  {'family':<{width}}  {'ops':>6}  {funit:>10}  {bunit + ' accessed':>12}  {'% FLOPs':>7}")
    all_flops = report.per_op.flops
    flops = _number(fscale)
    size = _number(bscale)
    for name, ops, cost in rows:
        share = f"{100 * cost.flops / all_flops:.1f}%" if all_flops else "-"
        lines.append(f"  {name:<{width}}  {ops:>6}  {flops(cost.flops):>10}  {size(cost.bytes_accessed):>12}  {share:>7}")
    for name, ops, cost in totals:
        count = "" if ops is None else str(ops)
        lines.append(f"  {name:<{width}}  {count:>6}  {flops(cost.flops):>10}  {size(cost.bytes_accessed):>12}")
    if report.folded_ops:
        lines.append(f"  ({report.folded_ops} ops folded at trace time, shape arithmetic on constants, cost nothing at run time)")
    for op_type, entry in report.uncosted.items():
        lines.append(f"  not costed: {op_type} (x{entry['ops']}): {entry['reason']}")
    if report.eager:
        lines.append("  the model does not run as one XLA program (host stages, or shapes that depend on its input values): "
                     "costed op by op on these inputs, with no whole-program numbers")
    return lines


def _number(scale: float) -> Callable[[float], str]:
    """Values in a unit: whole numbers for plain FLOPs and bytes, four decimals otherwise."""
    return (lambda v: f"{v:.0f}") if scale == 1.0 else (lambda v: f"{v / scale:.4f}")
