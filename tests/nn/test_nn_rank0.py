"""Rank-0 blobs in rank-N NeuralNetwork models (mlc/frontends/neuralnetwork/layers/shape_nd.py).

A ``squeeze`` or ``slice*`` that removes every axis gives a rank-0 blob, ``expandDims`` on it adds
``len(axes)`` axes, ``concatND`` counts it as shape (1,), and a rank-0 output comes back as (1,).
The cases are coremltools' own torch tests that pass on Core ML (``TestTensorAssign::
test_tensor_assign_dynamic_slice`` with ``mixed_rank``, the same test before coremltools 7.1,
``TestLinspace::test_linspace_dynamic`` with ``steps=1``), converted with coremltools
(``convert_to="neuralnetwork"``) and compared with torch, shape for shape.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")

import mlc  # noqa: E402


def _convert(module, inputs, *, pass_pipeline=None):
    """The NeuralNetwork spec of ``module`` traced on ``inputs`` (inputs named in0, in1, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), [t.clone() for t in inputs])
        types = [
            ct.TensorType(name=f"in{i}", shape=tuple(t.shape), dtype=np.float32 if t.is_floating_point() else np.int32)
            for i, t in enumerate(inputs)
        ]
        extra = {} if pass_pipeline is None else {"pass_pipeline": pass_pipeline}
        return ct.convert(traced, inputs=types, convert_to="neuralnetwork", skip_model_load=True, **extra).get_spec()


def _run(spec, inputs) -> np.ndarray:
    (out,) = mlc.load(spec).predict({f"in{i}": t.numpy().astype(np.float32) for i, t in enumerate(inputs)}).values()
    return out


def _check(spec, module, inputs):
    expected = module(*[t.clone() for t in inputs]).numpy()
    expected = expected.reshape(1) if expected.shape == () else expected
    out = _run(spec, inputs)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def _layers(spec) -> list[tuple[str, object]]:
    return [(layer.WhichOneof("layer"), getattr(layer, layer.WhichOneof("layer"))) for layer in spec.neuralNetwork.layers]


class TensorAssign(torch.nn.Module):
    """coremltools' ``TestTensorAssign::test_tensor_assign_dynamic_slice``."""

    def forward(self, x, begin_0, begin_1, end_1):
        x[:1, begin_0:begin_0 + 5:2, 2] = torch.tensor([1.0, 2.0, 3.0]).view(1, 3)
        x[:, 4, begin_1:end_1] = torch.tensor([1.0]).view(1, 1)
        return x


def _index(values, shape):
    return torch.as_tensor(values, dtype=torch.int32).reshape(shape)


def test_squeeze_all_of_rank3_then_expand_dims_concat():
    """``squeeze`` (squeezeAll) of (1, 1, 1) and (1, 1) indices, ``expandDims`` axes [0], then
    ``concatND`` with (1,) vectors along axis 0: the slice bounds of a rank-3 tensor."""
    inputs = [torch.rand(2, 10, 3), _index([1], (1, 1, 1)), _index([1], (1,)), _index([2], (1, 1))]
    spec = _convert(TensorAssign(), inputs)
    kinds = [k for k, _ in _layers(spec)]
    assert "concatND" in kinds and any(k == "squeeze" and p.squeezeAll for k, p in _layers(spec))
    _check(spec, TensorAssign(), inputs)
    for b0, b1, e1 in [(0, 0, 1), (3, 2, 3), (5, 1, 2)]:  # the traced slices keep their sizes
        other = [torch.rand(2, 10, 3), _index([b0], (1, 1, 1)), _index([b1], (1,)), _index([e1], (1, 1))]
        _check(spec, TensorAssign(), other)


def test_squeeze_all_of_rank1_then_expand_dims_concat():
    """The same test with (1,) indices, as coremltools wrote it before 7.1's
    ``fuse_squeeze_expand_dims`` pass: ``squeeze`` (squeezeAll) of a (1,) input, then ``expandDims``."""
    inputs = [torch.rand(2, 10, 3), _index([1], (1,)), _index([1], (1,)), _index([2], (1,))]
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::fuse_squeeze_expand_dims"])
    spec = _convert(TensorAssign(), inputs, pass_pipeline=pipeline)
    assert any(k == "squeeze" and p.squeezeAll for k, p in _layers(spec))
    assert "expandDims" in [k for k, _ in _layers(spec)]
    _check(spec, TensorAssign(), inputs)


class Linspace1(torch.nn.Module):
    """coremltools' ``TestLinspace::test_linspace_dynamic`` with ``steps=1``."""

    def forward(self, x):
        return torch.linspace(x[0], x[1], 1)


class SelectCat(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x[0], x[1, 2].unsqueeze(0), x[0, 1:2]])


class SelectStack(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x[0, 0], x[1, 2], x[0, 1]]) * 2.0


@pytest.mark.parametrize("module, shape", [(Linspace1(), (2,)), (SelectCat(), (2, 3)), (SelectStack(), (2, 3))])
def test_slice_squeezing_every_axis(module, shape):
    """``sliceStatic`` squeezing every axis, then ``expandDims`` / ``concatND`` / ``stack``: rank 1
    (a (1,) or (n,) vector), as torch."""
    x = torch.rand(*shape)
    spec = _convert(module, [x])
    assert any(k == "sliceStatic" and len(p.squeezeMasks) and all(p.squeezeMasks) for k, p in _layers(spec))
    _check(spec, module, [x])


class Select(torch.nn.Module):
    def forward(self, x):
        return x[1, 0] + 1.0


def test_rank0_output_is_returned_as_shape_1():
    x = torch.rand(2, 3)
    _check(_convert(Select(), [x]), Select(), [x])


def test_squeeze_axes_of_rank1_keeps_rank1():
    """``squeeze`` with ``axes`` on a rank-1 input keeps rank 1 (NeuralNetwork.proto: "If input
    rank is 1, output rank is also 1"); ``squeezeAll`` of an all-unit input gives rank 0."""
    from mlc.testing.nn_specs import network, predict

    b = network({"v": (1,), "m": (1, 1)}, ["axes", "all", "both"], exact=True)
    b.add_squeeze("sq_axes", "v", "sq_axes", axes=[0])
    b.add_expand_dims("axes", "sq_axes", "axes", axes=[0])
    b.add_squeeze("sq_all", "v", "sq_all", squeeze_all=True)
    b.add_expand_dims("all", "sq_all", "all", axes=[0])
    b.add_squeeze("sq_both", "m", "sq_both", axes=[0, 1])
    b.add_expand_dims("both", "sq_both", "both", axes=[-1])
    out = predict(b, {"v": np.array([3.0], np.float32), "m": np.array([[4.0]], np.float32)})
    assert out["axes"].shape == (1, 1) and out["all"].shape == (1,) and out["both"].shape == (1,)
    assert float(out["axes"][0, 0]) == 3.0 and float(out["all"][0]) == 3.0 and float(out["both"][0]) == 4.0
