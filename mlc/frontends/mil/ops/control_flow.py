"""Control flow and lists (iOS15 control_flow.py; ``select`` lives in tensor_operation).

``cond`` and ``while_loop`` get their nested blocks as ``_blocks``: callables that run a block
with its inputs bound and return its outputs.

* ``cond``: a concrete predicate (static, or any value when running op by op) runs only its
  branch, so static shape arithmetic in it still folds. A traced predicate becomes
  ``lax.cond`` when both branches give the same shapes and dtypes; otherwise the output shape
  depends on data and ``DataDependentShapeError`` makes ``Model`` run the program op by op.
* ``while_loop``: while the condition is concrete the loop runs in Python (unrolled into the
  trace when the body is traced: static trip counts, the usual converted ``for`` loop). Once
  the condition is traced it becomes ``lax.while_loop``, which needs every loop variable to
  keep its shape and dtype; a variable that changes shape, or a list the body grows at a traced
  index, raises ``DataDependentShapeError`` and the program runs op by op, where the condition
  is concrete again.
* Lists are ``MILList``: the elements stacked along axis 0 of one array, unwritten elements
  zero (as Core ML reads them), so the length is always static and ``list_length`` folds. A
  dynamic list grows when written beyond its end; that needs a concrete index. Lists are JAX
  pytrees, so they can be loop variables and branch outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc.runtime import limits
from mlc._errors import DataDependentShapeError
from mlc.frontends.mil.ops._helpers import mil_dtype, static_bool, static_int
from mlc.frontends.mil.registry import op


def _data_dependent(message: str) -> Exception:
    return DataDependentShapeError(message + "; Model.predict runs such a model op by op")


def _traced(v) -> bool:
    return isinstance(v, jax.core.Tracer)


def _static(*values) -> bool:
    return all(isinstance(v, (np.ndarray, np.generic)) for v in values)


def _predicate(pred):
    """A predicate (0-d, or one element as converters sometimes give) as a 0-d bool."""
    if np.size(pred) != 1:
        raise ValueError(f"a predicate must be a single bool, got a tensor of shape {list(np.shape(pred))}")
    return jnp.reshape(pred, ()).astype(bool) if _traced(pred) else bool(np.asarray(pred).reshape(()))


def _result(values):
    """An op's outputs as ``run_op`` takes them: the value itself when there is one."""
    values = tuple(values)
    return values[0] if len(values) == 1 else values


def _arrays(values) -> list:
    """Block outputs as JAX arrays (static numpy ones included), lists kept as lists."""
    return [jax.tree.map(jnp.asarray, v) for v in values]


def _signature(values):
    leaves, tree = jax.tree.flatten(values)
    return tree, tuple((tuple(leaf.shape), np.dtype(leaf.dtype)) for leaf in leaves)


def _describe(signature) -> str:
    return ", ".join(f"{dtype}{list(shape)}" for shape, dtype in signature[1])


@op("cond")
def cond(pred, _blocks):
    """Run the branch ``pred`` picks; a traced ``pred`` needs branches of matching types."""
    true_fn, false_fn = _blocks
    if not _traced(pred):
        return _result(true_fn() if _predicate(pred) else false_fn())
    signatures = []

    def branch(fn):
        def run():
            out = _arrays(fn())
            signatures.append(_signature(out))
            if signatures[0] != signatures[-1]:
                raise _data_dependent(
                    f"the branches of cond give different output types ({_describe(signatures[0])} vs "
                    f"{_describe(signatures[-1])}) and the predicate is computed from the model's input values"
                )
            return out

        return run

    return _result(jax.lax.cond(_predicate(pred), branch(true_fn), branch(false_fn)))


@op("while_loop", variadic=("loop_vars",))
def while_loop(loop_vars, _blocks):
    """Run the body while the condition block is true; in Python while it is concrete."""
    cond_fn, body_fn = _blocks
    values = list(loop_vars)
    while True:
        (go,) = cond_fn(*values)
        if _traced(go):
            return _result(_lax_while(cond_fn, body_fn, values))
        if not _predicate(go):
            return _result(values)
        values = list(body_fn(*values))


def _lax_while(cond_fn, body_fn, values) -> list:
    """``lax.while_loop`` over ``values``; loop variables must keep their shapes and dtypes."""
    init = _arrays(values)
    signature = _signature(init)

    def body(carry):
        out = _arrays(body_fn(*carry))
        if _signature(out) != signature:
            raise _data_dependent(
                f"a while_loop's variables change type in its body ({_describe(signature)} -> "
                f"{_describe(_signature(out))}) and its condition is computed from the model's input values"
            )
        return out

    return jax.lax.while_loop(lambda carry: _predicate(cond_fn(*carry)[0]), body, init)


# -- lists ---------------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class MILList:
    """A MIL list: ``length`` elements of ``elem_shape`` stacked in ``data`` (numpy while static).

    ``data`` is None while ``elem_shape`` has unknown (None) dims and nothing is written yet.
    """

    def __init__(self, data, length: int, elem_shape: tuple, dtype: np.dtype, dynamic: bool):
        self.data = data
        self.length = length
        self.elem_shape = elem_shape
        self.dtype = dtype
        self.dynamic = dynamic

    def tree_flatten(self):
        return (self.data,), (self.length, self.elem_shape, self.dtype, self.dynamic)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    def __repr__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.elem_shape)
        return f"MILList({self.length} x {self.dtype}[{dims}]{', dynamic' if self.dynamic else ''})"

    def with_data(self, data) -> "MILList":
        return MILList(data, int(data.shape[0]), tuple(data.shape[1:]), self.dtype, self.dynamic)

    def filled(self):
        """``data``; an error while the element shape is still unknown."""
        if self.data is None:
            raise ValueError(f"{self!r} is read before anything is written to it, so its element shape is unknown")
        return self.data

    def for_elements(self, shape: tuple) -> "MILList":
        """This list with data, for writing elements of ``shape``."""
        if len(shape) != len(self.elem_shape) or any(d is not None and d != s for d, s in zip(self.elem_shape, shape)):
            raise ValueError(f"cannot write elements of shape {list(shape)} to {self!r}")
        if self.data is not None:
            return self
        limits.check_tensor((self.length, *shape), np.dtype(self.dtype).itemsize, "the list's elements")
        return self.with_data(np.zeros((self.length, *shape), self.dtype))

    def grown(self, length: int) -> "MILList":
        """This list extended with zero elements to ``length`` (a dynamic list written beyond its end)."""
        if length <= self.length:
            return self
        if not self.dynamic:
            raise ValueError(f"index {length - 1} is out of range for the fixed-length {self!r}")
        pad = [(0, length - self.length)] + [(0, 0)] * len(self.elem_shape)
        return self.with_data(np.pad(self.data, pad) if _static(self.data) else jnp.pad(self.data, pad))


def _indices(indices, length: int) -> np.ndarray:
    """Concrete list indices as numpy ints, checked to be non-negative and below ``length``."""
    idx = np.asarray(indices).astype(np.int64)
    bad = idx[(idx < 0) | (idx >= length)]
    if bad.size:
        raise ValueError(f"list index {int(bad.reshape(-1)[0])} is out of range for a list of length {length}")
    return idx


def _past_end(indices, length: int):
    """Traced indices with negative ones moved past the end (JAX would count them from the end)."""
    return jnp.where(indices < 0, length, indices)


def _take(ls: MILList, indices):
    """Elements at ``indices`` (a scalar index gives one element)."""
    data = ls.filled()
    if _traced(indices):  # in range by the op's contract; others read zeros
        return jnp.take(jnp.asarray(data), _past_end(indices, ls.length), axis=0, mode="fill", fill_value=0)
    idx = _indices(indices, ls.length)
    return data[idx] if _static(data) else jnp.asarray(data)[idx]


def _put(ls: MILList, indices, values) -> MILList:
    """``ls`` with elements ``values`` (K, *elem_shape) written at ``indices`` (K,), grown if dynamic."""
    ls = ls.for_elements(tuple(jnp.shape(values)[1:]))
    if _traced(indices):
        if ls.dynamic:
            raise _data_dependent(f"a list_write/list_scatter index is computed from the model's input values, so {ls!r} may grow")
        data = jnp.asarray(ls.data).at[_past_end(indices, ls.length)].set(jnp.asarray(values, ls.dtype), mode="drop")
        return ls.with_data(data)  # in range by the op's contract; others are dropped
    idx = np.asarray(indices).astype(np.int64).reshape(-1)
    ls = ls.grown(int(idx.max()) + 1 if idx.size else 0)
    idx = _indices(idx, ls.length)
    if _static(ls.data, values):
        data = ls.data.copy()
        data[idx] = values
        return ls.with_data(data)
    return ls.with_data(jnp.asarray(ls.data).at[idx].set(jnp.asarray(values, ls.dtype)))


@op("make_list", static=("init_length", "elem_shape", "dynamic_length", "dtype"), variadic=("elem_shape",))
def make_list(elem_shape=(), init_length=1, dynamic_length=True, dtype="fp32"):
    """``init_length`` zero elements; string (symbolic) ``elem_shape`` dims are fixed by the first write."""
    dims = tuple(int(d) if np.asarray(d).dtype.kind in "iu" else None for d in elem_shape)
    dt = mil_dtype(dtype)
    length = static_int(init_length)
    if None not in dims:
        limits.check_tensor((length, *dims), np.dtype(dt).itemsize, "the list's initial elements")
    data = None if None in dims else np.zeros((length, *dims), dt)
    return MILList(data, length, dims, dt, static_bool(dynamic_length))


@op("list_length")
def list_length(ls):
    return np.array(ls.length, np.int32)


@op("list_read")
def list_read(ls, index):
    return _take(ls, jnp.reshape(index, ()) if _traced(index) else np.asarray(index).reshape(()))


@op("list_gather")
def list_gather(ls, indices):
    """Elements at ``indices`` stacked on a new axis 0."""
    return _take(ls, indices)


@op("list_write")
def list_write(ls, index, value):
    return _put(ls, jnp.reshape(index, (1,)) if _traced(index) else np.asarray(index).reshape(1), value[None])


@op("list_scatter")
def list_scatter(ls, indices, value):
    """Write ``value[k]`` at ``indices[k]``."""
    return _put(ls, indices, value)
