"""Control flow (cond, while_loop) and list ops against numpy / torch loops."""

import jax
import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb

import mlc
from mlc._errors import DataDependentShapeError
from mlc.frontends.mil.ops.control_flow import cond as cond_op
from mlc.testing.mil_program import mil_model

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _mil_dtype(a):
    return {np.float32: "fp32", np.int32: "int32", np.bool_: "bool"}[a.dtype.type]


def build(body, feeds, **kwargs):
    return mil_model(body, {n: (a.shape, _mil_dtype(a)) for n, a in feeds.items()}, **kwargs)


def predict(model, feeds):
    return list(model.predict(feeds).values())


def jitted(model, feeds):
    """The outputs of the model's pure function under jax.jit (raises if it cannot be jitted)."""
    fn, params = model.jax_function()
    out = jax.jit(fn)(params, feeds)
    return [np.asarray(out[n]) for n in model.output_description]


def same(actual, expected, rtol=1e-6, atol=1e-6):
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def primitives(model, feeds) -> set:
    """The primitives in the model's jaxpr, nested ones (loop bodies, branches) included."""
    fn, params = model.jax_function()
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            found.add(str(eqn.primitive))
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else (value,):
                    if hasattr(sub, "jaxpr"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(params, feeds).jaxpr)
    return found


# -- cond ------------------------------------------------------------------------------------
def test_cond_static_predicate_runs_one_branch_and_folds():
    """A predicate from shape arithmetic: only its branch runs, and its result is a static shape."""
    x = rand(2, 6)

    def body(x):
        pred = mb.greater(x=mb.gather(x=mb.shape(x=x), indices=np.int32(0)), y=np.int32(1))
        shape = mb.cond(
            pred=pred,
            _true_fn=lambda: mb.add(x=np.array([2, 3], np.int32), y=np.int32(1)),
            _false_fn=lambda: mb.add(x=np.array([3, 2], np.int32), y=np.int32(1)),
        )
        return mb.reshape(x=x, shape=shape)

    model = build(body, {"x": x})
    (out,) = predict(model, {"x": x})
    same(out, x.reshape(3, 4))
    assert not model.runner.eager
    same(jitted(model, {"x": x})[0], x.reshape(3, 4))
    assert "cond" not in primitives(model, {"x": x})


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cond_traced_predicate_is_lax_cond(precision):
    def body(x):
        pred = mb.greater(x=mb.reduce_sum(x=x), y=np.float32(0))
        return mb.cond(
            pred=pred,
            _true_fn=lambda: (mb.mul(x=x, y=np.float32(2)), mb.add(x=x, y=np.float32(1))),
            _false_fn=lambda: (mb.sub(x=x, y=np.float32(1)), mb.mul(x=x, y=x)),
        )

    x = np.abs(rand(2, 3)) + 0.25
    model = build(body, {"x": x}, precision=precision)
    assert "cond" in primitives(model, {"x": x})
    # fp16: the program casts to fp16 and back; the values here are exact in fp16 only to ~1e-3
    tol = dict(rtol=2e-3, atol=2e-3) if precision == "fp16" else {}
    for feed in (x, -x):
        expected = (feed * 2, feed + 1) if feed.sum() > 0 else (feed - 1, feed * feed)
        for out, jit_out, ref in zip(predict(model, {"x": feed}), jitted(model, {"x": feed}), expected):
            same(out, ref, **tol)
            same(jit_out, ref, **tol)
    assert not model.runner.eager


def test_cond_traced_predicate_with_branches_of_different_shapes():
    """lax.cond cannot give either shape: tracing raises DataDependentShapeError; concrete runs a branch."""

    def run(pred, x):
        return cond_op(pred, _blocks=[lambda: [x], lambda: [x[:2]]])

    x = rand(3, 2)
    with pytest.raises(DataDependentShapeError, match="branches of cond give different output types"):
        jax.jit(run)(True, x)
    same(np.asarray(run(jax.numpy.asarray(False), x)), x[:2])
    same(np.asarray(run(np.bool_(True), x)), x)


def test_cond_predicate_must_be_one_value():
    with pytest.raises(ValueError, match="single bool"):
        cond_op(np.array([True, False]), _blocks=[lambda: [1], lambda: [2]])


# -- while_loop ------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_while_loop_traced_condition_is_lax_while(precision):
    """res = a ** b by repeated multiplication; the trip count comes from an input."""

    def body(a, b):
        res, _ = mb.while_loop(
            _cond=lambda res, k: mb.less(x=k, y=b),
            _body=lambda res, k: (mb.mul(x=res, y=a), mb.add(x=k, y=np.float32(1))),
            loop_vars=(np.array([1.0], np.float32), np.array([0.0], np.float32)),
        )
        return res

    a = np.array([1.5], np.float32)
    model = build(body, {"a": a, "b": np.array([4.0], np.float32)}, precision=precision)
    assert "while" in primitives(model, {"a": a, "b": np.array([4.0], np.float32)})
    for n in (0.0, 1.0, 5.0):
        feeds = {"a": a, "b": np.array([n], np.float32)}
        expected = np.array([1.5 ** n], np.float32)
        same(predict(model, feeds)[0], expected, rtol=1e-3 if precision == "fp16" else 1e-6)  # fp16 products
        same(jitted(model, feeds)[0], expected, rtol=1e-3 if precision == "fp16" else 1e-6)
    assert not model.runner.eager


def test_while_loop_static_trip_count_is_unrolled():
    """i < 5 is static: the loop runs at trace time (no while in the jaxpr), the counter stays static."""

    def body(x):
        i, y = mb.while_loop(
            _cond=lambda i, y: mb.less(x=i, y=np.int32(5)),
            _body=lambda i, y: (mb.add(x=i, y=np.int32(1)), mb.add(x=mb.mul(x=y, y=np.float32(0.5)), y=mb.cast(x=i, dtype="fp32"))),
            loop_vars=(np.int32(0), x),
        )
        return i, mb.reshape(x=y, shape=mb.concat(values=(mb.expand_dims(x=i, axes=[0]), np.array([-1], np.int32)), axis=0))

    x = rand(5, 2)
    expected = x.copy()
    for i in range(5):
        expected = expected * np.float32(0.5) + np.float32(i)
    model = build(body, {"x": x})
    i, y = predict(model, {"x": x})
    same(i, np.int32([5]))  # Core ML returns a scalar output as shape (1,)
    same(y, expected)
    assert "while" not in primitives(model, {"x": x})
    assert not model.runner.eager


def test_while_loop_nested_with_cond():
    """for i < n: x = x + 1 if i is even else 2 * x; an inner loop halves x while it exceeds 4."""

    def body(x, n):
        n = mb.squeeze(x=n)

        def outer_body(i, y):
            even = mb.equal(x=mb.mod(x=i, y=np.int32(2)), y=np.int32(0))
            y = mb.cond(pred=even, _true_fn=lambda: mb.add(x=y, y=np.float32(1)), _false_fn=lambda: mb.mul(x=y, y=np.float32(2)))
            y = mb.while_loop(
                _cond=lambda z: mb.greater(x=mb.reduce_max(x=z), y=np.float32(4)),
                _body=lambda z: mb.mul(x=z, y=np.float32(0.5)),
                loop_vars=(y,),
            )
            return mb.add(x=i, y=np.int32(1)), y

        _, y = mb.while_loop(_cond=lambda i, y: mb.less(x=i, y=n), _body=outer_body, loop_vars=(np.int32(0), x))
        return y

    def reference(x, n):
        for i in range(n):
            x = x + 1 if i % 2 == 0 else x * 2
            while x.max() > 4:
                x = x * np.float32(0.5)
        return x

    x = np.abs(rand(3))
    model = build(body, {"x": x, "n": np.array([1], np.int32)})
    for n in (0, 1, 6):
        feeds = {"x": x, "n": np.array([n], np.int32)}
        same(predict(model, feeds)[0], reference(x, n))
        same(jitted(model, feeds)[0], reference(x, n))
    assert {"while", "cond"} <= primitives(model, feeds)
    assert not model.runner.eager
    # vmapped: each example has its own trip count and branch choices
    (batched,) = model.predict_batch({"x": np.stack([x, 2 * x, x]), "n": np.array([[0], [3], [6]], np.int32)}).values()
    same(batched, np.stack([reference(x, 0), reference(2 * x, 3), reference(x, 6)]))


def test_while_loop_growing_tensor_runs_op_by_op():
    """acc grows by one row per iteration: not a lax.while_loop; predict runs op by op, jit refuses."""

    def body(x, n):
        n = mb.squeeze(x=n)
        _, acc = mb.while_loop(
            _cond=lambda i, acc: mb.less(x=i, y=n),
            _body=lambda i, acc: (mb.add(x=i, y=np.int32(1)), mb.concat(values=(acc, x), axis=0)),
            loop_vars=(np.int32(0), x),
        )
        return acc

    x = rand(1, 3)
    model = build(body, {"x": x, "n": np.array([3], np.int32)})
    same(predict(model, {"x": x, "n": np.array([3], np.int32)})[0], np.concatenate([x] * 4))
    assert model.runner.eager
    same(predict(model, {"x": x, "n": np.array([0], np.int32)})[0], x)
    with pytest.raises(mlc.MLCUnsupportedError, match="variables change type"):
        jitted(model, {"x": x, "n": np.array([3], np.int32)})


def test_while_loop_growing_list_runs_op_by_op():
    """Appends update * i for i < n to a dynamic list, then gathers it (coremltools' TestList case)."""

    def body(n, update):
        n = mb.squeeze(x=n)
        ls = mb.make_list(init_length=1, elem_shape=(2,))
        _, _, ls, _ = mb.while_loop(
            _cond=lambda i, n_, ls, u: mb.less(x=i, y=n_),
            _body=lambda i, n_, ls, u: (
                mb.add(x=i, y=np.int32(1)),
                n_,
                mb.list_write(ls=ls, index=i, value=mb.mul(x=u, y=mb.cast(x=i, dtype="fp32"))),
                u,
            ),
            loop_vars=(np.int32(0), n, ls, update),
        )
        return mb.list_gather(ls=ls, indices=mb.range_1d(start=np.int32(0), end=mb.list_length(ls=ls), step=np.int32(1)))

    update = np.array([1.0, 2.0], np.float32)
    model = build(body, {"n": np.array([3], np.int32), "update": update})
    for n in (3, 0, 5):
        expected = update * np.arange(max(n, 1), dtype=np.float32)[:, None]  # the list starts with one zero element
        same(predict(model, {"n": np.array([n], np.int32), "update": update})[0], expected)
    assert model.runner.eager
    with pytest.raises(mlc.MLCUnsupportedError, match="may grow"):
        jitted(model, {"n": np.array([3], np.int32), "update": update})


def test_while_loop_fixed_length_list_in_traced_loop():
    """A fixed-length list is a lax.while_loop variable written at a traced index."""

    def body(x, n):
        n = mb.squeeze(x=n)
        ls = mb.make_list(init_length=4, elem_shape=(3,), dynamic_length=False)
        _, ls = mb.while_loop(
            _cond=lambda i, ls: mb.less(x=i, y=n),
            _body=lambda i, ls: (
                mb.add(x=i, y=np.int32(1)),
                mb.list_write(ls=ls, index=i, value=mb.mul(x=x, y=mb.cast(x=i, dtype="fp32"))),
            ),
            loop_vars=(np.int32(0), ls),
        )
        return mb.list_gather(ls=ls, indices=np.arange(4, dtype=np.int32)), mb.list_read(ls=ls, index=n)

    x = rand(3)
    model = build(body, {"x": x, "n": np.array([2], np.int32)})
    for n in (0, 2, 3):
        feeds = {"x": x, "n": np.array([n], np.int32)}
        expected = np.zeros((4, 3), np.float32)
        expected[:n] = x * np.arange(n, dtype=np.float32)[:, None]
        for outs in (predict(model, feeds), jitted(model, feeds)):
            same(outs[0], expected)
            same(outs[1], expected[n])
    assert "while" in primitives(model, {"x": x, "n": np.array([2], np.int32)})
    assert not model.runner.eager


# -- lists -----------------------------------------------------------------------------------
def _list_program(a, b):
    """coremltools' TestList smoke case: read unwritten, write, write beyond the end, scatter."""
    ls = mb.make_list(init_length=2, elem_shape=(2,))
    first = mb.list_read(ls=ls, index=np.int32(0))
    ls = mb.list_write(ls=ls, index=np.int32(0), value=a)
    ls = mb.list_write(ls=ls, index=np.int32(4), value=b)
    ls = mb.list_scatter(ls=ls, indices=np.array([2, 1], np.int32), value=np.array([[-1, -2], [-4, -5]], np.float32))
    return first, mb.list_read(ls=ls, index=np.int32(0)), mb.list_gather(ls=ls, indices=np.array([4, 2, 3], np.int32)), mb.list_length(ls=ls)


def test_list_ops_with_traced_values():
    a, b = rand(2), rand(2)
    model = build(_list_program, {"a": a, "b": b})
    expected = [np.zeros(2, np.float32), a, np.stack([b, [-1, -2], [0, 0]]).astype(np.float32), np.int32(5)]
    # predict returns a scalar output as shape (1,), as Core ML does; the pure function keeps rank 0
    for outs, boundary in ((predict(model, {"a": a, "b": b}), True), (jitted(model, {"a": a, "b": b}), False)):
        for out, ref in zip(outs, expected):
            same(out, np.atleast_1d(ref) if boundary else ref)


def test_list_ops_static_fold():
    """Every list value static: reads are static, so they can be reshape shapes under jit."""

    def body(x):
        ls = mb.make_list(init_length=1, elem_shape=(2,), dtype="int32")
        ls = mb.list_write(ls=ls, index=np.int32(2), value=np.array([3, 4], np.int32))
        ls = mb.list_scatter(ls=ls, indices=np.array([0], np.int32), value=np.array([[4, 3]], np.int32))
        shape = mb.list_read(ls=ls, index=np.int32(2))
        zeros = mb.list_gather(ls=ls, indices=np.array([1], np.int32))
        return mb.reshape(x=x, shape=shape), zeros, mb.list_read(ls=ls, index=np.int32(0))

    x = rand(12)
    model = build(body, {"x": x})
    for outs in (predict(model, {"x": x}), jitted(model, {"x": x})):
        same(outs[0], x.reshape(3, 4))
        same(outs[1], np.zeros((1, 2), np.int32))
        same(outs[2], np.array([4, 3], np.int32))
    assert primitives(model, {"x": x}) <= {"reshape"}


def test_list_element_shape_from_first_write():
    """A symbolic elem_shape is fixed by the first write; unwritten elements then read as zeros."""

    def body(x):
        ls = mb.make_list(init_length=3, elem_shape=("s0", 2))
        ls = mb.list_write(ls=ls, index=np.int32(1), value=x)
        return mb.list_gather(ls=ls, indices=np.array([0, 1], np.int32))

    x = rand(4, 2)
    model = build(body, {"x": x})
    same(predict(model, {"x": x})[0], np.stack([np.zeros_like(x), x]))


@pytest.mark.parametrize(
    "body, message",
    [
        (lambda x: mb.list_length(ls=mb.list_write(ls=mb.make_list(init_length=2, elem_shape=(3,), dynamic_length=False), index=np.int32(2), value=x)), "fixed-length"),
        (lambda x: mb.list_read(ls=mb.list_write(ls=mb.make_list(init_length=2, elem_shape=(3,)), index=np.int32(0), value=x), index=np.int32(2)), "out of range"),
        (lambda x: mb.list_gather(ls=mb.make_list(init_length=2, elem_shape=(3,)), indices=np.array([0, -1], np.int32)), "out of range"),
        (lambda x: mb.list_read(ls=mb.make_list(init_length=2, elem_shape=("s0",)), index=np.int32(0)), "element shape is unknown"),
    ],
)
def test_list_errors(body, message):
    with pytest.raises(mlc.MLCError, match=message):
        build(body, {"x": rand(3)}).predict({"x": rand(3)})


# -- converted torch scripts -----------------------------------------------------------------
class _DoubleUntil(torch.nn.Module):
    def forward(self, x):
        while bool(x.sum() < 100.0):
            x = x * 2.0
        return x


class _Branch(torch.nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x * 2.0
        return x - 1.0


@pytest.mark.parametrize("module, scales", [(_DoubleUntil, (1.0, 30.0)), (_Branch, (1.0, -1.0))])
def test_torch_script(module, scales):
    import coremltools as ct

    module = module().eval()
    mlmodel = ct.convert(
        torch.jit.script(module),
        inputs=[ct.TensorType(name="x", shape=(2, 3))],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS15,
        compute_precision=ct.precision.FLOAT32,
    )
    model = mlc.load(mlmodel)
    for scale in scales:
        x = np.abs(rand(2, 3)) * np.float32(scale)
        (out,) = model.predict({"x": x}).values()
        same(out, module(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)
    assert not model.runner.eager
