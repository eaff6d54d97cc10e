"""The NeuralNetwork front end as a whole: shape worlds at the boundary, image preprocessing,
classifier and regressor outputs, weight storage (fp16, linear and lookup-table quantization at
1-8 bits), custom layers, and the errors for what mlc refuses. Expected values come from numpy."""

import numpy as np
import pytest
from PIL import Image

import mlc
import mlc.model
from mlc._errors import MLCFeatureTypeError, MLCParametersError, MLCUnsupportedError

from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402
from coremltools.models.neural_network.quantization_utils import _convert_array_to_nbit_quantized_bytes  # noqa: E402

RNG = np.random.default_rng(0)


def _linear_identity(builder, src="data", dst="out"):
    builder.add_activation("identity", "LINEAR", src, dst, params=[1.0, 0.0])


# -- shape worlds ----------------------------------------------------------------------------
def test_rank5_input_mapping_and_declared_output_shape():
    b = NeuralNetworkBuilder([("data", datatypes.Array(3, 4, 5))], [("out", datatypes.Array(3, 4, 5))])
    _linear_identity(b)
    model = mlc.load(b.spec)
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    out = model.predict({"data": x})["out"]
    assert out.shape == (3, 4, 5)  # [1, 1, C, H, W] comes back as declared
    np.testing.assert_array_equal(out, x)
    seq = RNG.standard_normal((2, 1, 3, 4, 5)).astype(np.float32)  # [Seq, Batch, C, H, W] is accepted too
    np.testing.assert_array_equal(model.predict({"data": seq})["out"], seq)


def test_rank5_vector_input_is_a_channel_vector():
    b = NeuralNetworkBuilder([("data", datatypes.Array(6))], [("out", None)])
    _linear_identity(b)
    out = mlc.load(b.spec).predict({"data": np.arange(6, dtype=np.float32)})["out"]
    assert out.shape == (1, 1, 6, 1, 1)  # no declared shape: the rank-5 tensor as computed
    np.testing.assert_array_equal(out.reshape(-1), np.arange(6))


def test_exact_mapping_keeps_rank():
    b = NeuralNetworkBuilder([("data", datatypes.Array(2, 7))], [("out", None)], disable_rank5_shape_mapping=True)
    _linear_identity(b)
    x = RNG.standard_normal((2, 7)).astype(np.float32)
    np.testing.assert_array_equal(mlc.load(b.spec).predict({"data": x})["out"], x)


def test_rank5_input_of_wrong_shape_is_refused():
    b = NeuralNetworkBuilder([("data", datatypes.Array(3, 4, 5))], [("out", None)])
    _linear_identity(b)
    with pytest.raises(MLCFeatureTypeError, match="shape"):
        mlc.load(b.spec).predict({"data": np.zeros((2, 1, 3, 4, 6), np.float32)})


# -- image preprocessing ---------------------------------------------------------------------
def _image_model(color_space: int, channels: int, rank4: bool = False):
    b = NeuralNetworkBuilder([("image", datatypes.Array(channels, 4, 6))], [("out", None)], disable_rank5_shape_mapping=rank4)
    _linear_identity(b, "image")
    spec = b.spec
    t = spec.description.input[0].type
    t.imageType.width, t.imageType.height, t.imageType.colorSpace = 6, 4, color_space
    if rank4:
        spec.neuralNetwork.imageInputShapeMapping = 1
    return spec


@pytest.mark.parametrize("bgr", [False, True])
def test_image_scaler_biases_follow_the_color_order(bgr):
    spec = _image_model(30 if bgr else 20, 3)
    pre = spec.neuralNetwork.preprocessing.add()
    pre.featureName = "image"
    pre.scaler.channelScale, pre.scaler.redBias, pre.scaler.greenBias, pre.scaler.blueBias = 0.5, -1.0, -2.0, -3.0
    pixels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out = mlc.load(spec).predict({"image": Image.fromarray(pixels, "RGB")})["out"]
    assert out.shape == (1, 1, 3, 4, 6)  # RANK5_IMAGE_MAPPING
    chw = pixels.astype(np.float32).transpose(2, 0, 1)
    expected = chw * 0.5 + np.array([-1.0, -2.0, -3.0], np.float32)[:, None, None]  # R, G, B
    if bgr:
        expected = expected[::-1]  # the network sees B, G, R, each with its own bias
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_grayscale_mean_image_and_rank4_mapping():
    spec = _image_model(10, 1, rank4=True)
    mean = RNG.uniform(0, 255, (1, 4, 6)).astype(np.float32)
    pre = spec.neuralNetwork.preprocessing.add()
    pre.featureName = "image"
    pre.meanImage.meanImage.extend(mean.reshape(-1).tolist())
    pixels = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    out = mlc.load(spec).predict({"image": Image.fromarray(pixels, "L")})["out"]
    assert out.shape == (1, 1, 4, 6)  # RANK4_IMAGE_MAPPING: [1, C, H, W]
    np.testing.assert_allclose(out[0], pixels[None].astype(np.float32) - mean, rtol=1e-6)


def test_mean_image_of_wrong_size_is_refused():
    spec = _image_model(10, 1)
    spec.neuralNetwork.preprocessing.add(featureName="image").meanImage.meanImage.extend([1.0, 2.0])
    with pytest.raises(MLCParametersError, match="meanImage"):
        mlc.load(spec)


# -- classifier and regressor ----------------------------------------------------------------
@pytest.mark.parametrize("labels", [["cat", "dog", "bird"], [3, 1, 4]])
def test_classifier_outputs_label_and_probabilities(labels):
    b = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("probs", None)], mode="classifier")
    b.add_softmax("softmax", "data", "probs")
    b.set_class_labels(labels, predicted_feature_name="label", prediction_blob="probs")
    model = mlc.load(b.spec)
    x = np.array([0.5, 2.0, -1.0], np.float32)
    out = model.predict({"data": x})
    expected = np.exp(x) / np.exp(x).sum()
    assert out["label"] == labels[1]
    assert set(out["probs"]) == set(labels)
    np.testing.assert_allclose([out["probs"][k] for k in labels], expected, rtol=1e-6)


def test_regressor_outputs_values():
    b = NeuralNetworkBuilder([("data", datatypes.Array(4))], [("y", datatypes.Array(2))], mode="regressor")
    w = RNG.standard_normal((2, 4)).astype(np.float32)
    b.add_inner_product("fc", w, None, 4, 2, False, "data", "y")
    x = RNG.standard_normal(4).astype(np.float32)
    out = mlc.load(b.spec).predict({"data": x})["y"]
    np.testing.assert_allclose(out, w @ x, rtol=1e-5)


# -- weight storage --------------------------------------------------------------------------
def _fc_model(weight_bytes, **quant):
    b = NeuralNetworkBuilder([("data", datatypes.Array(5))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_inner_product("fc", weight_bytes, None, 5, 3, False, "data", "y", is_quantized_weight=True, **quant)
    return b.spec


@pytest.mark.parametrize("nbits", range(1, 9))
def test_lookup_table_quantized_weights(nbits):
    q = RNG.integers(0, 2**nbits, (3, 5))
    lut = RNG.standard_normal(2**nbits).astype(np.float32)
    raw = _convert_array_to_nbit_quantized_bytes(q.reshape(-1), nbits).tobytes()
    spec = _fc_model(raw, quantization_type="lut", nbits=nbits, quant_lut=lut)
    x = RNG.standard_normal(5).astype(np.float32)
    np.testing.assert_allclose(mlc.load(spec).predict({"data": x})["y"], lut[q] @ x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nbits", [2, 5, 8])
def test_linear_quantized_weights_per_channel(nbits):
    q = RNG.integers(0, 2**nbits, (3, 5))
    scale, bias = RNG.uniform(0.1, 1, 3).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
    raw = _convert_array_to_nbit_quantized_bytes(q.reshape(-1), nbits).tobytes()
    spec = _fc_model(raw, quantization_type="linear", nbits=nbits, quant_scale=scale, quant_bias=bias)
    x = RNG.standard_normal(5).astype(np.float32)
    w = q * scale[:, None] + bias[:, None]
    np.testing.assert_allclose(mlc.load(spec).predict({"data": x})["y"], w @ x, rtol=1e-5, atol=1e-5)


def test_fp16_weights():
    w = RNG.standard_normal((3, 5)).astype(np.float16)
    b = NeuralNetworkBuilder([("data", datatypes.Array(5))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_inner_product("fc", w.astype(np.float32), None, 5, 3, False, "data", "y")
    layer = b.spec.neuralNetwork.layers[0].innerProduct
    del layer.weights.floatValue[:]
    layer.weights.float16Value = w.tobytes()
    x = RNG.standard_normal(5).astype(np.float32)
    np.testing.assert_allclose(mlc.load(b.spec).predict({"data": x})["y"], w.astype(np.float32) @ x, rtol=1e-5)


def test_weight_of_wrong_size_is_refused():
    b = NeuralNetworkBuilder([("data", datatypes.Array(5))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_inner_product("fc", np.ones((3, 5), np.float32), None, 5, 3, False, "data", "y")
    del b.spec.neuralNetwork.layers[0].innerProduct.weights.floatValue[-1]
    with pytest.raises(MLCParametersError, match="fc"):
        mlc.load(b.spec)


def test_weights_are_params_of_the_pure_function():
    b = NeuralNetworkBuilder([("data", datatypes.Array(5))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_inner_product("fc", np.ones((3, 5), np.float32), None, 5, 3, False, "data", "y")
    fn, params = mlc.load(b.spec).jax_function()
    assert "fc/weights" in params
    import jax

    grad = jax.grad(lambda p: fn(p, {"data": np.ones(5, np.float32)})["y"].sum())(params)
    np.testing.assert_allclose(grad["fc/weights"], np.ones((3, 5)))


# -- custom layers ---------------------------------------------------------------------------
def _custom_spec():
    from coremltools.proto import NeuralNetwork_pb2

    params = NeuralNetwork_pb2.CustomLayerParams()
    params.className = "ScaledSwish"
    params.parameters["beta"].doubleValue = 2.0
    params.weights.add().floatValue.extend([1.0, 2.0, 3.0])
    b = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("out", None)], disable_rank5_shape_mapping=True)
    b.add_custom("swish", ["data"], ["out"], custom_proto_spec=params)
    return b.spec


def test_unbound_custom_layer_is_refused_at_load_naming_the_class():
    mlc.unregister_custom_layer("ScaledSwish")
    with pytest.raises(MLCUnsupportedError, match="ScaledSwish.*register_custom_layer"):
        mlc.load(_custom_spec())
    exe = mlc.describe(_custom_spec())
    assert exe.unsupported == {"custom:ScaledSwish": 1}


def test_custom_layer_runs_the_bound_function():
    import jax

    def scaled_swish(x, *, parameters, weights):
        return weights[0] * x * jax.nn.sigmoid(parameters["beta"] * x)

    mlc.register_custom_layer("ScaledSwish", scaled_swish)
    try:
        model = mlc.load(_custom_spec())
    finally:
        mlc.unregister_custom_layer("ScaledSwish")
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    expected = np.array([1, 2, 3]) * x / (1 + np.exp(-2.0 * x))
    np.testing.assert_allclose(model.predict({"data": x})["out"], expected, rtol=1e-6)


# -- refusals --------------------------------------------------------------------------------
def test_layer_without_type_is_refused():
    b = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("out", None)], disable_rank5_shape_mapping=True)
    _linear_identity(b)
    b.spec.neuralNetwork.layers.add(name="empty", input=["out"], output=["z"])
    with pytest.raises(MLCParametersError, match="layer 'empty' has no layer type"):
        mlc.load(b.spec)


def test_layer_reading_an_undefined_blob_is_refused():
    b = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("out", None)], disable_rank5_shape_mapping=True)
    _linear_identity(b, src="nowhere")
    with pytest.raises(MLCParametersError, match="nowhere"):
        mlc.load(b.spec).predict({"data": np.zeros(3, np.float32)})


def test_every_layer_type_is_lowered():
    from coremltools.proto import NeuralNetwork_pb2

    from mlc.frontends.neuralnetwork.registry import supported_layers

    oneof = NeuralNetwork_pb2.NeuralNetworkLayer.DESCRIPTOR.oneofs_by_name["layer"]
    missing = sorted({f.name for f in oneof.fields} - set(supported_layers()))
    assert missing == []


def test_repeated_layer_names_keep_their_own_weights():
    """Converters repeat layer names across nested networks; each layer keeps its weights."""
    b = NeuralNetworkBuilder([("data", datatypes.Array(2))], [("y", None)], disable_rank5_shape_mapping=True)
    b.add_inner_product("fc", np.eye(2, dtype=np.float32) * 2, None, 2, 2, False, "data", "h")
    b.add_inner_product("fc2", np.eye(2, dtype=np.float32) * 3, None, 2, 2, False, "h", "y")
    b.spec.neuralNetwork.layers[1].name = "fc"  # the builder refuses repeats; converters' nested networks do not
    model = mlc.load(b.spec)
    assert set(model.params) == {"fc/weights", "fc#2/weights"}
    np.testing.assert_allclose(model.predict({"data": np.array([1.0, -1.0], np.float32)})["y"], [6.0, -6.0])


def test_output_takes_its_declared_shape_when_sizes_match():
    """An image [1, C, 1, 1] under RANK4_IMAGE_MAPPING read out as a declared (1, 1, C), as Core ML
    gives it (coremltools' test_model.py image-input tests)."""
    b = NeuralNetworkBuilder([("image", datatypes.Array(3, 1, 1))], [("out", datatypes.Array(1, 1, 3))], disable_rank5_shape_mapping=True)
    _linear_identity(b, "image")
    spec = b.spec
    t = spec.description.input[0].type
    t.imageType.width, t.imageType.height, t.imageType.colorSpace = 1, 1, 20
    spec.neuralNetwork.imageInputShapeMapping = 1
    out = mlc.load(spec).predict({"image": Image.fromarray(np.array([[[4, 2, 5]]], np.uint8), "RGB")})["out"]
    assert out.shape == (1, 1, 3)
    np.testing.assert_array_equal(out.reshape(-1), [4, 2, 5])


def test_predict_batch_vmaps_the_network():
    b = NeuralNetworkBuilder([("data", datatypes.Array(4))], [("y", datatypes.Array(2))])  # rank-5 world
    w = RNG.standard_normal((2, 4)).astype(np.float32)
    b.add_inner_product("fc", w, None, 4, 2, False, "data", "y")
    xs = RNG.standard_normal((5, 4)).astype(np.float32)
    out = mlc.load(b.spec).predict_batch({"data": xs})["y"]
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out, xs @ w.T, rtol=1e-5, atol=1e-6)
