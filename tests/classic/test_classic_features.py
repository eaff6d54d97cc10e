"""Feature types at the boundary of classic models: int64, double, string, dictionary and
sequence inputs (Core ML's conversion rules and their errors) and the Python values outputs
come back as."""

import numpy as np
import pytest

from mlc._errors import MLCFeatureTypeError
from mlc.features import Feature, convert_input, host_output, scalar_batch_input


def _f(kind, **kw):
    return Feature("f", kind, **kw)


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3)])
def test_int64_input_takes_integers(value):
    assert convert_input(_f("int64"), value, "m") == 3


@pytest.mark.parametrize("value", [3.5, "3", True, None])
def test_int64_input_refuses_other_values(value):
    with pytest.raises(MLCFeatureTypeError, match="expected an int64"):
        convert_input(_f("int64"), value, "m")


@pytest.mark.parametrize("value", [2, 2.5, np.float32(2.5)])
def test_double_input_takes_numbers(value):
    assert convert_input(_f("double"), value, "m") == pytest.approx(float(value))


def test_double_input_refuses_a_string():
    with pytest.raises(MLCFeatureTypeError, match="expected a double, got str"):
        convert_input(_f("double"), "2.0", "m: input 'f'")


def test_string_input():
    assert convert_input(_f("string"), "cat", "m") == "cat"
    with pytest.raises(MLCFeatureTypeError, match="expected a string"):
        convert_input(_f("string"), 3, "m")


def test_dictionary_input_string_keys():
    got = convert_input(_f("dictionary", key_kind="string"), {"a": 1, "b": 2.5}, "m")
    assert got == {"a": 1.0, "b": 2.5} and all(isinstance(v, float) for v in got.values())


def test_dictionary_input_string_keyed_passes_integer_keys():
    # coremltools declares a DictVectorizer over int keys as string-keyed (test_dict_vectorizer.py).
    assert convert_input(_f("dictionary", key_kind="string"), {3: 1.0, np.int64(4): 2.0}, "m") == {3: 1.0, 4: 2.0}


def test_one_element_array_for_a_scalar():
    assert convert_input(_f("double"), np.array([2.5]), "m") == 2.5
    assert convert_input(_f("int64"), np.array([[3]]), "m") == 3


def test_dictionary_input_int64_keys():
    assert convert_input(_f("dictionary", key_kind="int64"), {np.int64(4): 1.0}, "m") == {4: 1.0}


@pytest.mark.parametrize(
    "key_kind,value,message",
    [
        ("string", {1.5: 1.0}, "key 1.5 is not a string"),
        ("int64", {"a": 1.0}, "key 'a' is not an int64"),
        ("string", {"a": "x"}, "value for key 'a' is a str"),
        ("string", [("a", 1.0)], "expected a dictionary"),
    ],
)
def test_dictionary_input_errors(key_kind, value, message):
    with pytest.raises(MLCFeatureTypeError, match=message):
        convert_input(_f("dictionary", key_kind=key_kind), value, "m")


def test_sequence_input_and_size_range():
    feature = _f("sequence", key_kind="string", size_range=(1, 3))
    assert convert_input(feature, ("a", "b"), "m") == ["a", "b"]
    with pytest.raises(MLCFeatureTypeError, match="allows \\[1, 3\\]"):
        convert_input(feature, ["a"] * 4, "m")
    with pytest.raises(MLCFeatureTypeError, match="element 3 is not a string"):
        convert_input(feature, ["a", 3], "m")
    assert convert_input(_f("sequence", key_kind="int64"), np.array([1, 2]), "m") == [1, 2]


def test_batched_scalars():
    np.testing.assert_array_equal(scalar_batch_input(_f("double"), [1, 2.5], "m"), [1.0, 2.5])
    with pytest.raises(MLCFeatureTypeError, match="1-D array of int64"):
        scalar_batch_input(_f("int64"), [1.5, 2.0], "m")
    with pytest.raises(MLCFeatureTypeError, match="1-D array"):
        scalar_batch_input(_f("double"), [[1.0]], "m")


def test_outputs_are_plain_python_values():
    assert host_output(np.array([2.0], np.float32), _f("double"), "m") == 2.0
    assert type(host_output(np.int32(7), _f("int64"), "m")) is int
    assert host_output(np.array(["x"]), _f("string"), "m") == "x"
    assert host_output({np.int64(1): np.float32(0.5)}, _f("dictionary", key_kind="int64"), "m") == {1: 0.5}
    assert host_output(np.array([1, 2]), _f("sequence", key_kind="int64"), "m") == [1, 2]
    with pytest.raises(MLCFeatureTypeError, match="produced 2 values"):
        host_output(np.array([1.0, 2.0]), _f("double"), "m")
