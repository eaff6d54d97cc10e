"""mlc.runtime.interpreter: the one node loop of every front end (numpy is the oracle)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlc
from mlc._errors import DataDependentShapeError, MLCError
from mlc.runtime import limits
from mlc.runtime.interpreter import Node, run_node, static_argument


def _node(compute, args, *, static=None, fold=True, nested=False):
    return Node(
        what="m: node 'n' (kind)", compute=compute, args=list(args), static_args=static or [False] * len(args),
        fold=fold, nested=nested, key="n", scope="n",
    )


def test_a_node_on_static_inputs_folds_to_numpy():
    a = np.arange(6, dtype=np.int32)
    result, folded = run_node(_node(lambda: jnp.cumsum(a), [a]), {})
    assert folded and isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, np.cumsum(a))


def test_a_node_that_may_not_fold_runs_as_jax():
    a = np.ones(3, np.float32)
    result, folded = run_node(_node(lambda: jnp.sin(a), [a], fold=False), {})
    assert not folded and isinstance(result, jax.Array)
    np.testing.assert_allclose(result, np.sin(a), rtol=1e-6)


def test_a_traced_static_input_is_a_data_dependent_shape():
    def f(x):
        return static_argument(x, "m: node 'n' (reshape)", "'shape'")

    with pytest.raises(DataDependentShapeError, match="node 'n' \\(reshape\\): input 'shape'"):
        jax.jit(f)(jnp.array([2, 3]))
    np.testing.assert_array_equal(static_argument(jnp.array([2, 3]), "m", "'shape'"), [2, 3])  # concrete: numpy


def test_a_failing_node_is_an_mlc_error_naming_it():
    def broken():
        raise ValueError("bad axis")

    with pytest.raises(MLCError, match="m: node 'n' \\(kind\\) failed: ValueError: bad axis"):
        run_node(_node(broken, [np.ones(2)]), {})


def test_a_node_too_large_for_the_limit_is_refused_before_it_runs():
    """The node is traced abstractly first (jax.eval_shape: shapes, no memory), then refused."""
    with limits.tensor_limit(1 << 16), pytest.raises(limits.TensorLimitError, match="node 'n'.*4194304"):
        run_node(_node(lambda: jnp.zeros((1 << 20,), jnp.float32), [np.int32(5)]), {})
    result, _ = run_node(_node(lambda: jnp.zeros((1 << 10,), jnp.float32), [np.int32(5)]), {})
    assert result.shape == (1 << 10,)


def _mil_model():
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_mlmodel

    return mlc.load(mil_mlmodel(lambda x: mb.sin(x=mb.relu(x=x, name="r"), name="s"), {"x": (2, 3)}))


def _nn_model():
    from mlc.testing.nn_specs import network

    b = network({"x": (2, 3)}, ["s"], exact=True)
    b.add_activation("r", "RELU", "x", "r")
    b.add_unary("s", "r", "s", mode="exp")
    return mlc.load(b.spec)


@pytest.mark.parametrize("make, first, second", [(_mil_model, ("relu", "r"), ("sin", "s")), (_nn_model, ("activation", "r"), ("unary", "s"))])
def test_debug_prints_every_node_of_either_front_end(monkeypatch, capsys, make, first, second):
    model = make()
    x = np.array([[-1, 0, 1], [2, -3, 4]], np.float32)
    monkeypatch.setenv("MLC_DEBUG", "2")
    model.predict({"x": x})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[mlc]")]
    assert lines[0].startswith(f"[mlc] {first[0]} {first[1]!r} -> {first[1]}: float32[2, 3] min=0 max=4")
    assert lines[1].startswith(f"[mlc] {second[0]} {second[1]!r} -> {second[1]}: float32[2, 3]")


@pytest.mark.parametrize("make", [_mil_model, _nn_model])
def test_limit_returns_the_nth_nodes_outputs(monkeypatch, make):
    model = make()
    x = np.array([[-1, 0, 1], [2, -3, 4]], np.float32)
    full = model.predict({"x": x})["s"]
    monkeypatch.setenv("MLC_LIMIT", "1")
    out = model.predict({"x": x})
    assert list(out) == ["r"]
    np.testing.assert_array_equal(out["r"], np.maximum(x, 0))
    monkeypatch.setenv("MLC_LIMIT", "5")  # past the last node: the model's outputs
    np.testing.assert_allclose(model.predict({"x": x})["s"], full, rtol=1e-6)
