"""Bad inputs to ``Model.predict`` and ``Model.predict_batch`` (issue 9): every one is refused
with an ``MLCFeatureTypeError`` (code "featureType") naming the model and the input; NaN and
Inf pass through as Core ML passes them; an input larger than ``max_tensor_bytes`` is refused
before mlc converts, copies or decodes it.

Models: an ML Program (MIL builder), a NeuralNetwork (NeuralNetworkBuilder), image inputs of
both kinds in RGB, BGR and Grayscale, and classic models converted from scikit-learn or written
as specs (double, int64, string and dictionary inputs). The oracle is numpy or the spec.

Choices where Core ML leaves room (each pinned by a test below):
- An unknown input name is refused, as coremltools' ``MLModel.predict`` refuses it (KeyError
  from ``_verify_input_name_exists``) before Core ML sees the inputs.
- An image of another size is refused, not resized: Core ML refuses a pixel buffer whose size
  the model does not declare; ``mlc.features.fit_image`` (what ``mlc predict`` uses) resizes
  on request. An image of another PIL mode is refused, as coremltools'
  ``_verify_pil_image_modes`` refuses it (RGB/BGR need "RGB", Grayscale "L").
- Conversions kept silent, as a cast in Core ML's Python bridge makes them: bool -> 0/1, any
  integer or float16 array -> a float input, whole-number floats -> an int input, integers in
  range -> a narrower int input, a float64 beyond float32's range -> Inf, torch tensors (with
  ``requires_grad`` too: coremltools detaches them). Refused, because a cast would change the
  value: complex, object, string, datetime and structured arrays; fractional, NaN or Inf
  floats for an int input; integers outside the declared integer type's range (int64 2**40
  for an int32 input would wrap to 0).
- An empty list of images for ``predict_batch`` is an empty batch, as a multiarray batch of
  length 0 is.
"""

from __future__ import annotations

import io
import tracemalloc
import warnings

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import get_new_symbol, types
from PIL import Image

import mlc
from mlc.testing.mil_program import mil_model

pytestmark = pytest.mark.hostile

H, W = 4, 5
LIMIT = 1024  # bytes: max_tensor_bytes of the models the oversized cases use
RNG = np.random.default_rng(0)


def _mil_convert(ct, prog, inputs, target=None):
    return ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=target or ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
        pass_pipeline=ct.PassPipeline.EMPTY,
        inputs=inputs,
    )


def _relu_of_flexible(ct, dims, tensor_shape, **load_kwargs):
    """relu(x) with a flexible x: ``dims`` the symbolic program shape, ``tensor_shape`` ct's."""

    @mb.program(input_specs=[mb.TensorSpec(shape=dims, dtype=types.fp32)], opset_version=ct.target.iOS17)
    def prog(x):
        return mb.relu(x=x)

    return mlc.load(_mil_convert(ct, prog, [ct.TensorType(name="x", shape=tensor_shape)]), **load_kwargs)


def _mil_image(ct, layout, shape, dtype=types.fp32, target=None, **load_kwargs):
    """identity(image): the program's input as Core ML hands it over, (1, C, H, W) float."""
    c = 1 if layout.startswith("GRAYSCALE") else 3
    sym = (1, c, get_new_symbol(), get_new_symbol())

    @mb.program(input_specs=[mb.TensorSpec(shape=sym, dtype=dtype)], opset_version=target or ct.target.iOS17)
    def prog(image):
        return mb.identity(x=image)

    image = ct.ImageType(name="image", shape=shape(c), color_layout=getattr(ct.colorlayout, layout))
    return mlc.load(_mil_convert(ct, prog, [image], target), **load_kwargs)


def _nn_image(layout):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    c = 1 if layout == "GRAYSCALE" else 3
    b = NeuralNetworkBuilder([("image", datatypes.Array(c, H, W))], [("y", None)])
    b.add_activation("identity", "LINEAR", "image", "y", params=[1.0, 0.0])
    b.set_pre_processing_parameters(image_input_names=["image"], is_bgr=layout == "BGR")
    return mlc.load(b.spec)


def _sklearn(estimator, inputs, output="y"):
    from coremltools.converters import sklearn as skc

    return skc.convert(estimator, inputs, output).get_spec()


def _categorical(kind, **load_kwargs):
    """categoricalMapping: string -> int64 ("s2i") or int64 -> string ("i2s")."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 1
    x, y = spec.description.input.add(), spec.description.output.add()
    x.name, y.name = "x", "y"
    if kind == "s2i":
        x.type.stringType.SetInParent()
        y.type.int64Type.SetInParent()
        spec.categoricalMapping.stringToInt64Map.map.update({"cat": 1, "dog": 2})
        spec.categoricalMapping.int64Value = -1
    else:
        x.type.int64Type.SetInParent()
        y.type.stringType.SetInParent()
        spec.categoricalMapping.int64ToStringMap.map.update({1: "cat", 2: "dog"})
        spec.categoricalMapping.strValue = "?"
    return mlc.load(spec, **load_kwargs)


# -- models, built once per module -----------------------------------------------------------

COEF = np.array([1.0, 2.0, 3.0])
X_TRAIN = RNG.normal(size=(20, 3))
DICTS = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": 1.0}, {"b": 1.0, "c": 2.0}, {"a": 2.0}]


@pytest.fixture(scope="module")
def models(ct):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    m = {}
    # ML Program: relu of a float32 (2, 3), and an int32 (4,) plus one.
    m["program"] = mil_model(lambda x, n: (mb.relu(x=x), mb.add(x=n, y=np.int32(1))), {"x": (2, 3), "n": ((4,), "int32")})
    m["ranged"] = _relu_of_flexible(ct, (1, get_new_symbol()), ct.Shape((1, ct.RangeDim(2, 8, 4))))
    m["enumerated"] = _relu_of_flexible(ct, (get_new_symbol(), 3), ct.EnumeratedShapes(shapes=[(1, 3), (2, 3)], default=(1, 3)))
    # The same relu with a range up to 2**40 elements: only the byte limit stands between a
    # hostile input and memory.
    m["huge_range"] = _relu_of_flexible(ct, (1, get_new_symbol()), ct.Shape((1, ct.RangeDim(2, 1 << 40, 4))), max_tensor_bytes=LIMIT)
    # NeuralNetwork: relu of a rank-5 mapped (3,) double input.
    b = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", None)])
    b.add_activation("relu", "RELU", "x", "y")
    m["nn"] = mlc.load(b.spec)
    # Images: ML Program and NeuralNetwork, RGB / BGR / Grayscale, declared 5x4.
    for layout in ("RGB", "BGR", "GRAYSCALE"):
        m[f"mil_{layout}"] = _mil_image(ct, layout, lambda c: (1, c, H, W))
        m[f"nn_{layout}"] = _nn_image(layout)
    m["mil_sizes"] = _mil_image(ct, "RGB", lambda c: ct.EnumeratedShapes(shapes=[(1, c, H, W), (1, c, 8, 10)], default=(1, c, H, W)))
    m["mil_size_range"] = _mil_image(ct, "RGB", lambda c: (1, c, ct.RangeDim(1, 4096, H), ct.RangeDim(1, 4096, W)), max_tensor_bytes=LIMIT)
    m["mil_f16"] = _mil_image(ct, "GRAYSCALE_FLOAT16", lambda c: (1, c, H, W), dtype=types.fp16, target=ct.target.iOS16)
    # Classic: y = x . COEF + 0.5, with x one (3,) double array, three doubles, or a dictionary.
    y = X_TRAIN @ COEF + 0.5
    m["linreg"] = mlc.load(_sklearn(LinearRegression().fit(X_TRAIN, y), "x"))
    m["linreg_limited"] = mlc.load(_sklearn(LinearRegression().fit(X_TRAIN, y), "x"), max_tensor_bytes=LIMIT)
    m["scalars"] = mlc.load(_sklearn(LinearRegression().fit(X_TRAIN, y), ["a", "b", "c"]))
    pipe = Pipeline([("dv", DictVectorizer()), ("lr", LinearRegression())]).fit(DICTS, [1.0, 2.0, 3.0, 4.0])
    m["dictvec"] = mlc.load(_sklearn(pipe, "x"))
    m["dictvec_pipe"] = pipe
    m["s2i"] = _categorical("s2i")
    m["i2s"] = _categorical("i2s")
    return m


def _refused(model, data, match, *, names=(), batch=False):
    """``predict`` (or ``predict_batch``) refuses ``data`` with a featureType error whose
    message matches ``match`` and names the model and each of ``names``."""
    call = model.predict_batch if batch else model.predict
    with pytest.raises(mlc.MLCFeatureTypeError, match=match) as info:
        call(data)
    message = str(info.value)
    assert info.value.code == "featureType"
    assert model.name in message, message
    for name in names:
        assert repr(name) in message, message
    return message


def _only(out: dict):
    (value,) = out.values()
    return value


F = np.ones((2, 3), np.float32)
N = np.arange(4, dtype=np.int32)


class Lazy:
    """An array-like that says its shape and dtype and must never be converted."""

    def __init__(self, shape, dtype=np.float32):
        self.shape, self.dtype = shape, np.dtype(dtype) if dtype is not None else "weird"

    def __array__(self, *args, **kwargs):
        raise AssertionError("the input was converted before its size was checked")


# -- multiarray inputs: ML Program, NeuralNetwork, classic -----------------------------------

ARRAY_CASES = {
    # ML Program, x: float32 (2, 3), n: int32 (4,)
    "program-missing": ("program", {"x": F}, r"missing input 'n'", ["n"]),
    "program-unknown-extra": ("program", {"x": F, "n": N, "z": F}, r"unknown input 'z'", ["z"]),
    "program-rank-high": ("program", {"x": F[None], "n": N}, r"rank mismatch: got shape \(1, 2, 3\)", ["x"]),
    "program-rank-scalar": ("program", {"x": 1.0, "n": N}, r"rank mismatch: got shape \(\)", ["x"]),
    "program-shape": ("program", {"x": np.ones((3, 2), np.float32), "n": N}, r"shape mismatch.*\(3, 2\).*\(2, 3\)", ["x"]),
    "program-complex": ("program", {"x": F.astype(np.complex64), "n": N}, r"complex64 cannot be converted to the declared float32", ["x"]),
    "program-object": ("program", {"x": F.astype(object), "n": N}, r"object", ["x"]),
    "program-datetime": ("program", {"x": np.zeros((2, 3), "datetime64[s]"), "n": N}, r"datetime64.*cannot be converted", ["x"]),
    "program-structured": ("program", {"x": np.zeros((2, 3), [("a", "f4")]), "n": N}, r"strings or objects", ["x"]),
    "program-string-array": ("program", {"x": np.full((2, 3), "1.0"), "n": N}, r"strings or objects", ["x"]),
    "program-string": ("program", {"x": "1.0", "n": N}, r"expected a multiarray.*got str", ["x"]),
    "program-bytes": ("program", {"x": b"\0" * 24, "n": N}, r"expected a multiarray.*got bytes", ["x"]),
    "program-list-of-strings": ("program", {"x": [["a"] * 3] * 2, "n": N}, r"expected numbers", ["x"]),
    "program-None": ("program", {"x": None, "n": N}, r"expected a multiarray.*got NoneType", ["x"]),
    "program-list-with-None": ("program", {"x": [[1.0, None, 3.0], [1.0, 2.0, 3.0]], "n": N}, r"expected numbers", ["x"]),
    "program-dict": ("program", {"x": {"x": F}, "n": N}, r"expected a multiarray.*got dict", ["x"]),
    "program-ragged-list": ("program", {"x": [[1.0, 2.0, 3.0], [1.0, 2.0]], "n": N}, r"not an array of numbers", ["x"]),
    "program-pil-image": ("program", {"x": Image.new("L", (3, 2)), "n": N}, r"expected a multiarray", ["x"]),
    "program-fraction-for-int": ("program", {"x": F, "n": N + 0.5}, r"float64 cannot be converted to the declared int32", ["n"]),
    "program-nan-for-int": ("program", {"x": F, "n": np.array([0, np.nan, 1, 2])}, r"cannot be converted to the declared int32", ["n"]),
    "program-inf-for-int": ("program", {"x": F, "n": np.array([0, np.inf, 1, 2], np.float32)}, r"cannot be converted", ["n"]),
    "program-big-whole-float-for-int": ("program", {"x": F, "n": np.array([0, 1e10, 1, 2])}, r"cannot be converted", ["n"]),
    "program-int64-above-int32": ("program", {"x": F, "n": np.array([1 << 40, 1, 2, 3])}, r"1099511627776 \(int64\) is out of the range of the declared int32", ["n"]),
    "program-int64-below-int32": ("program", {"x": F, "n": np.array([-(1 << 31) - 1, 1, 2, 3])}, r"-2147483649 \(int64\) is out of the range", ["n"]),
    "program-uint64-above-int32": ("program", {"x": F, "n": np.array([1 << 63, 1, 2, 3], np.uint64)}, r"9223372036854775808 \(uint64\) is out of the range", ["n"]),
    "program-python-ints-above-int32": ("program", {"x": F, "n": [1 << 40, 1, 2, 3]}, r"out of the range of the declared int32", ["n"]),
    "program-python-int-beyond-int64": ("program", {"x": F, "n": [1 << 70, 1, 2, 3]}, r"expected numbers", ["n"]),
    # ML Program with flexible shapes: x (1, [2, 8]); x one of (1, 3), (2, 3)
    "ranged-below-lower-bound": ("ranged", {"x": np.ones((1, 1), np.float32)}, r"shape mismatch: got shape \(1, 1\).*\[2,8\]", ["x"]),
    "ranged-above-upper-bound": ("ranged", {"x": np.ones((1, 9), np.float32)}, r"shape mismatch: got shape \(1, 9\).*\[2,8\]", ["x"]),
    "ranged-fixed-dim": ("ranged", {"x": np.ones((2, 4), np.float32)}, r"shape mismatch: got shape \(2, 4\).*\[1,1\]x\[2,8\]", ["x"]),
    "ranged-rank": ("ranged", {"x": np.ones(5, np.float32)}, r"rank mismatch: got shape \(5,\)", ["x"]),
    "enumerated-not-listed": ("enumerated", {"x": np.ones((3, 3), np.float32)}, r"shape mismatch: got shape \(3, 3\).*\(1, 3\) or \(2, 3\)", ["x"]),
    "enumerated-rank": ("enumerated", {"x": np.ones(3, np.float32)}, r"got shape \(3,\).*\(1, 3\) or \(2, 3\)", ["x"]),
    # NeuralNetwork, x: double (3,), also taken as rank 5 (1, 1, 3, 1, 1)
    "nn-missing": ("nn", {}, r"missing input 'x'", ["x"]),
    "nn-unknown-extra": ("nn", {"x": np.ones(3), "y": np.ones(3)}, r"unknown input 'y'", ["y"]),
    "nn-shape": ("nn", {"x": np.ones(4)}, r"shape mismatch: got shape \(4,\)", ["x"]),
    "nn-rank": ("nn", {"x": np.ones((3, 1))}, r"rank mismatch", ["x"]),
    "nn-rank5-wrong-channels": ("nn", {"x": np.ones((1, 1, 4, 1, 1))}, r"got shape \(1, 1, 4, 1, 1\)", ["x"]),
    "nn-complex": ("nn", {"x": np.ones(3, np.complex128)}, r"complex128 cannot be converted to the declared float64", ["x"]),
    "nn-string": ("nn", {"x": "abc"}, r"expected a multiarray", ["x"]),
    "nn-None": ("nn", {"x": None}, r"expected a multiarray", ["x"]),
    "nn-dict": ("nn", {"x": {"0": 1.0}}, r"expected a multiarray.*got dict", ["x"]),
    # classic (LinearRegression), x: double (3,); any shape of 3 elements is read in order
    "linreg-missing": ("linreg", {}, r"missing input 'x'", ["x"]),
    "linreg-unknown-extra": ("linreg", {"x": np.ones(3), "X": np.ones(3)}, r"unknown input 'X'", ["X"]),
    "linreg-shape": ("linreg", {"x": np.ones(4)}, r"shape mismatch: got shape \(4,\)", ["x"]),
    "linreg-rank": ("linreg", {"x": np.ones((3, 1, 2))}, r"rank mismatch", ["x"]),
    "linreg-complex": ("linreg", {"x": np.ones(3, np.complex128)}, r"cannot be converted", ["x"]),
    "linreg-string": ("linreg", {"x": "1,2,3"}, r"expected a multiarray", ["x"]),
    "linreg-strings": ("linreg", {"x": ["1", "2", "3"]}, r"expected numbers", ["x"]),
    "linreg-None": ("linreg", {"x": None}, r"expected a multiarray", ["x"]),
    "linreg-dict": ("linreg", {"x": {"a": 1.0}}, r"expected a multiarray.*got dict", ["x"]),
    # classic, three double inputs
    "scalars-missing": ("scalars", {"a": 1.0, "b": 2.0}, r"missing input 'c'", ["c"]),
    "scalars-string": ("scalars", {"a": "1.0", "b": 2.0, "c": 3.0}, r"expected a double, got str", ["a"]),
    "scalars-None": ("scalars", {"a": None, "b": 2.0, "c": 3.0}, r"expected a double, got NoneType", ["a"]),
    "scalars-bool": ("scalars", {"a": True, "b": 2.0, "c": 3.0}, r"expected a double, got bool", ["a"]),
    "scalars-complex": ("scalars", {"a": 1j, "b": 2.0, "c": 3.0}, r"expected a double, got complex", ["a"]),
    "scalars-two-values": ("scalars", {"a": np.ones(2), "b": 2.0, "c": 3.0}, r"expected a double, got ndarray", ["a"]),
    "scalars-dict": ("scalars", {"a": {"a": 1.0}, "b": 2.0, "c": 3.0}, r"expected a double, got dict", ["a"]),
    "scalars-int-beyond-double": ("scalars", {"a": 1 << 1100, "b": 2.0, "c": 3.0}, r"too large for a double", ["a"]),
    # classic, a dictionary (string keys -> double)
    "dictvec-array": ("dictvec", {"x": np.ones(3)}, r"expected a dictionary.*got ndarray", ["x"]),
    "dictvec-None": ("dictvec", {"x": None}, r"expected a dictionary.*got NoneType", ["x"]),
    "dictvec-list-of-pairs": ("dictvec", {"x": [("a", 1.0)]}, r"expected a dictionary.*got list", ["x"]),
    "dictvec-string-value": ("dictvec", {"x": {"a": "1.0"}}, r"value for key 'a' is a str, not a number", ["x"]),
    "dictvec-None-value": ("dictvec", {"x": {"a": None}}, r"value for key 'a' is a NoneType", ["x"]),
    "dictvec-float-key": ("dictvec", {"x": {1.5: 1.0}}, r"key 1.5 is not a string", ["x"]),
    "dictvec-value-beyond-double": ("dictvec", {"x": {"a": 1 << 1100}}, r"too large for a double", ["x"]),
    # classic, a string input and an int64 input
    "s2i-number": ("s2i", {"x": 3}, r"expected a string, got int", ["x"]),
    "s2i-bytes": ("s2i", {"x": b"cat"}, r"expected a string, got bytes", ["x"]),
    "s2i-None": ("s2i", {"x": None}, r"expected a string, got NoneType", ["x"]),
    "s2i-list": ("s2i", {"x": ["cat"]}, r"expected a string, got list", ["x"]),
    "i2s-string": ("i2s", {"x": "1"}, r"expected an int64, got str", ["x"]),
    "i2s-float": ("i2s", {"x": 1.5}, r"expected an int64, got float", ["x"]),
    "i2s-None": ("i2s", {"x": None}, r"expected an int64, got NoneType", ["x"]),
    "i2s-python-int-beyond-int64": ("i2s", {"x": 1 << 70}, r"out of the int64 range", ["x"]),
    "i2s-uint64-beyond-int64": ("i2s", {"x": np.uint64(1 << 63)}, r"9223372036854775808 is out of the int64 range", ["x"]),
}


@pytest.mark.parametrize("case", list(ARRAY_CASES))
def test_bad_value_is_refused(models, case):
    model, data, match, names = ARRAY_CASES[case]
    _refused(models[model], data, match, names=names)


@pytest.mark.parametrize(
    "data", [np.ones((2, 3)), None, "x", [1, 2], [{"x": F, "n": N}, None], 3.0], ids=["array", "None", "str", "list-of-ints", "list-with-None", "float"]
)
def test_predict_needs_a_dict(models, data):
    _refused(models["program"], data, r"inputs must be a dict of name -> value")


@pytest.mark.parametrize("data", [[{"x": F[None], "n": N[None]}], None, np.ones((1, 2, 3))], ids=lambda d: type(d).__name__)
def test_predict_batch_needs_a_dict(models, data):
    _refused(models["program"], data, r"inputs must be a dict of name -> value", batch=True)


BATCH_CASES = {
    "program-batch-sizes": ("program", {"x": np.ones((2, 2, 3)), "n": np.ones((3, 4), np.int32)}, r"different leading sizes \[2, 3\]", []),
    "program-no-batch-axis": ("program", {"x": 1.0, "n": np.ones((1, 4), np.int32)}, r"needs a leading batch axis, got a scalar", ["x"]),
    "program-example-shape": ("program", {"x": np.ones((2, 3)), "n": np.ones((2, 4), np.int32)}, r"rank mismatch: got shape \(3,\)", ["x"]),
    "program-int64-above-int32": ("program", {"x": np.ones((1, 2, 3)), "n": np.full((1, 4), 1 << 40)}, r"out of the range of the declared int32", ["n"]),
    "program-missing": ("program", {"x": np.ones((1, 2, 3))}, r"missing input 'n'", ["n"]),
    "program-unknown-extra": ("program", {"x": np.ones((1, 2, 3)), "n": np.ones((1, 4), np.int32), "m": 1}, r"unknown input 'm'", ["m"]),
    "ranged-above-upper-bound": ("ranged", {"x": np.ones((2, 1, 9), np.float32)}, r"got shape \(1, 9\)", ["x"]),
    "scalars-batch-sizes": ("scalars", {"a": np.ones(2), "b": np.ones(3), "c": np.ones(2)}, r"different leading sizes \[2, 3\]", []),
    "scalars-strings": ("scalars", {"a": ["1", "2"], "b": np.ones(2), "c": np.ones(2)}, r"1-D array of double values", ["a"]),
    "scalars-two-dimensional": ("scalars", {"a": np.ones((2, 1)), "b": np.ones(2), "c": np.ones(2)}, r"1-D array of double", ["a"]),
    "scalars-ragged": ("scalars", {"a": [1.0, [2.0, 3.0]], "b": np.ones(2), "c": np.ones(2)}, r"not an array of numbers", ["a"]),
    "linreg-batch-example-shape": ("linreg", {"x": np.ones((2, 4))}, r"shape mismatch: got shape \(4,\)", ["x"]),
    "dictvec-dictionaries": ("dictvec", {"x": [{"a": 1.0}]}, r"batches hold multiarray, image, double and int64 inputs, not dictionary", ["x"]),
    "i2s-uint64-beyond-int64": ("i2s", {"x": np.array([1, 1 << 63], np.uint64)}, r"out of the range of the declared int64", ["x"]),
    "i2s-floats": ("i2s", {"x": [1.0, 2.0]}, r"1-D array of int64 values", ["x"]),
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_bad_batch_is_refused(models, case):
    model, data, match, names = BATCH_CASES[case]
    _refused(models[model], data, match, names=names, batch=True)


# -- NaN and Inf pass through ----------------------------------------------------------------

SPECIALS = np.array([[np.nan, np.inf, -np.inf], [-1.5, 0.0, 2.5]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_nan_and_inf_pass_through_an_ml_program(models, dtype):
    out = models["program"].predict({"x": SPECIALS.astype(dtype), "n": N})
    np.testing.assert_array_equal(out["relu_0"], np.maximum(SPECIALS, 0).astype(np.float32))  # relu(NaN) is NaN
    assert np.isnan(out["relu_0"][0, 0]) and out["relu_0"][0, 1] == np.inf


def test_nan_and_inf_pass_through_a_batch(models):
    x = np.stack([SPECIALS, -SPECIALS])
    out = models["program"].predict_batch({"x": x, "n": np.zeros((2, 4), np.int32)})
    np.testing.assert_array_equal(out["relu_0"], np.maximum(x, 0).astype(np.float32))


def test_nan_and_inf_pass_through_a_flexible_input(models):
    x = np.array([[np.nan, np.inf, -np.inf, 3.0, -3.0]], np.float32)
    np.testing.assert_array_equal(_only(models["ranged"].predict({"x": x})), np.maximum(x, 0))


def test_float64_beyond_float32_becomes_inf_like_a_cast(models):
    x = np.array([[1e39, -1e39, 1e300], [1.0, 2.0, 3.0]])
    with np.errstate(over="ignore"):  # numpy's notice of the cast, which Core ML makes too
        out = models["program"].predict({"x": x, "n": N})["relu_0"]
        np.testing.assert_array_equal(out, np.maximum(x.astype(np.float32), 0))
    assert out[0, 0] == np.inf and out[0, 1] == 0


def test_nan_and_inf_pass_through_a_neural_network(models):
    x = np.array([np.nan, np.inf, -np.inf])
    np.testing.assert_array_equal(_only(models["nn"].predict({"x": x})).reshape(3), np.maximum(x, 0))


def test_nan_and_inf_pass_through_a_float_image(models):
    pixels = np.tile(np.array([np.nan, np.inf, -np.inf, 1.0, -2.0], np.float32), (H, 1))
    out = _only(models["mil_f16"].predict({"image": Image.fromarray(pixels, "F")}))
    np.testing.assert_array_equal(out.reshape(H, W), pixels.astype(np.float16))


@pytest.mark.parametrize("x", [[np.nan, 1.0, 2.0], [np.inf, 1.0, 2.0], [-np.inf, 1.0, 2.0], [np.inf, -np.inf, 0.0]], ids=str)
def test_nan_and_inf_pass_through_classic_models(models, x):
    x = np.array(x)
    with np.errstate(invalid="ignore"):
        expected = x @ COEF + 0.5
    lin = models["linreg"].predict({"x": x})["y"]
    scalars = models["scalars"].predict(dict(zip("abc", x)))["y"]
    np.testing.assert_allclose([lin, scalars], [expected, expected], rtol=1e-12)  # NaN equals NaN here
    batch = models["scalars"].predict_batch({"a": x[:1], "b": x[1:2], "c": x[2:]})["y"]
    np.testing.assert_allclose(batch, [expected], rtol=1e-12)


def test_nan_and_inf_pass_through_a_dictionary(models):
    pipe = models["dictvec_pipe"]
    lr, dv = pipe.named_steps["lr"], pipe.named_steps["dv"]
    for value in ({"a": np.nan, "b": 1.0}, {"a": np.inf, "b": 1.0}):
        row = np.array([value.get(k, 0.0) for k in dv.feature_names_], float)
        expected = row @ lr.coef_ + lr.intercept_
        np.testing.assert_allclose(models["dictvec"].predict({"x": value})["y"], expected, rtol=1e-12)


# -- conversions Core ML makes silently, kept ------------------------------------------------


def _torch_with_grad():
    import torch

    return torch.full((2, 3), 2.0, requires_grad=True)


@pytest.mark.parametrize(
    "x, n, expected_x, expected_n",
    [
        (F.astype(bool), N, np.ones((2, 3)), N + 1),  # bool -> 0 / 1
        (np.full((2, 3), 3, np.int64), N, np.full((2, 3), 3.0), N + 1),  # integers -> float
        (F.astype(np.float16), N, F, N + 1),
        ([[1, 2, 3], [4, 5, 6]], N.astype(np.float64), [[1, 2, 3], [4, 5, 6]], N + 1),  # whole floats -> int
        (F, N.astype(np.int64), F, N + 1),  # int64 in range -> int32
        (F, np.array([200, 0, 1, 2], np.uint8), F, np.array([201, 1, 2, 3])),
        (F, [(1 << 31) - 2, -(1 << 31), 0, 1], F, [(1 << 31) - 1, -(1 << 31) + 1, 1, 2]),  # int32's extremes
        (_torch_with_grad(), N, np.full((2, 3), 2.0), N + 1),  # detached, as coremltools does
    ],
    ids=["bool", "int64-for-float", "float16", "whole-floats-for-int", "int64-in-range", "uint8", "int32-extremes", "torch-requires-grad"],
)
def test_silent_conversions_are_kept(models, x, n, expected_x, expected_n):
    out = models["program"].predict({"x": x, "n": n})
    np.testing.assert_array_equal(out["relu_0"], np.asarray(expected_x, np.float32))
    np.testing.assert_array_equal(out["add_0"], np.asarray(expected_n, np.int32))


def test_classic_reads_any_shape_of_the_declared_size(models):
    x = np.array([1.0, -2.0, 0.5])
    for given in (x, x[None], x[:, None], list(x)):
        np.testing.assert_allclose(models["linreg"].predict({"x": given})["y"], x @ COEF + 0.5, rtol=1e-9)


# -- images ----------------------------------------------------------------------------------

IMAGE_MODELS = ["mil_RGB", "mil_BGR", "mil_GRAYSCALE", "nn_RGB", "nn_BGR", "nn_GRAYSCALE"]
OTHER_MODES = ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr", "HSV", "RGB"]


def _mode(model_name: str) -> str:
    return "L" if model_name.endswith("GRAYSCALE") else "RGB"


def _pixels(model_name: str, h=H, w=W, seed=0) -> np.ndarray:
    shape = (h, w) if _mode(model_name) == "L" else (h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _expected(model_name: str, pixels: np.ndarray) -> np.ndarray:
    """(1, C, H, W) float as Core ML hands the image to the program (spec: declared order)."""
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if model_name.endswith("BGR"):
        chw = chw[::-1]
    return chw[None].astype(np.float32)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_of_the_declared_mode_and_size_is_taken(models, name):
    pixels = _pixels(name)
    out = _only(models[name].predict({"image": Image.fromarray(pixels, _mode(name))}))
    np.testing.assert_array_equal(np.asarray(out).reshape(_expected(name, pixels).shape), _expected(name, pixels))


@pytest.mark.parametrize("name, mode", [(n, m) for n in IMAGE_MODELS for m in OTHER_MODES if m != _mode(n)])
def test_image_of_another_mode_is_refused(models, name, mode):
    declared = "GRAYSCALE" if name.endswith("GRAYSCALE") else name.rsplit("_", 1)[1]
    _refused(models[name], {"image": Image.new(mode, (W, H))}, rf"image mode '{mode}' does not match the declared {declared}", names=["image"])


@pytest.mark.parametrize("size", [(H, W), (W + 1, H), (W, H - 1), (1, 1), (2 * W, 2 * H)], ids=str)
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_of_another_size_is_refused_not_resized(models, name, size):
    w, h = size
    _refused(models[name], {"image": Image.new(_mode(name), size)}, rf"image is {w}x{h} \(width x height\), the model expects {W}x{H}", names=["image"])


@pytest.mark.parametrize(
    "value",
    [None, np.zeros((H, W, 3), np.uint8), np.zeros((1, 3, H, W), np.float32), b"\x89PNG\r\n", "/tmp/image.png", {"image": 1}, 0.0],
    ids=["None", "HWC-array", "NCHW-array", "bytes", "path", "dict", "number"],
)
@pytest.mark.parametrize("name", ["mil_RGB", "nn_GRAYSCALE"])
def test_non_image_for_an_image_input_is_refused(models, name, value):
    _refused(models[name], {"image": value}, r"expected a PIL image", names=["image"])


def test_image_sizes_outside_the_enumerated_ones_are_refused(models):
    model = models["mil_sizes"]
    pixels = _pixels("mil_RGB", 8, 10)
    np.testing.assert_array_equal(_only(model.predict({"image": Image.fromarray(pixels)})), _expected("mil_RGB", pixels))
    _refused(model, {"image": Image.new("RGB", (8, 10))}, r"image is 8x10 \(width x height\), the model expects 5x4 or 10x8", names=["image"])


@pytest.mark.parametrize("size", [(4097, 2), (2, 4097)], ids=str)
def test_image_sizes_outside_the_range_are_refused(models, size):
    # 4097x2 is 96 KiB as float32: the size is refused before the byte limit is looked at.
    expects = r"width in \[1,4096\] and height in \[1,4096\]"
    _refused(models["mil_size_range"], {"image": Image.new("RGB", size)}, rf"image is {size[0]}x{size[1]} .*{expects}", names=["image"])


def test_truncated_image_file_is_refused_when_decoded(models, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_pixels("mil_RGB")).save(buffer, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _refused(models["mil_RGB"], {"image": Image.open(path)}, r"the image could not be decoded", names=["image"])


@pytest.mark.parametrize("name", ["mil_RGB", "nn_BGR", "mil_GRAYSCALE"])
def test_image_batches(models, name):
    model, mode = models[name], _mode(name)
    images = [Image.fromarray(_pixels(name, seed=i), mode) for i in range(3)]
    out = _only(model.predict_batch({"image": images}))
    expected = np.stack([_expected(name, np.asarray(im)) for im in images])
    np.testing.assert_array_equal(np.asarray(out).reshape(expected.shape), expected)
    empty = _only(model.predict_batch({"image": []}))
    assert np.asarray(empty).shape[0] == 0
    _refused(model, {"image": images[0]}, r"a batch of images is a list of PIL images, got Image", names=["image"], batch=True)
    _refused(model, {"image": np.stack([np.asarray(im) for im in images])}, r"a batch of images is a list", names=["image"], batch=True)
    _refused(model, {"image": [images[0], None]}, r"image 1: expected a PIL image", names=["image"], batch=True)
    _refused(model, {"image": [images[0], Image.new(mode, (W, H + 1))]}, r"image 1: image is 5x5", names=["image"], batch=True)
    other = "L" if mode == "RGB" else "RGB"
    _refused(model, {"image": [Image.new(other, (W, H))]}, rf"image 0: image mode '{other}'", names=["image"], batch=True)


def test_image_batch_of_mixed_sizes_is_refused(models):
    model = models["mil_size_range"]
    _refused(model, {"image": [Image.new("RGB", (3, 2)), Image.new("RGB", (2, 3))]}, r"must have one size, got 2x3, 3x2", names=["image"], batch=True)


def _tiff(tmp_path, size=(W, H)):
    path = tmp_path / "image.tiff"
    Image.fromarray(_pixels("mil_RGB", size[1], size[0])).save(path)
    return Image.open(path)  # lazy: decoded by predict


def test_decompression_bomb_error_while_decoding_is_refused(models, tmp_path, monkeypatch):
    image = _tiff(tmp_path)  # TIFF checks its tile size again when it is decoded
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", (W * H) // 2 - 1)
    _refused(models["mil_RGB"], {"image": image}, r"Pillow refused to decode the image: .*decompression bomb", names=["image"])


def test_decompression_bomb_warning_raised_as_an_error_is_refused(models, tmp_path, monkeypatch):
    image = _tiff(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", W * H - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _refused(models["mil_RGB"], {"image": image}, r"Pillow refused to decode the image", names=["image"])
    with pytest.warns(Image.DecompressionBombWarning):  # a warning that stays a warning: Pillow's policy, decoded
        out = models["mil_RGB"].predict({"image": _tiff(tmp_path)})
    assert _only(out).shape == (1, 3, H, W)


# -- oversized inputs: refused before anything is allocated ----------------------------------

LIMIT_MESSAGE = r"more than the limit of 1 KiB \(1024 bytes\) per tensor"


def test_input_within_the_limit_is_taken(models):
    x = np.linspace(-1, 1, 8, dtype=np.float32)[None]
    np.testing.assert_array_equal(_only(models["huge_range"].predict({"x": x})), np.maximum(x, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_oversized_array_is_refused_before_any_copy(models, dtype):
    # A broadcast view takes no memory; converting or sending it would allocate 4-8 MiB.
    x = np.broadcast_to(np.array(1, dtype), (1, 1 << 20))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        message = _refused(models["huge_range"], {"x": x}, LIMIT_MESSAGE, names=["x"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, f"{peak} bytes allocated before the refusal"
    assert "(1, 1048576)" in message and "MLC_MAX_TENSOR_BYTES" in message


def test_oversized_input_counts_what_it_will_become(models):
    # 150 int8 values are 150 bytes, but the program takes them as 4-byte floats: 600 bytes.
    # 200 of them (800 bytes) as float32 is within the limit; 300 (1200 bytes) is not.
    assert _only(models["huge_range"].predict({"x": np.ones((1, 200), np.int8)})).shape == (1, 200)
    _refused(models["huge_range"], {"x": np.ones((1, 300), np.int8)}, r"shape \(1, 300\) would take 1.17 KiB", names=["x"])


@pytest.mark.parametrize("dtype", [np.float32, None], ids=["float32", "unknown-dtype"])
def test_oversized_array_like_is_refused_before_it_is_converted(models, dtype):
    _refused(models["huge_range"], {"x": Lazy((1, 1 << 40), dtype)}, LIMIT_MESSAGE, names=["x"])


def test_oversized_nested_list_is_refused_before_it_is_converted(models):
    _refused(models["huge_range"], {"x": [[0.0] * 200]}, r"shape \(1, 200\) would take 1.56 KiB", names=["x"])


def test_oversized_batch_is_refused_before_any_copy(models):
    # One example (32 bytes) is within the limit; the batch of 64 (2 KiB) is not.
    x = np.broadcast_to(np.float64(1), (64, 1, 8))
    _refused(models["huge_range"], {"x": x}, r"shape \(64, 1, 8\) would take 4 KiB", names=["x"], batch=True)
    _refused(models["huge_range"], {"x": Lazy((1 << 30, 1, 8))}, LIMIT_MESSAGE, names=["x"], batch=True)


def test_oversized_classic_batch_is_refused(models):
    model = models["linreg_limited"]
    np.testing.assert_allclose(model.predict_batch({"x": np.eye(3)})["y"], COEF + 0.5, rtol=1e-9)
    _refused(model, {"x": np.broadcast_to(0.0, (1 << 20, 3))}, LIMIT_MESSAGE, names=["x"], batch=True)


def test_limit_from_the_environment(models, monkeypatch):
    monkeypatch.setenv("MLC_MAX_TENSOR_BYTES", "16")
    _refused(models["ranged"], {"x": np.ones((1, 8), np.float32)}, r"32 bytes, more than the limit of 16 bytes", names=["x"])
    monkeypatch.setenv("MLC_MAX_TENSOR_BYTES", "1K")
    assert _only(models["ranged"].predict({"x": np.ones((1, 8), np.float32)})).shape == (1, 8)


def _undecodable(image):
    """``image`` whose decoding fails the test: proof that a refusal came before it."""

    def load():
        raise AssertionError("the image was decoded before its size was checked")

    image.load = load
    return image


def test_oversized_image_is_refused_before_it_is_decoded(models, tmp_path):
    model = models["mil_size_range"]
    small = _pixels("mil_RGB", 8, 10)  # 10x8x3 float32 = 960 bytes: within the limit
    np.testing.assert_array_equal(_only(model.predict({"image": Image.fromarray(small)})), _expected("mil_RGB", small))
    path = tmp_path / "big.png"
    Image.fromarray(_pixels("mil_RGB", 64, 64)).save(path)
    lazy = _undecodable(Image.open(path))
    _refused(model, {"image": lazy}, r"shape \(1, 3, 64, 64\) would take 48 KiB", names=["image"])
    _refused(model, {"image": [lazy]}, LIMIT_MESSAGE, names=["image"], batch=True)


def test_oversized_image_batch_is_refused_before_any_is_decoded(models, tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(_pixels("mil_RGB", 8, 10)).save(path)
    images = [_undecodable(Image.open(path)) for _ in range(2)]  # 960 bytes each, 1920 together
    _refused(models["mil_size_range"], {"image": images}, r"shape \(2, 1, 3, 8, 10\) would take 1.88 KiB", names=["image"], batch=True)
