"""Feature-engineering model types scikit-learn does not produce, built by hand, against
numpy/Python oracles written here: categoricalMapping, arrayFeatureExtractor,
featureVectorizer of mixed inputs, identity, imputer of strings/int64/dictionaries,
oneHotEncoder (string and int64 categories, outputSparse, IgnoreUnknown), scaler; plus bad
parameters and bad inputs for each type."""

import math

import numpy as np
import pytest

import mlc
from mlc._errors import MLCFeatureTypeError, MLCParametersError, MLCPredictionError

pytest.importorskip("coremltools")
from coremltools.proto import FeatureTypes_pb2, Model_pb2  # noqa: E402

DOUBLE = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
INT32 = FeatureTypes_pb2.ArrayFeatureType.INT32


def _set_type(feature, kind, optional=False):
    """kind: "double", "int64", "string", ("array", n) or ("array", n, INT32), ("array", None)
    (flexible), ("dict", "string"|"int64"), ("seq", "string"|"int64")."""
    t = feature.type
    t.isOptional = optional
    if kind == "double":
        t.doubleType.SetInParent()
    elif kind == "int64":
        t.int64Type.SetInParent()
    elif kind == "string":
        t.stringType.SetInParent()
    elif kind[0] == "array":
        t.multiArrayType.dataType = kind[2] if len(kind) > 2 else DOUBLE
        if kind[1] is not None:
            t.multiArrayType.shape.append(kind[1])
    elif kind[0] == "dict":
        (t.dictionaryType.stringKeyType if kind[1] == "string" else t.dictionaryType.int64KeyType).SetInParent()
    elif kind[0] == "seq":
        (t.sequenceType.stringType if kind[1] == "string" else t.sequenceType.int64Type).SetInParent()


def _spec(inputs, outputs, optional=()):
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    for name, kind in inputs:
        _set_type(spec.description.input.add(name=name), kind, name in optional)
    for name, kind in outputs:
        _set_type(spec.description.output.add(name=name), kind)
    return spec


def _stage_fn(model):
    """The model's pure function, to hand a stage a value the boundary would already refuse."""
    fn, params = model.jax_function()
    return lambda values: fn(params, values)


# -- categoricalMapping -----------------------------------------------------------------------

COLORS = {"red": 1, "green": 2, "blue": 30}


def _string_to_int(default=None, inputs=(("x", "string"),), outputs=(("y", "int64"),)):
    spec = _spec(inputs, outputs)
    spec.categoricalMapping.stringToInt64Map.map.update(COLORS)
    if default is not None:
        spec.categoricalMapping.int64Value = default
    return spec


def _int_to_string(default=None):
    spec = _spec([("x", "int64")], [("y", "string")])
    spec.categoricalMapping.int64ToStringMap.map.update({v: k for k, v in COLORS.items()})
    if default is not None:
        spec.categoricalMapping.strValue = default
    return spec


def test_categorical_mapping_string_to_int64_with_default():
    model = mlc.load(_string_to_int(default=-1))
    for word in ["red", "green", "blue", "purple", ""]:
        got = model.predict({"x": word})["y"]
        assert type(got) is int and got == COLORS.get(word, -1)


def test_categorical_mapping_int64_to_string_with_default():
    model = mlc.load(_int_to_string(default="unknown"))
    inverse = {v: k for k, v in COLORS.items()}
    for number in [1, 2, 30, 3, -5]:
        assert model.predict({"x": number})["y"] == inverse.get(number, "unknown")


def test_categorical_mapping_of_a_sequence():
    spec = _string_to_int(default=0, inputs=[("x", ("seq", "string"))], outputs=[("y", ("seq", "int64"))])
    words = ["blue", "red", "nope", "green"]
    assert mlc.load(spec).predict({"x": words})["y"] == [COLORS.get(w, 0) for w in words]


def test_categorical_mapping_unknown_without_default_is_refused():
    with pytest.raises(MLCFeatureTypeError, match="'purple' is not in the mapping"):
        mlc.load(_string_to_int()).predict({"x": "purple"})
    with pytest.raises(MLCFeatureTypeError, match="value 7 is not in the mapping"):
        mlc.load(_int_to_string()).predict({"x": 7})


def test_categorical_mapping_bad_parameters():
    spec = _string_to_int()
    spec.categoricalMapping.strValue = "x"  # a string default for a mapping that produces int64s
    with pytest.raises(MLCParametersError, match="ValueOnUnknown is strValue"):
        mlc.load(spec)
    with pytest.raises(MLCParametersError, match="no mapping"):
        mlc.load(_no_type("categoricalMapping"))
    with pytest.raises(MLCParametersError, match="holds int64s"):
        mlc.load(_string_to_int(inputs=[("x", "int64")]))


def _no_type(kind):
    spec = _spec([("x", "string")], [("y", "int64")])
    getattr(spec, kind).SetInParent()
    return spec


def test_categorical_mapping_bad_input():
    model = mlc.load(_string_to_int(default=0))
    with pytest.raises(MLCFeatureTypeError, match="not a string"):
        _stage_fn(model)({"x": 3})


# -- arrayFeatureExtractor --------------------------------------------------------------------


def _extractor(indices, out_kind, n=5):
    spec = _spec([("x", ("array", n))], [("y", out_kind)])
    spec.arrayFeatureExtractor.extractIndex.extend(indices)
    return spec


def test_array_feature_extractor_several_indices_give_an_array():
    x = np.array([10.5, 11.5, 12.5, 13.5, 14.5])
    got = mlc.load(_extractor([4, 0, 2, 2], ("array", 4))).predict({"x": x})["y"]
    np.testing.assert_array_equal(got, x[[4, 0, 2, 2]])


def test_array_feature_extractor_one_index():
    x = np.array([10.5, -11.5, 12.5, 13.5, 14.5])
    assert mlc.load(_extractor([3], "double")).predict({"x": x})["y"] == 13.5
    got = mlc.load(_extractor([1], "int64")).predict({"x": x})["y"]
    assert type(got) is int and got == -11  # a C cast truncates toward zero
    np.testing.assert_array_equal(mlc.load(_extractor([1], ("array", 1))).predict({"x": x})["y"], [-11.5])


def test_array_feature_extractor_batches():
    x = np.arange(15.0).reshape(3, 5)
    got = mlc.load(_extractor([0, 4], ("array", 2))).predict_batch({"x": x})["y"]
    np.testing.assert_array_equal(got, x[:, [0, 4]])


def test_array_feature_extractor_bad_parameters():
    with pytest.raises(MLCParametersError, match="exactly one extractIndex"):
        mlc.load(_extractor([0, 1], "double"))
    with pytest.raises(MLCParametersError, match="out of range"):
        mlc.load(_extractor([5], "double"))
    with pytest.raises(MLCParametersError, match="no extractIndex"):
        mlc.load(_extractor([], ("array", 1)))


def test_array_feature_extractor_bad_input():
    spec = _spec([("x", ("array", None))], [("y", "double")])
    spec.arrayFeatureExtractor.extractIndex.append(3)
    model = mlc.load(spec)
    assert model.predict({"x": np.arange(4.0)})["y"] == 3.0
    with pytest.raises(MLCFeatureTypeError, match="out of range"):
        model.predict({"x": np.arange(3.0)})
    with pytest.raises(MLCFeatureTypeError, match="not a multiarray"):
        _stage_fn(model)({"x": "abc"})


# -- featureVectorizer ------------------------------------------------------------------------


def _vectorizer(columns, kinds, total):
    spec = _spec(list(kinds.items()), [("y", ("array", total))])
    spec.featureVectorizer.SetInParent()
    for name, size in columns:
        spec.featureVectorizer.inputList.add(inputColumn=name, inputDimensions=size)
    return spec


MIXED = {"d": "double", "i": "int64", "a": ("array", 3), "s": ("dict", "int64")}


def test_feature_vectorizer_of_mixed_inputs_concatenates_in_list_order():
    spec = _vectorizer([("a", 3), ("s", 4), ("d", 1), ("i", 1)], MIXED, 9)
    values = {"d": 2.5, "i": 7, "a": np.array([1.0, -2.0, 3.0]), "s": {0: 4.0, 3: -1.5}}
    expected = np.concatenate([values["a"], [4.0, 0.0, 0.0, -1.5], [2.5], [7.0]])
    np.testing.assert_array_equal(mlc.load(spec).predict(values)["y"], expected)


def test_feature_vectorizer_of_numbers_is_jitted_and_batches():
    spec = _vectorizer([("b", 2), ("a", 3)], {"a": ("array", 3), "b": ("array", 2)}, 5)
    model = mlc.load(spec)
    a, b = np.arange(6.0).reshape(2, 3), np.arange(4.0).reshape(2, 2) + 100
    np.testing.assert_array_equal(model.predict_batch({"a": a, "b": b})["y"], np.hstack([b, a]))


def test_feature_vectorizer_bad_parameters():
    with pytest.raises(MLCParametersError, match="inputDimensions 0"):
        mlc.load(_vectorizer([("d", 0)], {"d": "double"}, 1))
    with pytest.raises(MLCParametersError, match="not an input"):
        mlc.load(_vectorizer([("zz", 1)], {"d": "double"}, 1))
    with pytest.raises(MLCParametersError, match="shape"):
        mlc.load(_vectorizer([("a", 2)], {"a": ("array", 3)}, 2))
    with pytest.raises(MLCParametersError, match="inputList is empty"):
        mlc.load(_vectorizer([], {"a": ("array", 3)}, 3))


def test_feature_vectorizer_bad_input():
    model = mlc.load(_vectorizer([("s", 4)], {"s": ("dict", "int64")}, 4))
    with pytest.raises(MLCFeatureTypeError, match=r"key 4.*\[0, 4\)"):
        model.predict({"s": {4: 1.0}})
    numeric = mlc.load(_vectorizer([("d", 1)], {"d": "double"}, 1))
    with pytest.raises(MLCFeatureTypeError, match="expected numbers"):
        _stage_fn(numeric)({"d": "one"})


# -- identity ---------------------------------------------------------------------------------


def test_identity_returns_inputs_by_position():
    spec = _spec([("s", "string"), ("d", "double"), ("a", ("array", 2))], [("s2", "string"), ("d2", "double"), ("a2", ("array", 2))])
    spec.identity.SetInParent()
    out = mlc.load(spec).predict({"s": "hello", "d": 1.25, "a": np.array([3.0, 4.0])})
    assert out["s2"] == "hello" and out["d2"] == 1.25
    np.testing.assert_array_equal(out["a2"], [3.0, 4.0])


def test_identity_of_numbers_batches():
    spec = _spec([("a", ("array", 2))], [("b", ("array", 2))])
    spec.identity.SetInParent()
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(mlc.load(spec).predict_batch({"a": x})["b"], x)


def test_identity_bad_parameters():
    spec = _spec([("a", "double")], [("b", "double"), ("c", "double")])
    spec.identity.SetInParent()
    with pytest.raises(MLCParametersError, match="2 outputs but only 1 inputs"):
        mlc.load(spec)


# -- imputer ----------------------------------------------------------------------------------


def _imputer(kind, imputed_field, imputed, replace_field=None, replace=None, optional=False):
    spec = _spec([("x", kind)], [("y", kind)], optional=("x",) if optional else ())
    message = spec.imputer
    if imputed_field.endswith("Array"):
        getattr(message, imputed_field).vector.extend(imputed)
    elif imputed_field.endswith("Dictionary"):
        getattr(message, imputed_field).map.update(imputed)
    else:
        setattr(message, imputed_field, imputed)
    if replace_field is not None:
        setattr(message, replace_field, replace)
    return spec


def test_imputer_of_strings():
    model = mlc.load(_imputer("string", "imputedStringValue", "unknown", "replaceStringValue", "?", optional=True))
    assert model.predict({"x": "?"})["y"] == "unknown"
    assert model.predict({"x": "cat"})["y"] == "cat"
    assert model.predict({})["y"] == "unknown"  # an absent optional input is missing too


def test_imputer_of_int64():
    model = mlc.load(_imputer("int64", "imputedInt64Value", 42, "replaceInt64Value", -1))
    assert model.predict({"x": -1})["y"] == 42
    got = model.predict({"x": 5})["y"]
    assert type(got) is int and got == 5


def test_imputer_of_an_int64_array():
    spec = _imputer(("array", 4, INT32), "imputedInt64Array", [10, 20, 30, 40], "replaceInt64Value", 0)
    x = np.array([0, 7, 0, -3], np.int32)
    got = mlc.load(spec).predict({"x": x})["y"]
    np.testing.assert_array_equal(got, np.where(x == 0, [10, 20, 30, 40], x))
    assert got.dtype == np.int32


def test_imputer_of_a_double_with_nan_the_default_missing_value():
    model = mlc.load(_imputer("double", "imputedDoubleValue", 1.5))
    assert model.predict({"x": math.nan})["y"] == 1.5
    assert model.predict({"x": 0.25})["y"] == 0.25


def test_imputer_of_an_array_by_one_value_and_replace_value():
    spec = _imputer(("array", 3), "imputedDoubleValue", 9.0, "replaceDoubleValue", -999.0)
    x = np.array([[-999.0, 1.0, -999.0], [2.0, 3.0, 4.0]])
    got = mlc.load(spec).predict_batch({"x": x})["y"]
    np.testing.assert_array_equal(got, np.where(x == -999.0, 9.0, x))


def test_imputer_of_a_dictionary_stands_in_for_an_absent_input():
    model = mlc.load(_imputer(("dict", "string"), "imputedStringDictionary", {"a": 1.0}, optional=True))
    assert model.predict({})["y"] == {"a": 1.0}
    assert model.predict({"x": {"b": 2.0}})["y"] == {"b": 2.0}


def test_imputer_bad_parameters():
    with pytest.raises(MLCParametersError, match="3 values, the input array 4"):
        mlc.load(_imputer(("array", 4), "imputedDoubleArray", [1.0, 2.0, 3.0]))
    with pytest.raises(MLCParametersError, match="replaceStringValue does not go with imputedDoubleValue"):
        mlc.load(_imputer("double", "imputedDoubleValue", 1.0, "replaceStringValue", "x"))
    with pytest.raises(MLCParametersError, match="imputedStringValue imputes string"):
        mlc.load(_imputer("double", "imputedStringValue", "x"))
    spec = _spec([("x", "double")], [("y", "double")])
    spec.imputer.SetInParent()
    with pytest.raises(MLCParametersError, match="no imputed value"):
        mlc.load(spec)


def test_imputer_bad_input():
    model = mlc.load(_imputer("double", "imputedDoubleValue", 1.5))
    with pytest.raises(MLCFeatureTypeError, match="is a str; expected numbers"):
        _stage_fn(model)({"x": "nan"})
    strings = mlc.load(_imputer("string", "imputedStringValue", "u"))
    with pytest.raises(MLCFeatureTypeError, match="not a str"):
        _stage_fn(strings)({"x": 3.0})


# -- oneHotEncoder ----------------------------------------------------------------------------


def _encoder(categories, in_kind, out_kind, sparse=False, ignore=False):
    spec = _spec([("x", in_kind)], [("y", out_kind)])
    message = spec.oneHotEncoder
    vector = message.stringCategories if isinstance(categories[0], str) else message.int64Categories
    vector.vector.extend(categories)
    message.outputSparse = sparse
    message.handleUnknown = 1 if ignore else 0
    return spec


def _one_hot(categories, value):
    return np.array([1.0 if c == value else 0.0 for c in categories])


INT_CATEGORIES = [5, -2, 100, 7]
WORDS = ["low", "mid", "high"]


def test_one_hot_encoder_int64_dense():
    model = mlc.load(_encoder(INT_CATEGORIES, "int64", ("array", 4)))
    for value in INT_CATEGORIES:
        np.testing.assert_array_equal(model.predict({"x": value})["y"], _one_hot(INT_CATEGORIES, value))


def test_one_hot_encoder_int64_unknown():
    refusing = mlc.load(_encoder(INT_CATEGORIES, "int64", ("array", 4)))
    with pytest.raises(MLCPredictionError, match="not one of the categories"):  # a run-time check of the jitted program
        refusing.predict({"x": 3})
    ignoring = mlc.load(_encoder(INT_CATEGORIES, "int64", ("array", 4), ignore=True))
    np.testing.assert_array_equal(ignoring.predict({"x": 3})["y"], np.zeros(4))


def test_one_hot_encoder_of_a_multiarray_of_ids():
    model = mlc.load(_encoder(INT_CATEGORIES, ("array", 3), ("array", 12), ignore=True))
    ids = np.array([7.0, 5.0, 8.0])
    expected = np.stack([_one_hot(INT_CATEGORIES, v) for v in ids])
    np.testing.assert_array_equal(model.predict({"x": ids})["y"], expected)


def test_one_hot_encoder_string_dense_and_sparse():
    dense = mlc.load(_encoder(WORDS, "string", ("array", 3)))
    sparse = mlc.load(_encoder(WORDS, "string", ("dict", "int64"), sparse=True))
    for word in WORDS:
        np.testing.assert_array_equal(dense.predict({"x": word})["y"], _one_hot(WORDS, word))
        assert sparse.predict({"x": word})["y"] == {WORDS.index(word): 1.0}


def test_one_hot_encoder_sparse_ignore_unknown_is_empty():
    model = mlc.load(_encoder(WORDS, "string", ("dict", "int64"), sparse=True, ignore=True))
    assert model.predict({"x": "extreme"})["y"] == {}
    ints = mlc.load(_encoder(INT_CATEGORIES, "int64", ("dict", "int64"), sparse=True))
    assert ints.predict({"x": 100})["y"] == {2: 1.0}


def test_one_hot_encoder_unknown_string_is_refused_by_name():
    model = mlc.load(_encoder(WORDS, "string", ("array", 3)))
    with pytest.raises(MLCFeatureTypeError, match="value 'extreme' is not one of the categories"):
        model.predict({"x": "extreme"})


def test_one_hot_encoder_bad_parameters():
    with pytest.raises(MLCParametersError, match="no categories"):
        mlc.load(_no_type("oneHotEncoder"))
    with pytest.raises(MLCParametersError, match="must be a dictionary"):
        mlc.load(_encoder(WORDS, "string", ("array", 3), sparse=True))
    with pytest.raises(MLCParametersError, match="string categories take a string input"):
        mlc.load(_encoder(WORDS, "int64", ("array", 3)))


def test_one_hot_encoder_bad_input():
    model = mlc.load(_encoder(INT_CATEGORIES, "int64", ("array", 4)))
    with pytest.raises(MLCFeatureTypeError, match="not an int64"):
        _stage_fn(model)({"x": "5"})


# -- dictVectorizer ---------------------------------------------------------------------------


def test_dict_vectorizer_int64_keys_to_a_sparse_dictionary():
    spec = _spec([("x", ("dict", "int64"))], [("y", ("dict", "int64"))])
    spec.dictVectorizer.int64ToIndex.vector.extend([30, 10, 20])
    assert mlc.load(spec).predict({"x": {10: 1.5, 20: -2.0, 99: 7.0}})["y"] == {1: 1.5, 2: -2.0}


def test_dict_vectorizer_bad_parameters_and_input():
    with pytest.raises(MLCParametersError, match="no mapping"):
        mlc.load(_no_type("dictVectorizer"))
    spec = _spec([("x", ("dict", "string"))], [("y", ("array", 3))])
    spec.dictVectorizer.stringToIndex.vector.extend(["a", "b", "a"])
    with pytest.raises(MLCParametersError, match="'a' appears more than once"):
        mlc.load(spec)
    del spec.dictVectorizer.stringToIndex.vector[2]
    model = mlc.load(spec)
    with pytest.raises(MLCFeatureTypeError, match="not a dictionary"):
        _stage_fn(model)({"x": "a=1"})
    with pytest.raises(MLCFeatureTypeError, match="not a number"):
        _stage_fn(model)({"x": {"a": "1"}})


# -- scaler and normalizer --------------------------------------------------------------------


def _scaler(in_kind, out_kind, shift, scale):
    spec = _spec([("x", in_kind)], [("y", out_kind)])
    spec.scaler.SetInParent()
    spec.scaler.shiftValue.extend(shift)
    spec.scaler.scaleValue.extend(scale)
    return spec


def test_scaler_of_scalars():
    assert mlc.load(_scaler("double", "double", [1.0], [2.0])).predict({"x": 0.25})["y"] == 2.5
    to_int = mlc.load(_scaler("int64", "int64", [3.0], [2.0]))
    got = to_int.predict({"x": 4})["y"]
    assert type(got) is int and got == 14
    assert mlc.load(_scaler("int64", "double", [], [0.5])).predict({"x": 3})["y"] == 1.5


def test_scaler_of_an_array_with_one_shift_and_per_element_scale():
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
    got = mlc.load(_scaler(("array", 3), ("array", 3), [-1.0], [1.0, 10.0, 100.0])).predict_batch({"x": x})["y"]
    np.testing.assert_allclose(got, (x - 1.0) * [1.0, 10.0, 100.0], rtol=1e-6)


def test_scaler_bad_parameters():
    with pytest.raises(MLCParametersError, match="2 shiftValue values: the input holds 3"):
        mlc.load(_scaler(("array", 3), ("array", 3), [1.0, 2.0], [1.0]))
    with pytest.raises(MLCParametersError, match="a scalar input takes at most one"):
        mlc.load(_scaler("double", "double", [], [1.0, 2.0]))
    with pytest.raises(MLCParametersError, match="must have the input's type"):
        mlc.load(_scaler("double", "int64", [], []))


def test_scaler_bad_input():
    lossy = mlc.load(_scaler("int64", "int64", [], [0.5]))
    with pytest.raises(MLCPredictionError, match="lose a fraction"):
        lossy.predict({"x": 3})
    with pytest.raises(MLCFeatureTypeError, match="holds 2 values, the scaler has 3"):
        mlc.load(_scaler(("array", None), ("array", None), [], [1.0, 2.0, 3.0])).predict({"x": np.ones(2)})


def test_normalizer_bad_parameters_and_input():
    spec = _spec([("x", ("array", 3))], [("y", ("array", 3))])
    spec.normalizer.normType = 7
    with pytest.raises(MLCParametersError, match="unknown normType 7"):
        mlc.load(spec)
    spec.normalizer.normType = 2
    with pytest.raises(MLCFeatureTypeError, match="not a multiarray"):
        _stage_fn(mlc.load(spec))({"x": {"a": 1.0}})
    scalar = _spec([("x", "double")], [("y", "double")])
    scalar.normalizer.SetInParent()
    with pytest.raises(MLCParametersError, match="takes a multiarray"):
        mlc.load(scalar)


# -- host stages feeding jitted ones in a pipeline --------------------------------------------


def _mapping_then_encoder(ignore):
    mapping = _string_to_int(default=3)  # blue -> 30, unknown -> 3
    encoder = _encoder(INT_CATEGORIES + [30], "int64", ("array", 5), ignore=ignore)
    encoder.description.input[0].name = "y"
    encoder.description.output[0].name = "z"
    spec = _spec([("x", "string")], [("z", ("array", 5))])
    spec.pipeline.models.add().CopyFrom(mapping)
    spec.pipeline.models.add().CopyFrom(encoder)
    return spec


def test_categorical_mapping_feeds_a_jitted_one_hot_encoder():
    model = mlc.load(_mapping_then_encoder(ignore=True))
    categories = INT_CATEGORIES + [30]
    for word in ["blue", "red", "purple"]:
        np.testing.assert_array_equal(model.predict({"x": word})["z"], _one_hot(categories, COLORS.get(word, 3)))


def test_run_time_checks_of_a_pipeline_stage_are_enforced():
    model = mlc.load(_mapping_then_encoder(ignore=False))
    with pytest.raises(MLCPredictionError, match="not one of the categories"):
        model.predict({"x": "purple"})  # maps to 3, not a category
