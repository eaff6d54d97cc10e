"""Core ML's NeuralNetwork rank validation at load (``mlc.frontends.neuralnetwork.rank_rules``):
an invalid network is refused by ``mlc.load`` naming the layer, its valid counterpart loads."""

from __future__ import annotations

import numpy as np
import pytest

import mlc
from mlc._errors import MLCParametersError
from mlc.testing.nn_specs import network


def _refused(builder, match):
    with pytest.raises(MLCParametersError, match=match):
        mlc.load(builder.spec)


# -- minimum rank (validateRankCount via validateSoftmaxLayer, validatePoolingLayer) ---------------
def test_softmax_on_a_rank1_blob_under_exact_mapping_is_refused_at_load():
    b = network({"x": (5,)}, ["y"], exact=True)
    b.add_softmax("sm", "x", "y")
    _refused(b, r"layer 'sm' \(softmax\): input rank 1 is less than the minimum 3 .*EXACT_ARRAY_MAPPING")


def test_softmax_on_a_rank3_blob_loads_and_runs():
    b = network({"x": (5, 1, 1)}, ["y"], exact=True)
    b.add_softmax("sm", "x", "y")
    x = np.arange(5, dtype=np.float32).reshape(5, 1, 1)
    y = mlc.load(b.spec).predict({"x": x})["y"]
    np.testing.assert_allclose(np.ravel(y), np.exp(x.ravel()) / np.exp(x.ravel()).sum(), rtol=1e-5)


def test_softmax_on_a_rank1_blob_in_the_rank5_world_loads():
    b = network({"x": (5,)}, ["y"], exact=False)  # blobs are rank 5: no rank rule applies
    b.add_softmax("sm", "x", "y")
    mlc.load(b.spec)


def test_pooling_needs_rank4():
    b = network({"x": (3, 4, 4)}, ["y"], exact=True)
    b.add_pooling("pool", 2, 2, 2, 2, "MAX", "VALID", "x", "y")
    _refused(b, r"layer 'pool' \(pooling\): input rank 3 is less than the minimum 4")
    ok = network({"x": (1, 3, 4, 4)}, ["y"], exact=True)
    ok.add_pooling("pool", 2, 2, 2, 2, "MAX", "VALID", "x", "y")
    mlc.load(ok.spec)


# -- maximum rank (validateInnerProductLayer: rank 1 to 5) --------------------------------------
def _inner_product(shape):
    b = network({"x": shape}, ["y"], exact=True)
    w = np.ones((2, shape[-1]), np.float32)
    b.add_inner_product("ip", w, None, shape[-1], 2, False, "x", "y")
    return b


def test_inner_product_rank_at_most_5():
    _refused(_inner_product((1, 1, 1, 1, 1, 4)), r"layer 'ip' \(innerProduct\): input rank 6 is more than the maximum 5")
    mlc.load(_inner_product((1, 1, 4, 1, 1)).spec)


# -- rank equality (validateInputOutputRankEquality, validateConcatLayer, tensor messages) -----------
def test_output_rank_must_equal_input_rank():
    b = network({"x": (3, 4, 4)}, ["y"], exact=True)
    b.add_activation("r", "RELU", "x", "h")
    b.add_softmax("sm", "h", "y")
    b.spec.neuralNetwork.layers[-1].outputTensor.add().rank = 4
    _refused(b, r"layer 'sm' \(softmax\): Core ML's Softmax layer expects equal ranks for its input and output")
    ok = network({"x": (3, 4, 4)}, ["y"], exact=True)
    ok.add_softmax("sm", "x", "y")
    ok.spec.neuralNetwork.layers[-1].outputTensor.add().rank = 3
    mlc.load(ok.spec)


def test_concat_inputs_of_one_rank():
    b = network({"a": (2, 3, 4), "c": (1, 2, 3, 4)}, ["y"], exact=True)
    b.add_elementwise("cat", ["a", "c"], "y", mode="CONCAT")
    _refused(b, r"layer 'cat' \(concat\): Core ML's Concat layer expects equal ranks for its inputs")
    ok = network({"a": (2, 3, 4), "c": (1, 3, 4)}, ["y"], exact=True)
    ok.add_elementwise("cat", ["a", "c"], "y", mode="CONCAT")
    mlc.load(ok.spec)


def test_input_tensor_rank_must_match_the_description():
    b = network({"x": (3, 4, 4)}, ["y"], exact=True)
    b.add_softmax("sm", "x", "y")
    b.spec.neuralNetwork.layers[0].inputTensor.add().rank = 4
    _refused(b, r"layer 'sm' \(softmax\): input 'x' is also an input to the model, but the rank given in the layer \(4\)")


# -- propagation through rank-changing layers ------------------------------------------------------
def test_rank_propagates_through_expand_dims():
    b = network({"x": (5,)}, ["y"], exact=True)
    b.add_activation("r", "RELU", "x", "h")
    b.add_expand_dims("e", "h", "h2", axes=[0])
    b.add_softmax("sm", "h2", "y")
    _refused(b, r"layer 'sm' \(softmax\): input rank 2 is less than the minimum 3 .*layer 'e' \(expandDims\)")
    ok = network({"x": (5,)}, ["y"], exact=True)
    ok.add_activation("r", "RELU", "x", "h")
    ok.add_expand_dims("e", "h", "h2", axes=[-1, -2])
    ok.add_softmax("sm", "h2", "y")
    y = mlc.load(ok.spec).predict({"x": np.zeros(5, np.float32)})["y"]
    np.testing.assert_allclose(np.ravel(y), np.full(5, 0.2), rtol=1e-5)


def test_rank_propagates_through_reshape_static_and_reduce():
    b = network({"x": (2, 3, 4)}, ["y"], exact=True)
    b.add_reduce_sum("r", "x", "s", axes=[0, 1], keepdims=False)  # rank 1
    b.add_softmax("sm", "s", "y")
    _refused(b, r"layer 'sm' \(softmax\): input rank 1 is less than the minimum 3 .*layer 'r' \(reduceSum\)")
    b = network({"x": (2, 3, 4)}, ["y"], exact=True)
    b.add_reshape_static("rs", "x", "h", (24,))
    b.add_batchnorm("bn", 24, np.ones(24), np.zeros(24), np.zeros(24), np.ones(24), "h", "y")
    _refused(b, r"layer 'bn' \(batchnorm\): input rank 1 is less than the minimum 3 .*layer 'rs' \(reshapeStatic\)")
    ok = network({"x": (2, 3, 4)}, ["y"], exact=True)
    ok.add_reduce_sum("r", "x", "s", axes=[0], keepdims=True)  # rank 3
    ok.add_softmax("sm", "s", "y")
    mlc.load(ok.spec)


def test_axis_rules_read_the_layers_input_tensor():
    b = network({"x": (2, 3, 4)}, ["y"], exact=True)
    b.add_softmax_nd("sm", "x", "y", axis=3)
    b.spec.neuralNetwork.layers[0].inputTensor.add().rank = 3
    _refused(b, r"layer 'sm' \(softmaxND\): axis 3 is out of range for an input of rank 3")
    ok = network({"x": (5,)}, ["y"], exact=True)
    ok.add_flatten_to_2d("f", "x", "y", axis=1)  # axis == rank: Core ML accepts it without inputTensor
    mlc.load(ok.spec)


def test_unknown_rank_skips_the_checks():
    b = network({"x": (2, 3, 4), "shape": (2,)}, ["y"], exact=True)
    b.add_reshape_dynamic("rd", ["x", "shape"], "h")  # rank unknown statically
    b.add_softmax("sm", "h", "y")
    mlc.load(b.spec)


# -- nested networks (validateBranchLayer, validateLoopLayer) ---------------------------------------
def _nested(spec):
    from coremltools.models.neural_network import NeuralNetworkBuilder

    return NeuralNetworkBuilder(nn_spec=spec)


def _branch(shape):
    b = network({"x": shape, "c": (1,)}, ["y"], exact=True)
    layer = b.add_branch("br", "c")
    _nested(layer.branch.ifBranch).add_softmax("inner_sm", "x", "y")
    _nested(layer.branch.elseBranch).add_activation("inner_relu", "RELU", "x", "y")
    return b


def test_nested_networks_are_validated():
    _refused(_branch((5,)), r"layer 'inner_sm' \(softmax\): input rank 1 is less than the minimum 3")
    mlc.load(_branch((5, 1, 1)).spec)


def test_loop_body_is_validated():
    b = network({"x": (5,)}, ["y"], exact=True)
    b.add_activation("init", "LINEAR", "x", "y")
    loop = b.add_loop("loop", max_iterations=2)
    _nested(loop.loop.bodyNetwork).add_softmax("body_sm", "y", "y")
    _refused(b, r"layer 'body_sm' \(softmax\): input rank 1 is less than the minimum 3")
    ok = network({"x": (5, 1, 1)}, ["y"], exact=True)
    ok.add_activation("init", "LINEAR", "x", "y")
    loop = ok.add_loop("loop", max_iterations=2)
    _nested(loop.loop.bodyNetwork).add_softmax("body_sm", "y", "y")
    mlc.load(ok.spec)
