"""Whole models built from torch modules, converted with coremltools (TorchScript trace) and run
with mlc; torch is the oracle.

Every model is converted for iOS15 and iOS18 (where attention becomes a fused
``scaled_dot_product_attention`` op), at fp32 and fp16 compute precision. fp16 programs are run
twice: as mlc runs them on CPU by default (fp16 weights, fp32 arithmetic) and with
``compute_precision="float16"`` (fp16 arithmetic).

Errors are measured against the output's scale: ``|mlc - torch| <= rtol * (|torch| + max|torch|)``,
i.e. ``assert_allclose(rtol=rtol, atol=rtol * max|torch|)``, so elements near zero are judged
against the size of the output rather than their own.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlc.model
from mlc.testing import torch_models
from mlc.testing.torch_models import MODELS

TARGETS = ("iOS15", "iOS18")

# fp32: mlc and torch both compute in fp32 and differ only in summation order (worst seen: 3e-7).
# fp16: weights rounded to fp16 (relative error up to 2**-11 each), and from iOS16 on the output is
#       declared fp16 and rounded too; these compound through ~10-20 layers (worst seen: 4.3e-4).
# fp16-compute: every op also computes in fp16, so accumulation errors add up (worst seen: 6.6e-4).
TOLERANCES = {"fp32": 1e-5, "fp16": 3e-3, "fp16-compute": 5e-3}


def _cases(precisions):
    for name in MODELS:
        for target in TARGETS:
            for precision in precisions:
                yield pytest.param(name, target, precision, id=f"{name}-{target}-{precision}")


def _compare(actual, expected, rtol):
    actual = np.asarray(actual, dtype=np.float32)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _storage(precision):
    return "fp16" if precision.startswith("fp16") else "fp32"


def _compute(precision):
    return "float16" if precision == "fp16-compute" else "auto"


@pytest.mark.parametrize("name, target, precision", _cases(("fp32", "fp16")))
def test_no_unsupported_ops(converted, name, target, precision):
    exe = mlc.describe(converted(name, target, precision))
    assert exe.unsupported == {}


def test_attention_uses_fused_op_on_ios18(converted):
    for target, expected in (("iOS15", 0), ("iOS18", 1)):
        exe = mlc.describe(converted("transformer_encoder", target, "fp32"))
        assert exe.op_histogram.get("scaled_dot_product_attention", 0) == expected


def test_batch_norm_not_folded(converted):
    exe = mlc.describe(converted("resnet", "iOS15", "fp32"))
    assert exe.op_histogram.get("batch_norm", 0) == 1


@pytest.mark.parametrize("name, target, precision", _cases(("fp32", "fp16", "fp16-compute")))
def test_predict_matches_torch(loaded, torch_model, feeds, name, target, precision):
    model = loaded(name, target, _storage(precision), _compute(precision))
    _, _, expected = torch_model(name)
    out = model.predict(feeds(name))
    assert list(out) == ["y"]
    assert out["y"].dtype == model.output_description["y"].dtype
    # coremltools declares fp16 programs' outputs fp16 from iOS16 on (inputs stay fp32 as given)
    assert out["y"].dtype == (np.float16 if precision != "fp32" and target != "iOS15" else np.float32)
    _compare(out["y"], expected, TOLERANCES[precision])


@pytest.mark.parametrize("name, target", [("resnet", "iOS15"), ("gpt_decoder", "iOS18")])
def test_predict_batch(loaded, torch_model, name, target):
    """A batch-1 model run on (B, 1, ...) stacked examples equals torch on the (B, ...) batch."""
    import torch

    module, (example,), _ = torch_model(name)
    g = torch.Generator().manual_seed(2)
    shape = (3,) + tuple(example.shape[1:])
    if example.is_floating_point():
        batch = torch.randn(shape, generator=g)
    else:
        batch = torch.randint(0, int(example.max()) + 1, shape, generator=g)
    with torch.no_grad():
        expected = module(batch).numpy()
    model = loaded(name, target, "fp32")
    (input_name,) = torch_models.input_names((example,))
    out = model.predict_batch({input_name: batch.numpy()[:, None]})
    assert out["y"].shape == (3, 1) + expected.shape[1:]
    _compare(out["y"][:, 0], expected, TOLERANCES["fp32"])


@pytest.mark.parametrize("name", MODELS)
def test_jax_function_jit_and_grad(loaded, torch_model, feeds, name):
    """``jax_function`` jits to predict's result, and its gradients (w.r.t. params and float
    inputs) are finite, nonzero for every param, and equal torch autograd's.

    coremltools names a weight const after its torch parameter (``blocks.0.ln1.weight`` ->
    ``blocks_0_ln1_weight``) unless a pass rewrote it (conv + batch norm fusion); those are compared.
    """
    import torch

    module, example, expected = torch_model(name)
    model = loaded(name, "iOS18", "fp32")
    fn, params = model.jax_function()
    inputs = {k: jnp.asarray(v) for k, v in feeds(name).items()}
    np.testing.assert_allclose(jax.jit(fn)(params, inputs)["y"], model.predict(feeds(name))["y"], rtol=1e-6, atol=1e-6)

    cotangent = np.random.default_rng(3).standard_normal(expected.shape).astype(np.float32)
    floats = {k: v for k, v in inputs.items() if jnp.issubdtype(v.dtype, jnp.floating)}

    def loss(p, x):
        return jnp.sum(fn(p, {**inputs, **x})["y"] * cotangent)

    value, (grads, input_grads) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, floats)
    assert np.isfinite(value)
    assert set(grads) == set(params)
    grads = {k: np.asarray(g) for k, g in grads.items()}
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    assert [k for k, g in grads.items() if not np.any(g)] == []

    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in example]
    module.zero_grad()
    (module(*leaves) * torch.from_numpy(cotangent)).sum().backward()
    named = {n.replace(".", "_"): p.grad.numpy() for n, p in module.named_parameters() if n.replace(".", "_") in params}
    assert named
    for k, g in named.items():
        _compare(grads[k], g, 1e-5)
    for (k, x), t in zip(inputs.items(), leaves):
        if k in floats:
            _compare(input_grads[k], t.grad.numpy(), 1e-5)
