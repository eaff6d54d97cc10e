"""On an accelerator mlc traces fp32 matrix products and convolutions at full fp32 precision
(``mlc.runtime.target.lowering_for``): JAX's default would let a GPU use TF32 for them. The
traced program is inspected (no GPU is needed): every ``dot_general`` / ``conv_general_dilated``
of an ML Program traced for "gpu" carries HIGHEST, and those traced for "cpu" are left as the
lowering wrote them."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import mlc
from mlc.runtime import target

torch = pytest.importorskip("torch")

from mlc.testing import torch_models  # noqa: E402


class ConvLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # 5x5: XLA's convolution on CPU too (a 3x3 kernel on 3 channels is a patch matrix there, mlc.kernels.patches)
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 5), torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _precisions(model, platform: str) -> list:
    fn, params = model.jax_function()
    x = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    with target.lowering_for(platform):
        jaxpr = jax.make_jaxpr(fn)(params, x)
    found = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append((eqn.primitive.name, eqn.params.get("precision")))
            for value in eqn.params.values():  # nested jaxprs (pjit, scan, cond bodies)
                inner = getattr(value, "jaxpr", None)
                if inner is not None:
                    walk(inner if hasattr(inner, "eqns") else inner.jaxpr)

    walk(jaxpr.jaxpr)
    return found


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prec") / "ConvLinear.mlpackage"
    torch_models.convert(ConvLinear().eval(), (torch.zeros(1, 3, 8, 8),), target="iOS17", path=path)
    return mlc.load(path)


def test_gpu_traces_fp32_products_at_highest_precision(model):
    found = _precisions(model, "gpu")
    assert {name for name, _ in found} == {"dot_general", "conv_general_dilated"}
    highest = jax.lax.Precision.HIGHEST
    assert all(p == (highest, highest) for _, p in found), found


def test_cpu_traces_are_left_alone(model):
    found = _precisions(model, "cpu")
    assert found and not any(p == (jax.lax.Precision.HIGHEST,) * 2 for _, p in found), found
