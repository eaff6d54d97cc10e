"""Feature-engineering models converted from scikit-learn by coremltools (oneHotEncoder,
imputer, dictVectorizer, scaler, normalizer, and the featureVectorizer / arrayFeatureExtractor
stages the converter wraps them in), compared with scikit-learn's ``transform``/``predict``."""

import numpy as np
import pytest

import mlc

sk = pytest.importorskip("sklearn")
from sklearn.feature_extraction import DictVectorizer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import Normalizer, OneHotEncoder, StandardScaler  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3)) * np.array([1.0, 10.0, 100.0]) + np.array([0.0, 5.0, -50.0])
NAMES = ["a", "b", "c"]


def _convert(model, inputs, output):
    from coremltools.converters import sklearn as skc

    return skc.convert(model, inputs, output).get_spec()


def _rows(names, data):
    return [dict(zip(names, row)) for row in data]


# -- oneHotEncoder ----------------------------------------------------------------------------

CATEGORIES = np.array([[0, 1], [1, 0], [2, 2], [3, 3], [4, 4], [2, 0]], dtype="d")


def test_one_hot_encoder_of_separate_columns_matches_sklearn():
    # featureVectorizer -> per column arrayFeatureExtractor (int64) -> sparse oneHotEncoder -> featureVectorizer
    encoder = OneHotEncoder().fit(CATEGORIES)
    model = mlc.load(_convert(encoder, ["f1", "f2"], "out"))
    expected = encoder.transform(CATEGORIES).toarray()
    for row, want in zip(_rows(["f1", "f2"], CATEGORIES), expected):
        got = model.predict(row)["out"]
        assert got.dtype == np.float64 and got.shape == (10,)
        np.testing.assert_array_equal(got, want)


def test_one_hot_encoder_of_one_array_matches_sklearn():
    encoder = OneHotEncoder().fit(CATEGORIES)
    model = mlc.load(_convert(encoder, "data", "out"))
    for row, want in zip(CATEGORIES, encoder.transform(CATEGORIES).toarray()):
        np.testing.assert_array_equal(model.predict({"data": row})["out"], want)


def test_one_hot_encoder_then_normalizer_pipeline_matches_sklearn():
    pipe = Pipeline([("ohe", OneHotEncoder()), ("norm", Normalizer())]).fit(CATEGORIES)
    model = mlc.load(_convert(pipe, "data", "out"))
    for row, want in zip(CATEGORIES, pipe.transform(CATEGORIES).toarray()):
        # one-hot rows have two ones: entries 1/sqrt(2), float32 inside
        np.testing.assert_allclose(model.predict({"data": row})["out"], want, rtol=1e-6)


def test_one_hot_encoder_unknown_category_is_refused():
    from mlc._errors import MLCFeatureTypeError

    encoder = OneHotEncoder().fit(CATEGORIES)  # handle_unknown="error" -> ErrorOnUnknown
    model = mlc.load(_convert(encoder, "data", "out"))
    with pytest.raises(MLCFeatureTypeError, match="value 7 is not one of the categories"):
        model.predict({"data": np.array([7.0, 1.0])})


def test_one_hot_encoder_ignore_unknown_gives_zeros_like_sklearn():
    encoder = OneHotEncoder(handle_unknown="ignore").fit(CATEGORIES)
    model = mlc.load(_convert(encoder, "data", "out"))
    row = np.array([9.0, 1.0])
    np.testing.assert_array_equal(model.predict({"data": row})["out"], encoder.transform([row]).toarray()[0])


# -- imputer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
@pytest.mark.parametrize("missing", [np.nan, -999.0, 0.0])
def test_imputer_matches_sklearn(strategy, missing):
    data = np.round(X, 1)
    holes = RNG.random(data.shape) < 0.2
    data[holes] = missing
    imputer = SimpleImputer(missing_values=missing, strategy=strategy).fit(data)
    model = mlc.load(_convert(imputer, NAMES, "out"))
    expected = imputer.transform(data)
    got = np.array([model.predict(row)["out"] for row in _rows(NAMES, data)])
    # imputed statistics and passed-through values are rounded once to float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_imputer_of_one_array_in_a_scaler_pipeline_matches_sklearn():
    data = X.copy()
    data[RNG.random(data.shape) < 0.2] = np.nan
    pipe = Pipeline([("imp", SimpleImputer()), ("scale", StandardScaler())]).fit(data)
    model = mlc.load(_convert(pipe, "data", "out"))
    got = model.predict_batch({"data": data})["out"]
    # standardized values are O(1): float32 shift and scale keep them to ~1e-6
    np.testing.assert_allclose(got, pipe.transform(data), rtol=1e-5, atol=1e-5)


# -- dictVectorizer ---------------------------------------------------------------------------

DICTS = [{"foo": 1, "bar": 3}, {"bar": 4, "baz": 2}, {"bar": 1, "quux": 1, "quuux": 2}]


@pytest.mark.parametrize("sort", [True, False])
def test_dict_vectorizer_matches_sklearn(sort):
    vectorizer = DictVectorizer(sort=sort).fit(DICTS)
    model = mlc.load(_convert(vectorizer, "features", "output"))
    tests = DICTS + [{}, {"nothing": 21.0}, {"foo": 0.5, "unseen": 3.0}]
    for row, want in zip(tests, vectorizer.transform(tests).toarray()):
        got = model.predict({"features": row})["output"]
        np.testing.assert_array_equal(got, want)


def test_dict_vectorizer_scaler_linear_regression_pipeline_matches_sklearn():
    rng = np.random.default_rng(1)
    keys = ["x", "y", "z", "w"]
    train = [{k: float(v) for k, v in zip(keys, rng.normal(size=4)) if rng.random() < 0.8} for _ in range(50)]
    target = [sum(i * d.get(k, 0.0) for i, k in enumerate(keys)) + rng.normal(scale=0.1) for d in train]
    pipe = Pipeline([("dv", DictVectorizer(sparse=False)), ("scale", StandardScaler()), ("lr", LinearRegression())])
    pipe.fit(train, target)
    model = mlc.load(_convert(pipe, "features", "target"))
    tests = train[:20] + [{}, {"x": 2.0, "unknown": 5.0}]
    got = np.array([model.predict({"features": row})["target"] for row in tests])
    # |target| < ~10 through float32 scale and dot product: 1e-5 relative plus a few ulps
    np.testing.assert_allclose(got, pipe.predict(tests), rtol=1e-5, atol=1e-5)


# -- scaler -----------------------------------------------------------------------------------


def test_standard_scaler_of_separate_doubles_matches_sklearn():
    scaler = StandardScaler().fit(X)
    model = mlc.load(_convert(scaler, NAMES, "out"))
    got = np.array([model.predict(row)["out"] for row in _rows(NAMES, X)])
    np.testing.assert_allclose(got, scaler.transform(X), rtol=1e-5, atol=1e-5)


def test_standard_scaler_of_one_array_batches():
    scaler = StandardScaler().fit(X)
    model = mlc.load(_convert(scaler, "data", "out"))
    np.testing.assert_allclose(model.predict_batch({"data": X})["out"], scaler.transform(X), rtol=1e-5, atol=1e-5)


# -- normalizer -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_normalizer_matches_sklearn(norm):
    normalizer = Normalizer(norm=norm).fit(X)
    model = mlc.load(_convert(normalizer, NAMES, "out"))
    data = np.vstack([X, np.zeros((1, 3))])  # a zero row stays zero, as in scikit-learn
    got = np.array([model.predict(row)["out"] for row in _rows(NAMES, data)])
    # |y| <= 1: float32 division and sums, a few ulps
    np.testing.assert_allclose(got, normalizer.transform(data), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_normalizer_of_one_array_batches(norm):
    normalizer = Normalizer(norm=norm).fit(X)
    from coremltools.models.datatypes import Array

    model = mlc.load(_convert(normalizer, [("data", Array(3))], "out"))
    np.testing.assert_allclose(model.predict_batch({"data": X})["out"], normalizer.transform(X), rtol=1e-6, atol=1e-7)
