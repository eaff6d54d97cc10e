"""glmRegressor / glmClassifier against scikit-learn (converted by coremltools) and against
numpy formulas for the transforms and class encodings scikit-learn does not produce."""

import numpy as np
import pytest
from scipy.stats import norm

import mlc
from mlc._errors import MLCFeatureTypeError, MLCParametersError

sk = pytest.importorskip("sklearn")
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 3))


def _convert(model, inputs="x", output="target"):
    from coremltools.converters import sklearn as skc

    return skc.convert(model, inputs, output).get_spec()


@pytest.mark.parametrize("estimator", [LinearRegression(), Ridge(alpha=2.0)])
def test_linear_regressors_match_sklearn(estimator):
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.3 + RNG.normal(scale=0.1, size=len(X))
    estimator.fit(X, y)
    model = mlc.load(_convert(estimator))
    got = np.array([model.predict({"x": row})["target"] for row in X])
    # float32 inside: |y| <~ 10, so 1e-5 relative is a few ulps of the dot product.
    np.testing.assert_allclose(got, estimator.predict(X), rtol=1e-5, atol=1e-5)
    batch = model.predict_batch({"x": X})["target"]
    np.testing.assert_allclose(batch, got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("labels", [["Foo", "Bar"], [1, 2, 3, 4]])
def test_logistic_regression_probabilities_match_sklearn(labels):
    y = RNG.choice(labels, size=len(X))
    estimator = LogisticRegression(multi_class="ovr").fit(X, y)
    model = mlc.load(_convert(estimator))
    expected = estimator.predict_proba(X)
    for row, probs, label in zip(X, expected, estimator.predict(X)):
        out = model.predict({"x": row})
        assert out["target"] == label
        got = out["classProbability"]
        assert list(got) == list(estimator.classes_)
        np.testing.assert_allclose([got[c] for c in estimator.classes_], probs, atol=1e-6)


def test_linear_svc_labels_match_sklearn():
    y = RNG.choice([1, 2, 3], size=len(X))
    estimator = LinearSVC().fit(X, y)
    model = mlc.load(_convert(estimator))
    got = [model.predict({"x": row})["target"] for row in X]
    assert got == list(estimator.predict(X))


def test_separate_double_inputs_are_vectorised_in_order():
    from coremltools.converters import sklearn as skc

    y = X @ np.array([1.0, 2.0, 3.0])
    estimator = LinearRegression().fit(X, y)
    model = mlc.load(skc.convert(estimator, ["a", "b", "c"], "y"))
    out = model.predict({"a": X[0, 0], "b": X[0, 1], "c": X[0, 2]})
    assert isinstance(out["y"], float)
    np.testing.assert_allclose(out["y"], estimator.predict(X[:1])[0], rtol=1e-5)


def _glm_spec(kind, weights, offset, transform=0, encoding=0, labels=None):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 1
    n = len(weights[0])
    x = spec.description.input.add()
    x.name = "x"
    x.type.multiArrayType.shape.append(n)
    x.type.multiArrayType.dataType = Model_pb2.ArrayFeatureType.DOUBLE
    message = getattr(spec, kind)
    for row in weights:
        message.weights.add().value.extend(row)
    message.offset.extend(offset)
    message.postEvaluationTransform = transform
    if kind == "glmRegressor":
        out = spec.description.output.add()
        out.name = "y"
        out.type.doubleType.MergeFromString(b"")
        spec.description.predictedFeatureName = "y"
        return spec
    message.classEncoding = encoding
    message.stringClassLabels.vector.extend(labels)
    label = spec.description.output.add()
    label.name = "label"
    label.type.stringType.MergeFromString(b"")
    probs = spec.description.output.add()
    probs.name = "probs"
    probs.type.dictionaryType.stringKeyType.MergeFromString(b"")
    spec.description.predictedFeatureName = "label"
    spec.description.predictedProbabilitiesName = "probs"
    return spec


W = [[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]]


@pytest.mark.parametrize("transform,link", [(1, lambda s: 1 / (1 + np.exp(-s))), (2, norm.cdf)])
def test_glm_regressor_post_evaluation_transforms(transform, link):
    model = mlc.load(_glm_spec("glmRegressor", W[:1], [0.1], transform=transform))
    for row in X[:10]:
        np.testing.assert_allclose(model.predict({"x": row})["y"], link(np.dot(W[0], row) + 0.1), rtol=1e-5, atol=1e-6)


def test_glm_classifier_reference_class_is_a_softmax_with_score_zero():
    model = mlc.load(_glm_spec("glmClassifier", W, [0.1, -0.2], transform=0, encoding=0, labels=["a", "b", "c"]))
    for row in X[:10]:
        scores = np.concatenate([[0.0], np.array(W) @ row + [0.1, -0.2]])
        expected = np.exp(scores) / np.exp(scores).sum()
        out = model.predict({"x": row})
        np.testing.assert_allclose([out["probs"][k] for k in "abc"], expected, rtol=1e-5, atol=1e-6)
        assert out["label"] == "abc"[int(np.argmax(expected))]


def test_glm_classifier_binary_probit():
    model = mlc.load(_glm_spec("glmClassifier", W[:1], [0.3], transform=1, labels=["no", "yes"]))
    for row in X[:10]:
        p = norm.cdf(np.dot(W[0], row) + 0.3)
        out = model.predict({"x": row})
        np.testing.assert_allclose([out["probs"]["no"], out["probs"]["yes"]], [1 - p, p], rtol=1e-5, atol=1e-6)


def test_glm_jax_function_is_differentiable():
    import jax

    model = mlc.load(_glm_spec("glmRegressor", W[:1], [0.0]))
    fn, params = model.jax_function()
    with jax.enable_x64(True):  # classic models compute in double, and so differentiate in it
        grad = jax.grad(lambda p: fn(p, {"x": np.ones(3)})["y"])(params)
    assert grad["weights"].dtype == np.float64
    np.testing.assert_allclose(grad["weights"], np.ones((1, 3)))


@pytest.mark.parametrize(
    "weights,offset,labels,message",
    [
        ([[1.0, 2.0], [1.0]], [0.0, 0.0], None, "different lengths"),
        ([[1.0, 2.0, 3.0]], [0.0, 1.0], None, "offsets"),
        (W, [0.0, 0.0], ["a", "b", "c", "d"], "ReferenceClass needs K-1"),
    ],
)
def test_glm_bad_parameters(weights, offset, labels, message):
    kind = "glmClassifier" if labels else "glmRegressor"
    with pytest.raises(MLCParametersError, match=message):
        mlc.load(_glm_spec(kind, weights, offset, labels=labels))


def test_glm_wrong_input_width_is_a_feature_error():
    spec = _glm_spec("glmRegressor", W[:1], [0.0])
    spec.description.input[0].type.multiArrayType.shape[0] = 4
    model = mlc.load(spec)
    with pytest.raises(MLCFeatureTypeError, match="4 numbers, the weights expect 3"):
        model.predict({"x": np.ones(4)})
