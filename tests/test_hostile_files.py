"""Hostile and corrupt model files refused at load, before anything runs (issue 9, scope 1).

Each case edits a valid model the way a corrupt or crafted file would and checks the mlc error:
its code (Core ML's MLModelError codes) and that the message names the file and the field.
Manifest, weight-blob and linkedModel cases live beside their readers (tests/format,
tests/classic/test_classic_pipeline.py); input cases in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc
from mlc._errors import MLCIOError, MLCParametersError, MLCUnsupportedError
from mlc.io.writer import write_mlmodel, write_mlpackage

pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def program_spec():
    """A small ML Program (consts inline, no weight file): y = relu(x + c) * 2, and its fill."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_mlmodel

    def body(x):
        y = mb.relu(x=mb.add(x=x, y=np.array([1.0, -2.0, 3.0], np.float32)), name="y_relu")
        return mb.mul(x=y, y=2.0, name="y"), mb.fill(shape=np.array([2, 3], np.int32), value=0.5, name="filled")

    return mil_mlmodel(body, {"x": (1, 3)}).get_spec()


def copy(spec):
    new = type(spec)()
    new.CopyFrom(spec)
    return new


def ops(spec):
    return spec.mlProgram.functions["main"].block_specializations["CoreML7"].operations


def op_named(spec, name):
    return next(op for op in ops(spec) if op.outputs and op.outputs[0].name == name)


def save_package(spec, tmp_path, name="m.mlpackage") -> str:
    path = str(tmp_path / name)
    write_mlpackage(path, spec)
    return path


def refused(path_or_spec, error, *fragments, **load_kwargs):
    with pytest.raises(error) as info:
        mlc.load(path_or_spec, **load_kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return info.value


def test_the_unedited_program_runs(program_spec, tmp_path):
    out = mlc.load(save_package(program_spec, tmp_path)).predict({"x": np.array([[1.0, 1.0, -5.0]], np.float32)})
    np.testing.assert_allclose(out["y"], [[4.0, 0.0, 0.0]])
    np.testing.assert_allclose(out["filled"], np.full((2, 3), 0.5))


# -- the specification ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [11, 2**31 - 1])
def test_unknown_specification_version(program_spec, tmp_path, version):
    spec = copy(program_spec)
    spec.specificationVersion = version
    path = save_package(spec, tmp_path)
    error = refused(path, MLCUnsupportedError, path, f"specificationVersion {version}", "newer")
    assert error.code == "unsupported"
    refused(spec, MLCUnsupportedError, "specificationVersion")  # an in-memory spec too


# -- values a program reads ----------------------------------------------------------------------


def test_undefined_value(program_spec, tmp_path):
    spec = copy(program_spec)
    op_named(spec, "y").inputs["x"].arguments[0].name = "nowhere"
    path = save_package(spec, tmp_path)
    error = refused(path, MLCParametersError, path, "'y'", "'nowhere'", "nothing in the program defines")
    assert error.code == "parameters"


def test_value_read_before_it_is_defined_is_a_cycle(program_spec, tmp_path):
    spec = copy(program_spec)
    block = ops(spec)
    i = next(k for k, op in enumerate(block) if op.outputs and op.outputs[0].name == "y")
    producer = next(k for k, op in enumerate(block) if op.outputs and op.outputs[0].name == "y_relu")
    order = list(range(len(block)))
    order.remove(i)
    order.insert(producer, i)  # y = mul(y_relu, 2) now runs before y_relu exists
    copies = [copy(block[k]) for k in order]
    del block[:]
    for op in copies:
        block.add().CopyFrom(op)
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "operation 'y' (mul)", "defined only after it", "cycle")


def test_self_reference_is_a_cycle(program_spec, tmp_path):
    spec = copy(program_spec)
    op_named(spec, "y").inputs["x"].arguments[0].name = "y"  # y = mul(y, 2)
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "'y'", "cycle")


def test_value_defined_twice(program_spec, tmp_path):
    spec = copy(program_spec)
    op_named(spec, "filled").outputs[0].name = "y_relu"
    spec.mlProgram.functions["main"].block_specializations["CoreML7"].outputs[1] = "y_relu"
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "'y_relu' again")


def test_block_output_that_nothing_defines(program_spec, tmp_path):
    spec = copy(program_spec)
    spec.mlProgram.functions["main"].block_specializations["CoreML7"].outputs[0] = "ghost"
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "block output", "'ghost'")


def test_blocks_nested_too_deep(program_spec):
    """64 levels of nested blocks (cond inside cond ...): refused by name, not by Python's
    recursion limit. Built in memory: protobuf's own parser would refuse the serialized form."""
    spec = copy(program_spec)
    op = ops(spec)[0]
    for _ in range(70):
        op = op.blocks.add().operations.add()
        op.type = "cond"
    refused(spec, MLCParametersError, "nests blocks more than 64 deep")


# -- shapes ----------------------------------------------------------------------------------------


def test_declared_tensor_larger_than_the_limit(program_spec, tmp_path):
    spec = copy(program_spec)
    dims = op_named(spec, "y_relu").outputs[0].type.tensorType.dimensions
    dims[1].constant.size = 1 << 40  # a 4 TiB tensor
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "'y_relu'", "(1, 1099511627776)", "limit of 4 GiB", "max_tensor_bytes")


def test_the_limit_is_configurable(program_spec, tmp_path, monkeypatch):
    spec = copy(program_spec)
    op_named(spec, "y_relu").outputs[0].type.tensorType.dimensions[1].constant.size = 1 << 16  # 256 KiB declared
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, "limit of 64 KiB", max_tensor_bytes="64K")
    monkeypatch.setenv("MLC_MAX_TENSOR_BYTES", "65536")
    refused(path, MLCParametersError, "limit of 64 KiB")
    mlc.load(path, max_tensor_bytes="1M")  # the declared size is within this limit
    with pytest.raises(MLCParametersError, match="not a positive byte count"):
        mlc.load(path, max_tensor_bytes="lots")


def test_fill_to_an_absurd_shape_is_refused_before_allocating(program_spec, tmp_path):
    """The fill's declared output type says (2, 3) but its shape constant asks for 4e10
    elements: the op is evaluated at trace time, and must be refused before numpy or XLA
    allocates 160 GB."""
    spec = copy(program_spec)
    fill = op_named(spec, "filled")
    const_name = fill.inputs["shape"].arguments[0].name
    shape_const = op_named(spec, const_name)
    shape_const.attributes["val"].immediateValue.tensor.ints.values[:] = [200000, 200000]
    path = save_package(spec, tmp_path)
    model = mlc.load(path)
    with pytest.raises(MLCParametersError, match="limit of 4 GiB"):
        model.predict({"x": np.zeros((1, 3), np.float32)})


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda a: a.shape.__setitem__(1, -3), "negative dimension"),
        (lambda a: a.shape.__setitem__(1, 1 << 40), "limit of 4 GiB"),
        (lambda a: (a.shapeRange.sizeRanges.add(lowerBound=1, upperBound=1), a.shapeRange.sizeRanges.add(lowerBound=5, upperBound=2)), "dimension 1 [5, 2] is invalid"),
        (lambda a: (a.shapeRange.sizeRanges.add(lowerBound=1, upperBound=-5), a.shapeRange.sizeRanges.add(lowerBound=1, upperBound=3)), "[1, -5] is invalid"),
        (lambda a: a.enumeratedShapes.shapes.add(shape=[1, 1 << 50]), "enumerated shape"),
    ],
    ids=["negative", "absurd", "range-upside-down", "range-negative", "enumerated-absurd"],
)
def test_bad_declared_input_shapes(program_spec, tmp_path, edit, fragment):
    spec = copy(program_spec)
    edit(spec.description.input[0].type.multiArrayType)
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "input 'x'", fragment)


def test_bad_declared_image_size(tmp_path):
    spec = _image_network()
    spec.description.input[0].type.imageType.width = -4
    path = str(tmp_path / "m.mlmodel")
    write_mlmodel(path, spec)
    refused(path, MLCParametersError, path, "input 'image'", "negative")
    spec.description.input[0].type.imageType.width = 1 << 31
    spec.description.input[0].type.imageType.height = 1 << 31
    write_mlmodel(str(tmp_path / "n.mlmodel"), spec)
    refused(str(tmp_path / "n.mlmodel"), MLCParametersError, "input 'image'", "limit of 4 GiB")


def test_input_declared_twice(program_spec, tmp_path):
    spec = copy(program_spec)
    spec.description.input.add().CopyFrom(spec.description.input[0])
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "input 'x' is declared twice")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda s: s.description.input[0].type.multiArrayType.shape.__setitem__(1, 4), "declares shape (1, 4), but the program declares tensor<fp32, [1, 3]>"),
        (lambda s: setattr(s.description.input[0], "name", "z"), "declares input 'z', but function 'main' takes only ['x']"),
        (lambda s: setattr(s.description.output[1], "name", "w"), "declares output 'w', but function 'main' returns only"),
    ],
    ids=["shape", "input-name", "output-name"],
)
def test_description_and_program_disagree(program_spec, tmp_path, edit, fragment):
    spec = copy(program_spec)
    edit(spec)
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, fragment)


def test_program_input_the_description_omits(program_spec, tmp_path):
    spec = copy(program_spec)
    extra = spec.mlProgram.functions["main"].inputs.add()
    extra.CopyFrom(spec.mlProgram.functions["main"].inputs[0])
    extra.name = "secret"
    path = save_package(spec, tmp_path)
    refused(path, MLCParametersError, path, "takes input 'secret', which the model description does not declare")


# -- NeuralNetwork graphs --------------------------------------------------------------------------


def _network():
    from mlc.testing.nn_specs import network

    b = network({"x": (3,)}, ["z"], exact=True)
    b.add_activation("a", "RELU", "x", "h")
    b.add_activation("b", "SIGMOID", "h", "z")
    return b.spec


def _image_network():
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("image", datatypes.Array(3, 4, 4))], [("z", None)])
    b.add_activation("a", "RELU", "image", "z")
    b.set_pre_processing_parameters(image_input_names=["image"])
    return b.spec


def test_network_reads_a_blob_nothing_produces(tmp_path):
    spec = _network()
    spec.neuralNetwork.layers[1].input[0] = "nowhere"
    path = str(tmp_path / "m.mlmodel")
    write_mlmodel(path, spec)
    refused(path, MLCParametersError, path, "layer 'b'", "'nowhere'", "no input or layer")


def test_network_layers_out_of_order(tmp_path):
    spec = _network()
    layers = spec.neuralNetwork.layers
    first = type(layers[0])()
    first.CopyFrom(layers[0])
    del layers[0]
    layers.add().CopyFrom(first)  # b (reads h) now runs before a (produces h)
    path = str(tmp_path / "m.mlmodel")
    write_mlmodel(path, spec)
    refused(path, MLCParametersError, path, "layer 'b'", "'h'", "only a later layer produces")


def test_networks_nested_too_deep():
    spec = _network()
    network = spec.neuralNetwork
    for i in range(70):
        layer = network.layers.add(name=f"loop{i}")
        network = layer.loop.bodyNetwork
    refused(spec, MLCParametersError, "nest more than 64 deep")


def test_unrecognised_file_is_an_io_error(tmp_path):
    path = tmp_path / "m.mlmodel"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    error = refused(str(path), MLCIOError, str(path), "not a Core ML model")
    assert error.code == "io"


@pytest.mark.parametrize(
    "add_layer, fragment",
    [
        (lambda b: b.add_fill_static("f", "f", output_shape=(100000, 100000, 4), value=1.5), "layer 'f' (fillStatic)"),
        (lambda b: b.add_range_static("f", "f", end=1e18, start=0.0, step=1.0), "layer 'f' (rangeStatic)"),
        (lambda b: b.add_broadcast_to_static("f", "x", "f", output_shape=(100000, 100000, 3)), "a value of the traced program"),
    ],
    ids=["fill", "range", "broadcast"],
)
def test_network_layers_asking_for_absurd_tensors(add_layer, fragment):
    """Sizes that come from layer parameters, not declared types: a constant-folded layer is
    checked abstractly before it runs, a traced one in the program before XLA compiles it."""
    from mlc.testing.nn_specs import network

    b = network({"x": (3,)}, ["z"], exact=True)
    add_layer(b)
    b.add_activation("relu", "RELU", "f", "z")
    model = mlc.load(b.spec)
    with pytest.raises(MLCParametersError) as info:
        model.predict({"x": np.ones(3, np.float32)})
    assert fragment in str(info.value) and "limit of 4 GiB" in str(info.value) and "<in-memory model>" in str(info.value)


def test_weight_file_name_with_a_nul_character(tmp_path):
    """Found by the fuzzer: os.path refuses NUL with a ValueError; mlc says which constant."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_mlmodel

    weight = np.arange(24, dtype=np.float32).reshape(2, 12)
    path = str(tmp_path / "w.mlpackage")
    mil_mlmodel(lambda x: mb.linear(x=x, weight=weight), {"x": (1, 12)}).save(path)
    spec_file = tmp_path / "w.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel"
    data = spec_file.read_bytes()
    assert data.count(b"@model_path/weights/weight.bin") == 1
    spec_file.write_bytes(data.replace(b"@model_path/weights/weight.bin", b"@model_path/weights/weight\x00bin"))
    refused(path, MLCIOError, path, "NUL character")
