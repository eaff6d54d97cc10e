"""mlc's XLA:CPU compiler options, chosen per program (mlc.runtime.xla_options)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlc.runtime import xla_options
from mlc.runtime.hoist import HoistedFunction

CPU = jax.devices("cpu")[0]
YNN = "xla_cpu_experimental_ynn_fusion_type"


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")


def test_has_convolution_looks_inside_nested_jaxprs():
    x, w = jnp.zeros((1, 2, 5, 5)), jnp.zeros((3, 2, 3, 3))
    assert xla_options.has_convolution(jax.make_jaxpr(_conv)(x, w))
    assert not xla_options.has_convolution(jax.make_jaxpr(lambda a, b: a @ b)(jnp.zeros((2, 3)), jnp.zeros((3, 4))))
    nested = jax.make_jaxpr(lambda x, w: jax.jit(_conv)(x, w) + 1)(x, w)
    assert xla_options.has_convolution(nested)

    def scanned(x, w):
        return jax.lax.scan(lambda c, _: (_conv(c, w[:, :2]), None), x, None, length=2)[0]

    assert xla_options.has_convolution(jax.make_jaxpr(scanned)(jnp.zeros((1, 2, 5, 5)), jnp.zeros((2, 2, 3, 3))))
    branch = jax.make_jaxpr(lambda p, x, w: jax.lax.cond(p, _conv, lambda x, w: jnp.zeros((1, 3, 5, 5)), x, w))(True, x, w)
    assert xla_options.has_convolution(branch)


def test_options_per_program_on_cpu(monkeypatch):
    monkeypatch.delenv("MLC_XLA_DEFAULTS", raising=False)
    conv = jax.make_jaxpr(_conv)(jnp.zeros((1, 2, 5, 5)), jnp.zeros((3, 2, 3, 3)))
    dots = jax.make_jaxpr(lambda a, b: a @ b)(jnp.zeros((2, 3)), jnp.zeros((3, 4)))
    assert xla_options.compiler_options(CPU, conv)[YNN] == "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    assert "INDIVIDUAL_DOT" in xla_options.compiler_options(CPU, dots)[YNN]
    assert xla_options.compiler_options(CPU) == xla_options.compiler_options(CPU, dots)  # unknown program: the general options
    monkeypatch.setenv("MLC_XLA_DEFAULTS", "1")
    assert xla_options.compiler_options(CPU, conv) is None


@pytest.mark.parametrize("with_conv", [True, False])
def test_hoisted_function_compiles_with_the_programs_options(with_conv):
    seen = []

    def options(jaxpr):
        seen.append(None if jaxpr is None else xla_options.has_convolution(jaxpr))
        return xla_options.compiler_options(CPU, jaxpr)

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)

    def fn(params, inputs):
        kernel = params["w"] * 2.0  # weight-only: hoisted
        if with_conv:
            return {"y": _conv(inputs["x"], kernel)}
        return {"y": inputs["x"].reshape(1, -1)[:, :18] @ kernel.reshape(4, 18).T}

    f = HoistedFunction(fn, compiler_options=options)
    y = np.asarray(f({"w": jnp.asarray(w)}, {"x": x})["y"])
    if with_conv:
        expected = np.asarray(jax.lax.conv_general_dilated(x.astype(np.float64), 2.0 * w.astype(np.float64), (1, 1), "SAME", precision="highest"))
    else:
        expected = x.reshape(1, -1)[:, :18] @ (2 * w).reshape(4, 18).T
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert seen[-1] is with_conv  # the per-call part was compiled with the options for what it computes
