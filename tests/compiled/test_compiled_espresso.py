"""Compiled NeuralNetwork folders (espresso: ``model.espresso.net`` / ``.shape`` / ``.weights``).

Oracles: the uncompiled twin ``.mlmodel`` each author shipped (the model ``coremlc`` compiled),
run under mlc, and its protobuf weights; numpy for small espresso folders written here, which
check each layer mapping as ``mlc.io.compiled.espresso_layers`` states it.

FindFour's compiled weights are the twin's convolution weights with its batch norms folded in,
rounded to fp16 by ``coremlc``: the compiled model is not the twin bit for bit. Its outputs (a
softmax) differ from the twin's by up to ~4e-3 (mean ~3e-4) on random images; with the twin's own
weights folded in fp32 in place of the compiled ones, the rebuilt network predicts the twin's
outputs within 1e-5, which checks the mapping itself.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct

import numpy as np
import pytest
from PIL import Image

import mlc
from mlc.io.compiled.espresso import load_espresso
from mlc.io.compiled.espresso_layers import supported_types
from mlc.io.proto import proto

MNIST = "mnist_classifier/MNISTClassifier"
FINDFOUR = "cardscan_findfour/FindFour"
DRAWING = "updatable_drawing_classifier/UpdatableDrawingClassifier"
_MODELS: dict[str, mlc.Model] = {}


def paths(testdata, name: str) -> tuple[str, str]:
    folder, twin = str(testdata / f"{name}.mlmodelc"), str(testdata / f"{name}.mlmodel")
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} is absent")
    return folder, twin


def loaded(key: str, source) -> mlc.Model:
    """One ``mlc.Model`` per key for the module (loading compiles)."""
    if key not in _MODELS:
        _MODELS[key] = mlc.load(source)
    return _MODELS[key]


def images(spec, n: int, seed: int) -> list[Image.Image]:
    """``n`` random PIL images of the size and colour space the first input declares."""
    image = spec.description.input[0].type.imageType
    gray = image.colorSpace == proto("FeatureTypes").ImageFeatureType.GRAYSCALE
    rng = np.random.default_rng(seed)
    shape = (image.height, image.width) if gray else (image.height, image.width, 3)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L" if gray else "RGB") for _ in range(n)]


def writable_copy(folder: str, tmp_path) -> str:
    """A copy of a (read-only) test folder whose files and folders may be changed."""
    target = str(tmp_path / os.path.basename(folder))
    shutil.copytree(folder, target)
    for root, dirs, files in os.walk(target):
        for name in [*dirs, *files, "."]:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    return target


# -- the test folders --------------------------------------------------------------------------------
def test_mnist_classifier_is_its_twin_and_predicts_the_same(compiled_testdata):
    folder, twin = paths(compiled_testdata, MNIST)
    spec = load_espresso(folder, folder)
    reference = mlc.load(twin).spec
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    assert spec.description == reference.description
    assert spec.neuralNetworkClassifier.int64ClassLabels == reference.neuralNetworkClassifier.int64ClassLabels
    assert list(spec.neuralNetworkClassifier.preprocessing) == list(reference.neuralNetworkClassifier.preprocessing)
    model, expected = loaded("mnist", spec), loaded("mnist twin", twin)
    for image in images(spec, 3, seed=0):
        a, b = model.predict({"image": image}), expected.predict({"image": image})
        assert a["classLabel"] == b["classLabel"]
        assert a["labelProbabilities"].keys() == b["labelProbabilities"].keys()
        got = np.array([a["labelProbabilities"][k] for k in b["labelProbabilities"]])
        want = np.array([b["labelProbabilities"][k] for k in b["labelProbabilities"]])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_drawing_embedding_stage_predicts_what_the_twins_stage_predicts(compiled_testdata):
    folder, twin = paths(compiled_testdata, DRAWING)
    spec = load_espresso(os.path.join(folder, "model0"), f"{folder}/model0")
    stage = mlc.load(twin).spec.pipelineClassifier.pipeline.models[0]
    assert spec.description == stage.description and spec.specificationVersion == stage.specificationVersion
    assert not spec.neuralNetwork.preprocessing  # scale 1, no bias: as the twin, none
    model, expected = mlc.load(spec), mlc.load(stage)
    for image in images(spec, 2, seed=1):
        got, want = model.predict({"drawing": image})["embedding"], expected.predict({"drawing": image})["embedding"]
        assert got.shape == want.shape == (128,)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _folded_twin_weights(twin_spec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each twin convolution's weights and bias with the batch norm after it folded in (fp32)."""

    def values(wp):
        return np.array(wp.floatValue, np.float32) if len(wp.floatValue) else np.frombuffer(wp.float16Value, "<f2").astype(np.float32)

    layers = {layer.name: layer for layer in twin_spec.neuralNetwork.layers}
    out = {}
    for name, layer in layers.items():
        if layer.WhichOneof("layer") != "convolution":
            continue
        conv = layer.convolution
        w = values(conv.weights).reshape(conv.outputChannels, -1)
        b = values(conv.bias) if conv.hasBias else np.zeros(conv.outputChannels, np.float32)
        if name + "_bn" in layers:
            bn = layers[name + "_bn"].batchnorm
            gamma, beta, mean, var = (values(x) for x in (bn.gamma, bn.beta, bn.mean, bn.variance))
            scale = gamma / np.sqrt(var + np.float32(bn.epsilon))
            w, b = w * scale[:, None], beta + (b - mean) * scale
        out[name] = (w.reshape(-1), b)
    return out


def test_findfour_weights_are_the_twins_with_batch_norm_folded(compiled_testdata):
    folder, twin = paths(compiled_testdata, FINDFOUR)
    spec = load_espresso(folder, folder)
    folded = _folded_twin_weights(mlc.load(twin).spec)
    convolutions = [layer for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") == "convolution"]
    assert len(convolutions) == len(folded) == 26
    for layer in convolutions:
        w, b = folded[layer.name]
        stored = np.frombuffer(layer.convolution.weights.float16Value, "<f2").astype(np.float32)
        assert stored.shape == w.shape, layer.name
        # fp16 rounding of the folded value (subnormals aside), in the protobuf's own order
        np.testing.assert_allclose(stored, w, rtol=1e-3, atol=2e-7, err_msg=layer.name)
        np.testing.assert_allclose(np.array(layer.convolution.bias.floatValue), b, rtol=1e-5, atol=1e-6, err_msg=layer.name)


def test_findfour_predicts_what_its_twin_predicts(compiled_testdata):
    folder, twin = paths(compiled_testdata, FINDFOUR)
    spec = load_espresso(folder, folder)
    reference = mlc.load(twin).spec
    assert spec.description == reference.description
    assert list(spec.neuralNetwork.preprocessing) == list(reference.neuralNetwork.preprocessing)
    (image,) = images(spec, 1, seed=2)
    want = loaded("findfour twin", twin).predict({"input1": image})["output1"]
    got = loaded("findfour", spec).predict({"input1": image})["output1"]
    assert got.shape == want.shape == (3, 34, 51)
    difference = np.abs(got - want)
    assert difference.max() < 6e-3 and difference.mean() < 6e-4, (difference.max(), difference.mean())
    # the same network with the twin's weights folded in fp32: the mapping itself is exact
    folded = _folded_twin_weights(reference)
    for layer in spec.neuralNetwork.layers:
        if layer.WhichOneof("layer") == "convolution":
            layer.convolution.weights.Clear()
            layer.convolution.weights.floatValue.extend(folded[layer.name][0])
            layer.convolution.bias.Clear()
            layer.convolution.bias.floatValue.extend(folded[layer.name][1])
    exact = mlc.load(spec).predict({"input1": image})["output1"]
    np.testing.assert_allclose(exact, want, atol=1e-5)


def test_compiled_neural_networks_load_through_mlc_load(compiled_testdata):
    for name in (MNIST, FINDFOUR):
        folder, _ = paths(compiled_testdata, name)
        try:
            model = mlc.load(folder + os.sep)
        except mlc.MLCError as e:
            if "not an .mlpackage" in str(e) or "not supported yet" in str(e):
                pytest.skip(f"mlc.load does not read .mlmodelc folders yet ({e})")
            raise
        assert model.spec == load_espresso(folder, folder)


def test_truncated_weights_and_a_blob_id_out_of_range_are_mlc_errors(compiled_testdata, tmp_path):
    folder = writable_copy(paths(compiled_testdata, MNIST)[0], tmp_path)
    weights = os.path.join(folder, "model.espresso.weights")
    original = open(weights, "rb").read()
    with open(weights, "wb") as f:
        f.write(original[:-100])
    with pytest.raises(mlc.MLCIOError, match=r"blob 19 .* past the end of the file .* truncated"):
        load_espresso(folder, "MNIST")
    with pytest.raises(mlc.MLCIOError, match="truncated"):
        mlc.load(folder)
    with open(weights, "wb") as f:
        f.write(original)
    net_path = os.path.join(folder, "model.espresso.net")
    net = json.load(open(net_path))
    net["layers"][2]["blob_weights"] = 4000
    json.dump(net, open(net_path, "w"))
    with pytest.raises(mlc.MLCIOError, match=r"'drawing_conv1_fwd'.*blob_weights: blob id 4000 is not in .*ids 0\.\.19"):
        load_espresso(folder, "MNIST")


# -- small espresso folders written here, against numpy -------------------------------------------------
def _coremldata(fmt: int, description, version: int, trailer: bytes) -> bytes:
    """A ``coremldata.bin`` laid out as ``coremlc`` writes one (``mlc.io.compiled.coremldata``)."""
    kind, payload = b"generic", description.SerializeToString()
    return (
        struct.pack("<I3QQ", fmt, 1, 0, 0, len(kind)) + kind + struct.pack("<4QQ", version, 0, 0, 0, len(payload)) + payload + trailer
    )


def _array_feature(description_field, name: str, shape) -> None:
    feature = description_field.add()
    feature.name = name
    feature.type.multiArrayType.shape.extend(shape)
    feature.type.multiArrayType.dataType = proto("FeatureTypes").ArrayFeatureType.FLOAT32


def write_espresso(folder, layers: list, inputs: dict, outputs: dict, blobs: dict[int, np.ndarray] = (), *, shapes=None, version=1, net_extra=None):
    """An espresso folder: ``layers`` (JSON objects), multiarray ``inputs`` / ``outputs``
    (name -> shape), weight ``blobs`` (id -> array, written in id order)."""
    os.makedirs(folder, exist_ok=True)
    description = proto("Model").ModelDescription()
    for name, shape in inputs.items():
        _array_feature(description.input, name, shape)
    for name, shape in outputs.items():
        _array_feature(description.output, name, shape)
    names = b"".join(struct.pack("<Q", len(n)) + n.encode() for n in outputs)
    trailer = struct.pack("<QQ", 500, len(outputs)) + names
    with open(os.path.join(folder, "coremldata.bin"), "wb") as f:
        f.write(_coremldata(500, description, version, trailer))
    net = {"format_version": 200, "storage": "model.espresso.weights", "layers": layers, **(net_extra or {})}
    with open(os.path.join(folder, "model.espresso.net"), "w") as f:
        json.dump(net, f)
    if shapes is not None:
        with open(os.path.join(folder, "model.espresso.shape"), "w") as f:
            json.dump({"layer_shapes": shapes}, f)
    blobs = dict(blobs)
    data = [np.ascontiguousarray(blobs[i]).tobytes() if i in blobs else b"" for i in range(max(blobs, default=-1) + 1)]
    with open(os.path.join(folder, "model.espresso.weights"), "wb") as f:
        f.write(struct.pack("<Q", len(data)) + b"".join(struct.pack("<QQ", i, len(d)) for i, d in enumerate(data)) + b"".join(data))
    return str(folder)


def layer(kind: str, name: str, bottom: str, top: str, **params) -> dict:
    return {"type": kind, "name": name, "bottom": bottom, "top": top, "weights": {}, **params}


def test_elementwise_activation_and_pool_mappings_against_numpy(tmp_path):
    layers = [
        layer("elementwise", "add_scalar", "x", "a", operation=2, alpha=0.5, beta=0),
        layer("elementwise", "mul_scalar", "a", "b", operation=3, alpha=2.0, beta=0),
        layer("elementwise", "clip", "b", "c", operation=119, alpha=-1.0, beta=1.0),
        layer("elementwise", "threshold", "x", "d", operation=25, alpha=-0.25, beta=0),
        layer("elementwise", "sum", "c,d", "e", operation=0, alpha=1, beta=0),
        layer("elementwise", "product", "e,x", "f", operation=1, alpha=1, beta=0, fused_relu=1),
        layer("activation", "sigmoid", "f", "g", mode=3),
        layer("activation", "linear", "g", "h", mode=6, alpha=-2.0, beta=1.0),
        layer("activation", "relu_in_place", "h", "h", mode=0),  # espresso may write a blob in place
        layer("pool", "gap", "x", "p", avg_or_max=0, is_global=1, size_x=4, size_y=3, stride_x=1, stride_y=1, pad_mode=0, top_shape_style=0),
        layer("pool", "max", "x", "m", avg_or_max=1, size_x=2, size_y=2, stride_x=2, stride_y=1, pad_mode=2, top_shape_style=0),
    ]
    folder = write_espresso(tmp_path / "E.mlmodelc", layers, {"x": [2, 3, 4]}, {"h": [2, 3, 4], "p": [2, 1, 1], "m": [2, 2, 2]})
    spec = load_espresso(folder, "E")
    x = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    out = mlc.load(spec).predict({"x": x})
    c = np.clip((x + 0.5) * 2, -1, 1)
    f = np.maximum((c + np.maximum(x, -0.25)) * x, 0)
    np.testing.assert_allclose(out["h"], np.maximum(-2 / (1 + np.exp(-f)) + 1, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["p"], x.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-6)
    windows = np.stack([x[:, i : i + 2, j : j + 2].max(axis=(1, 2)) for i in range(2) for j in (0, 2)], -1).reshape(2, 2, 2)
    np.testing.assert_allclose(out["m"], windows, rtol=1e-6)


def test_rank_n_transpose_reshape_instance_norm_and_softmax_against_numpy(tmp_path):
    gamma, beta = np.array([1.5, -0.5], np.float32), np.array([0.25, 2.0], np.float32)
    params = np.stack([gamma, beta, np.zeros(2), np.ones(2)], axis=1).astype(np.float32)  # per channel [g, b, mean, var]
    layers = [
        layer("transpose", "nhwc_to_nchw", "x", "t", axis_w=1, axis_h=2, axis_k=0, axis_n=3, axis_seq=4),
        layer("batchnorm", "norm", "t", "n", C=2, blob_batchnorm_params=1, training=1, training_instancenorm=1, training_eps=1e-5, training_momentum=0.9),
        layer("reshape", "flat", "n", "r", dst_seq=1, dst_n=1, dst_k=1, dst_h=-1, dst_w=40, dst_nd_rank=2, dynamic_shape=False, mode=0, version=1),
        layer("softmax_nd", "softmax", "r", "y", nd_axis=-1),
    ]
    shapes = {
        "x": {"n": 1, "k": 4, "h": 5, "w": 2, "_rank": 4},
        "t": {"n": 1, "k": 2, "h": 4, "w": 5, "_rank": 4},
        "n": {"n": 1, "k": 2, "h": 4, "w": 5, "_rank": 4},
        "r": {"n": 1, "k": 1, "h": 1, "w": 40, "_rank": 2},
        "y": {"n": 1, "k": 1, "h": 1, "w": 40, "_rank": 2},
    }
    folder = write_espresso(tmp_path / "N.mlmodelc", layers, {"x": [1, 4, 5, 2]}, {"y": [1, 40]}, {1: params}, shapes=shapes, version=4)
    spec = load_espresso(folder, "N")
    assert spec.neuralNetwork.arrayInputShapeMapping == proto("NeuralNetwork").EXACT_ARRAY_MAPPING
    x = np.random.default_rng(4).standard_normal((1, 4, 5, 2)).astype(np.float32)
    t = x.transpose(0, 3, 1, 2)
    mean, var = t.mean(axis=(2, 3), keepdims=True), t.var(axis=(2, 3), keepdims=True)
    n = (t - mean) / np.sqrt(var + 1e-5) * gamma[:, None, None] + beta[:, None, None]
    r = n.reshape(1, 40)
    expected = np.exp(r - r.max()) / np.exp(r - r.max()).sum()
    np.testing.assert_allclose(mlc.load(spec).predict({"x": x})["y"], expected, rtol=1e-4, atol=1e-6)
    shapes["t"] = {"n": 1, "k": 2, "h": 5, "w": 4, "_rank": 4}  # what an (h, w)-swapping reading would give
    write_espresso(folder, layers, {"x": [1, 4, 5, 2]}, {"y": [1, 40]}, {1: params}, shapes=shapes, version=4)
    with pytest.raises(mlc.MLCUnsupportedError, match=r"'nhwc_to_nchw'.*gives shape \(1, 2, 4, 5\), but model.espresso.shape says \(1, 2, 5, 4\)"):
        load_espresso(folder, "N")


def test_convolution_and_inner_product_weights_and_biases(tmp_path):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 2, 3, 1)).astype(np.float16)  # [C, K, Ny, Nx]
    bias = rng.standard_normal(4).astype(np.float32)
    ip_w = rng.standard_normal((3, 4 * 4 * 2)).astype(np.float32)  # [nC, nB]
    ip_b = np.concatenate([rng.standard_normal(3), np.zeros(9)]).astype(np.float32)  # 4 * nC, as coremlc writes
    layers = [
        layer("convolution", "conv", "x", "c", C=4, K=2, Nx=1, Ny=3, n_groups=1, n_parallel=1, has_biases=1, blob_biases=1,
              blob_weights_f16=3, fused_relu=1, fused_tanh=0, has_batch_norm=0, pad_mode=0, pad_t=1, pad_b=0, pad_l=0, pad_r=0,
              pad_fill_mode=0, pad_value=0, stride_x=1, stride_y=1),
        layer("flatten", "flat", "c", "f", mode=0, nd_axis=0),
        layer("inner_product", "fc", "f", "y", nB=32, nC=3, blob_weights=5, has_biases=1, blob_biases=7, has_relu=0, has_tanh=0, has_prelu=0),
    ]
    folder = write_espresso(tmp_path / "C.mlmodelc", layers, {"x": [2, 5, 2]}, {"y": [3]}, {1: bias, 3: w, 5: ip_w, 7: ip_b})
    spec = load_espresso(folder, "C")
    conv = spec.neuralNetwork.layers[0].convolution
    assert conv.weights.float16Value == w.tobytes() and list(conv.kernelSize) == [3, 1]
    x = rng.standard_normal((2, 5, 2)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 0), (0, 0)))  # pad_t 1: 6 rows; a valid 3x1 kernel: 4 rows
    c = np.zeros((4, 4, 2), np.float32)
    for o in range(4):
        for i in range(4):
            c[o, i] = (padded[:, i : i + 3, :] * w[o].astype(np.float32)).sum(axis=(0, 1))  # w[o]: [K, Ny, Nx=1]
    c = np.maximum(c + bias[:, None, None], 0)
    expected = ip_w @ c.reshape(-1) + ip_b[:3]
    np.testing.assert_allclose(mlc.load(spec).predict({"x": x})["y"].reshape(-1), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"type": "crop"}, mlc.MLCUnsupportedError, r"layer 0 'act' .*espresso layer type 'crop' is not supported .*convolution"),
        ({"mode": 1}, mlc.MLCUnsupportedError, r"'act'.*mode = 1 is not a value mlc can map"),
        ({"mystery": 3}, mlc.MLCUnsupportedError, r"'act'.*parameter\(s\) mystery are unknown"),
        ({"weights": {"W_U8": 2}}, mlc.MLCUnsupportedError, r"'act'.*quantized or extra weights \(W_U8\)"),
        ({"bottom": 7}, mlc.MLCIOError, r"'act'.*bottom is int, not a comma-separated string"),
        ({"alpha": "big"}, mlc.MLCIOError, r"'act'.*alpha is 'big', not a finite float32 number"),
    ],
)
def test_layers_mlc_cannot_map_are_refused_naming_them(tmp_path, change, error, message):
    act = {**layer("activation", "act", "x", "y", mode=6, alpha=2.0, beta=0.0), **change}
    folder = write_espresso(tmp_path / "U.mlmodelc", [act], {"x": [3]}, {"y": [3]})
    with pytest.raises(error, match=message):
        load_espresso(folder, "U")


def test_malformed_files_are_mlc_io_errors(tmp_path):
    layers = [layer("activation", "act", "x", "y", mode=0)]
    folder = write_espresso(tmp_path / "M.mlmodelc", layers, {"x": [3]}, {"y": [3]}, {1: np.ones(3, np.float32)})
    net_path, weights_path = os.path.join(folder, "model.espresso.net"), os.path.join(folder, "model.espresso.weights")
    weights = open(weights_path, "rb").read()
    with open(weights_path, "wb") as f:  # a blob count whose table alone would be exabytes: refused before allocating
        f.write(struct.pack("<Q", 1 << 60) + weights[8:])
    with pytest.raises(mlc.MLCIOError, match="holds 1152921504606846976 blobs, whose table alone needs"):
        load_espresso(folder, "M")
    with open(weights_path, "wb") as f:
        f.write(weights)
    write_espresso(folder, [layer("activation", "act", "x", "z", mode=0)], {"x": [3]}, {"y": [3]})
    with pytest.raises(mlc.MLCIOError, match=r"output blob\(s\) 'y' are made by no layer"):
        load_espresso(folder, "M")
    write_espresso(folder, layers, {"x": [3]}, {"y": [3]}, net_extra={"storage": "../outside.weights"})
    with pytest.raises(mlc.MLCIOError, match="leaves the package"):
        load_espresso(folder, "M")
    with open(net_path, "w") as f:
        f.write('{"format_version": 200, "layers": [')
    with pytest.raises(mlc.MLCIOError, match=r"model.espresso.net: not JSON"):
        load_espresso(folder, "M")
    write_espresso(folder, layers, {"x": [3]}, {"y": [3]}, net_extra={"format_version": 300})
    with pytest.raises(mlc.MLCUnsupportedError, match="format_version 300 is not one mlc reads"):
        load_espresso(folder, "M")
    write_espresso(folder, layers, {"x": [3]}, {"y": [3]})
    data_path = os.path.join(folder, "coremldata.bin")
    data = open(data_path, "rb").read()
    with open(data_path, "wb") as f:  # the trailer's output list cut short
        f.write(data[:-1])
    with pytest.raises(mlc.MLCIOError, match=r"coremldata.bin: an output name is 1 bytes from byte 24, past the end of the trailer"):
        load_espresso(folder, "M")


def test_the_supported_types_are_listed():
    assert {"convolution", "pool", "inner_product", "activation", "elementwise", "softmax", "flatten"} <= set(supported_types())
