"""The torch models of the ML Program tests, converted to NeuralNetwork models
(``convert_to="neuralnetwork"``, iOS14) and run with mlc; torch is the oracle.

Weights are stored as fp32, fp16, 8-bit linear quantization (per output channel) and a 4-bit
lookup table (coremltools' ``quantize_weights``). fp32 and fp16 are compared with torch. A
quantized model computes with weights that differ from torch's by design, so it is compared with
the same model dequantized by coremltools itself (``quantization_utils._dequantize_nn_spec``):
that checks mlc's reading of the quantized storage against coremltools', at fp32 tolerance.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlc  # noqa: E402
import mlc.model  # noqa: E402
from mlc.testing import torch_models  # noqa: E402
from mlc.testing.torch_models import MODELS  # noqa: E402

# fp32: summation order only (worst seen 6e-7 relative to max|out|). fp16 weights: each rounded
# by up to 2**-11 relative, compounding through ~10-20 layers (as for the ML Program tests).
TOLERANCES = {"fp32": 1e-5, "fp16": 3e-3}


@pytest.fixture(scope="module")
def nn_model(torch_model):
    cache = {}

    def get(name, precision):
        if (name, precision) not in cache:
            module, example, _ = torch_model(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[name, precision] = torch_models.convert(module, example, "neuralnetwork", precision)
        return cache[name, precision]

    return get


def _compare(actual, expected, rtol):
    actual = np.asarray(actual, dtype=np.float32)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected))))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_matches_torch(nn_model, torch_model, feeds, name, precision):
    _, _, expected = torch_model(name)
    model = mlc.load(nn_model(name, precision))
    assert model.spec.WhichOneof("Type") == "neuralNetwork"
    _compare(model.predict(feeds(name))["y"], expected, TOLERANCES[precision])


@pytest.mark.parametrize("precision", ["int8", "lut4"])
@pytest.mark.parametrize("name", MODELS)
def test_quantized_weights_read_like_coremltools(nn_model, feeds, name, precision):
    from coremltools.models.neural_network import quantization_utils

    quantized = nn_model(name, precision)
    spec = quantized.get_spec()
    stored = [layer for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") in ("convolution", "innerProduct")]
    assert any(layer.innerProduct.weights.rawValue or layer.convolution.weights.rawValue for layer in stored)
    dequantized = quantized.get_spec()
    quantization_utils._dequantize_nn_spec(dequantized.neuralNetwork)
    expected = mlc.load(dequantized).predict(feeds(name))["y"]
    _compare(mlc.load(quantized).predict(feeds(name))["y"], np.asarray(expected), 1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_no_unsupported_layers(nn_model, name):
    exe = mlc.describe(nn_model(name, "fp32"))
    assert exe.unsupported == {}
    assert exe.op_histogram
