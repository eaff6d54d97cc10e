"""Gather and scatter ops (scatter_gather.py) against numpy."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)

UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum, "min": np.minimum}


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def same(actual, expected):
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_array_equal(actual, expected)


def close(actual, expected):
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def _ref_batched(fn, x, indices, batch_dims):
    """``fn(x, indices)`` mapped over the leading ``batch_dims`` axes of both."""
    if batch_dims == 0:
        return fn(x, indices)
    return np.stack([_ref_batched(fn, a, i, batch_dims - 1) for a, i in zip(x, indices)])


# -- gather ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, axis, indices",
    [
        ("iOS15", 0, np.array([2, 0, 2], np.int32)),
        ("iOS15", -1, np.array([[-1, 0], [1, -4]], np.int32)),  # negative indices wrap
        ("iOS15", 1, np.array(-2, np.int32)),  # a scalar index drops the axis
        ("iOS17", 2, np.array([[3], [1]], np.int32)),
        ("iOS17", -2, np.array([0, 2, 1, 1], np.int32)),
    ],
)
def test_gather(target, axis, indices):
    x = rand(3, 3, 4)
    if indices.ndim == 0:  # program inputs cannot be scalars: a constant index
        out, = run_mil(lambda x: mb.gather(x=x, indices=indices, axis=axis), {"x": x}, target=target)
    else:
        out, = run_mil(lambda x, i: mb.gather(x=x, indices=i, axis=axis), {"x": x, "i": indices}, target=target)
    same(out, np.take(x, indices, axis=axis))


def test_gather_const_indices_traced_x():
    x = rand(4, 5)
    out, = run_mil(lambda x: mb.gather(x=x, indices=np.array([[4, 0], [1, 1]], np.int32), axis=1), {"x": x}, target="iOS15")
    same(out, np.take(x, [[4, 0], [1, 1]], axis=1))


@pytest.mark.parametrize("target, axis, batch_dims", [("iOS16", 1, 1), ("iOS17", 2, 1), ("iOS17", -1, 2)])
def test_gather_batch_dims(target, axis, batch_dims):
    x = rand(2, 3, 4, 5)
    size = x.shape[axis]
    indices = RNG.integers(0, size, (2, 3, 2)[:batch_dims] + (3, 2)).astype(np.int32)
    kwargs = {"validate_indices": True} if target == "iOS17" else {}
    out, = run_mil(lambda x, i: mb.gather(x=x, indices=i, axis=axis, batch_dims=batch_dims, **kwargs), {"x": x, "i": indices}, target=target)
    ax = axis % x.ndim - batch_dims
    same(out, _ref_batched(lambda a, i: np.take(a, i, axis=ax), x, indices, batch_dims))


def test_gather_static():
    """shape -> gather folds at trace time; gather of int constants too."""
    x = rand(2, 3, 4)

    def body(x):
        dims = mb.gather(x=mb.shape(x=x), indices=np.array([2, 0], np.int32))
        table = mb.gather(x=np.array([[1, 2], [3, 4], [5, 6]], np.int32), indices=np.int32(-1), axis=0)
        return mb.fill(shape=dims, value=1.0), mb.add(x=table, y=dims)

    filled, summed = run_mil(body, {"x": x}, target="iOS15")
    same(filled, np.ones((4, 2), np.float32))
    same(summed, np.array([9, 8], np.int32))


# -- gather_along_axis, gather_nd --------------------------------------------------------------
@pytest.mark.parametrize("target, axis", [("iOS15", 0), ("iOS15", -1), ("iOS17", 1)])
def test_gather_along_axis(target, axis):
    x = rand(3, 4, 5)
    shape = list(x.shape)
    shape[axis] = 2
    low = -x.shape[axis] if target == "iOS15" else 0  # iOS15 allows negative indices
    indices = RNG.integers(low, x.shape[axis], shape).astype(np.int32)
    out, = run_mil(lambda x, i: mb.gather_along_axis(x=x, indices=i, axis=axis), {"x": x, "i": indices}, target=target)
    same(out, np.take_along_axis(x, indices, axis=axis))


@pytest.mark.parametrize("target, depth, batch_dims", [("iOS15", 1, 0), ("iOS15", 3, 0), ("iOS16", 2, 1), ("iOS17", 1, 2)])
def test_gather_nd(target, depth, batch_dims):
    x = rand(2, 3, 4, 5)
    lead = x.shape[:batch_dims]
    indices = np.stack([RNG.integers(0, x.shape[batch_dims + d], lead + (3, 2)) for d in range(depth)], -1).astype(np.int32)
    kwargs = {"batch_dims": batch_dims} if target != "iOS15" else {}
    out, = run_mil(lambda x, i: mb.gather_nd(x=x, indices=i, **kwargs), {"x": x, "i": indices}, target=target)
    take = lambda a, i: a[tuple(np.moveaxis(i, -1, 0))]
    same(out, _ref_batched(take, x, indices, batch_dims))


# -- scatter -----------------------------------------------------------------------------------
def _ref_scatter(data, index, updates, mode):
    out = data.copy()
    if mode == "update":
        out[index] = updates
    else:
        UFUNCS[mode].at(out, index, updates)
    return out


@pytest.mark.parametrize(
    "target, mode, axis",
    [
        ("iOS15", "update", 0),
        ("iOS15", "add", 1),
        ("iOS15", "sub", -1),
        ("iOS17", "mul", 0),
        ("iOS17", "div", 1),
        ("iOS17", "max", -1),
        ("iOS15", "min", 2),
    ],
)
def test_scatter(target, mode, axis):
    data = rand(3, 4, 5)
    n = data.shape[axis]
    # repeated indices accumulate (not for update, whose winner Core ML leaves undefined)
    indices = RNG.permutation(n)[:3] if mode == "update" else np.array([0, n - 1, 0])
    indices = indices.astype(np.int32)
    if target == "iOS15":
        indices[1] -= n  # negative indices wrap
    shape = list(data.shape)
    shape[axis] = 3
    updates = rand(*shape) + (3.0 if mode == "div" else 0.0)
    out, = run_mil(
        lambda d, i, u: mb.scatter(data=d, indices=i, updates=u, axis=axis, mode=mode),
        {"d": data, "i": indices, "u": updates},
        target=target,
    )
    index = (slice(None),) * (axis % 3) + (indices % n,)
    close(out, _ref_scatter(data, index, updates, mode))


def test_scatter_int_default_mode_is_add():
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    out, = run_mil(
        lambda d: mb.scatter(data=d, indices=np.array([1, 1], np.int32), updates=np.array([[1, 2, 3], [10, 20, 30]], np.int32)),
        {"d": data},
        target="iOS15",
    )
    same(out, [[0, 1, 2], [14, 26, 38]])


@pytest.mark.parametrize("target, mode, axis", [("iOS15", "update", 0), ("iOS15", "add", -1), ("iOS17", "max", 1), ("iOS17", "mul", 0)])
def test_scatter_along_axis(target, mode, axis):
    data = rand(3, 4, 5)
    shape = list(data.shape)
    shape[axis] = 2
    n = data.shape[axis]
    if mode == "update":  # distinct targets along the axis
        indices = np.moveaxis(np.argsort(RNG.random(np.moveaxis(np.empty(shape), axis, 0).shape[1:] + (n,)), -1)[..., :2], -1, 0)
        indices = np.moveaxis(indices, 0, axis)
    else:
        indices = RNG.integers(0, n, shape)
    indices = indices.astype(np.int32)
    updates = rand(*shape)
    out, = run_mil(
        lambda d, i, u: mb.scatter_along_axis(data=d, indices=i, updates=u, axis=axis, mode=mode),
        {"d": data, "i": indices, "u": updates},
        target=target,
    )
    grid = list(np.indices(shape))
    grid[axis] = indices
    close(out, _ref_scatter(data, tuple(grid), updates, mode))


@pytest.mark.parametrize("target, mode, depth", [("iOS15", "update", 2), ("iOS15", "add", 1), ("iOS17", "sub", 3), ("iOS17", "min", 2)])
def test_scatter_nd(target, mode, depth):
    data = rand(3, 4, 5)
    if mode == "update":
        flat = RNG.permutation(int(np.prod(data.shape[:depth])))[:6]
        indices = np.stack(np.unravel_index(flat, data.shape[:depth]), -1).reshape(2, 3, depth)
    else:
        indices = np.stack([RNG.integers(0, data.shape[d], (2, 3)) for d in range(depth)], -1)
    indices = indices.astype(np.int32)
    updates = rand(2, 3, *data.shape[depth:])
    out, = run_mil(
        lambda d, i, u: mb.scatter_nd(data=d, indices=i, updates=u, mode=mode),
        {"d": data, "i": indices, "u": updates},
        target=target,
    )
    close(out, _ref_scatter(data, tuple(np.moveaxis(indices, -1, 0)), updates, mode))


# -- negative scatter indices: wrapped up to iOS16, out of bounds (dropped) from iOS17 --------
@pytest.mark.parametrize("target, wrapped", [("iOS16", True), ("iOS17", False)])
def test_scatter_negative_index_wraps_before_ios17_only(target, wrapped):
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    updates = np.full((2, 3), 10, np.float32)
    indices = np.array([-1, 0], np.int32)
    (out,) = run_mil(
        lambda data, updates, indices: mb.scatter(data=data, indices=indices, updates=updates, mode="add"),
        {"data": data, "updates": updates, "indices": indices},
        target=target,
    )
    expected = data.copy()
    expected[0] += 10
    if wrapped:
        expected[1] += 10
    same(out, expected)


@pytest.mark.parametrize("op", ["scatter_along_axis", "scatter_nd"])
def test_ios17_negative_scatter_indices_are_dropped(op):
    data = np.arange(4, dtype=np.float32)
    updates = np.array([5, 7], np.float32)
    if op == "scatter_nd":
        indices = np.array([[-1], [2]], np.int32)
        build = lambda data, updates, indices: mb.scatter_nd(data=data, indices=indices, updates=updates, mode="update")
    else:
        indices = np.array([-1, 2], np.int32)
        build = lambda data, updates, indices: mb.scatter_along_axis(data=data, indices=indices, updates=updates, mode="update")
    (out,) = run_mil(build, {"data": data, "updates": updates, "indices": indices}, target="iOS17")
    same(out, np.array([0, 1, 7, 3], np.float32))


# -- validate_indices on indices that are model inputs: checked when the model runs ------------
def _validating_scatter_model():
    from mlc.testing.mil_program import mil_model

    build = lambda data, updates, indices: mb.scatter(data=data, indices=indices, updates=updates, validate_indices=True)
    return mil_model(build, {"data": ((2, 3), "fp32"), "updates": ((2, 3), "fp32"), "indices": ((2,), "int32")}, target="iOS17")


def test_validate_indices_refuses_out_of_bounds_input_indices_at_run_time():
    import mlc

    model = _validating_scatter_model()
    data, updates = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    (name,) = model.output_description
    ok = model.predict({"data": data, "updates": updates, "indices": np.array([1, 0], np.int32)})
    same(ok[name], np.ones((2, 3), np.float32))
    for bad in ([-1, 0], [2, 0]):
        with pytest.raises(mlc.MLCPredictionError, match=r"Unable to compute the prediction using ML Program: .*scatter.*validate_indices"):
            model.predict({"data": data, "updates": updates, "indices": np.array(bad, np.int32)})
    batch = {"data": np.stack([data, data]), "updates": np.stack([updates, updates]), "indices": np.array([[1, 0], [0, 5]], np.int32)}
    with pytest.raises(mlc.MLCPredictionError):
        model.predict_batch(batch)


def test_jax_function_has_no_check_outputs():
    """Under jit the pure function cannot raise on traced indices; it returns just the outputs."""
    import jax

    model = _validating_scatter_model()
    fn, params = model.jax_function()
    out = jax.jit(fn)(params, {"data": np.zeros((2, 3), np.float32), "updates": np.ones((2, 3), np.float32), "indices": np.array([7, 0], np.int32)})
    assert set(out) == set(model.output_description)
