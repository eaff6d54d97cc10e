"""supportVectorRegressor / supportVectorClassifier against scikit-learn and libsvm.

Oracles: scikit-learn's ``predict`` / ``predict_proba`` and libsvm's ``svm_predict`` (and
``svm_predict_values`` for decision values), on models converted by coremltools' own
converters; a few hand-written specs check refusals.

Tolerances follow the dtype the classic front end computes in (``FLOAT``):

- double (JAX's 64-bit mode, as libsvm and scikit-learn compute): the same sums and the same
  coupling iterations, so outputs agree to rounding; measured <= 1e-15 on probabilities and
  5e-14 on regression outputs. Bounds: probabilities 1e-9, regression 1e-9 * (1 + |y|).
- float32: each decision value is a sum over the support vectors of ``alpha_i K(x, sv_i)``
  with a relative rounding error of a few 1e-7 of ``sum |alpha_i K|``; on these
  well-conditioned models (standardised features, coefficients below ~10) that is ~1e-6.
  The pairwise Platt sigmoid has slope ``|A| / 4`` in the decision value; the coupling
  replayed in float32 agrees with libsvm's to ~1e-7 (measured). Bounds: probabilities 1e-4,
  regression 1e-4 * (1 + |y|). An ill-conditioned model (a nu-SVC with coefficients near 1e4
  that cancel) loses more: its test derives the bound from its conditioning.
- labels: exact. A vote flips only when a decision value is within rounding of zero; the data
  keep every decision value away from it (asserted where it matters).
"""

from __future__ import annotations

import importlib.metadata
from ctypes import c_double

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlc
from mlc._errors import MLCFeatureTypeError, MLCParametersError, MLCUnsupportedError
from mlc.frontends.classic.models._kernels import FLOAT

sklearn_svm = pytest.importorskip("sklearn.svm")
libsvm_svm = pytest.importorskip("libsvm.svm")
from libsvm import svmutil  # noqa: E402

DOUBLE = np.dtype(FLOAT) == np.float64
PROB_TOL = 1e-9 if DOUBLE else 1e-4
VALUE_TOL = 1e-9 if DOUBLE else 1e-4  # regression outputs: atol and rtol

KERNELS = [
    {"kernel": "linear"},
    {"kernel": "rbf", "gamma": 0.7},
    {"kernel": "poly", "degree": 3, "gamma": 0.5, "coef0": 1.0},
    {"kernel": "poly", "degree": 2, "gamma": 0.8, "coef0": 0.0},
    {"kernel": "sigmoid", "gamma": 0.2, "coef0": 0.1},
]


def _classification_data(n_classes: int, n: int = 70, seed: int = 0):
    """Balanced classes around random centres, overlapping a little; the first examples are
    of classes 0, 1, 2, ... (the order libsvm sees its labels in)."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(n_classes, 3) * 1.5
    y = np.arange(n) % n_classes
    return centres[y] + rng.randn(n, 3), y


def _regression_data(n: int = 60, seed: int = 1):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 3)
    return x, np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 - x[:, 2] + 0.05 * rng.randn(n)


def _queries(seed: int = 7, n: int = 40):
    return np.random.RandomState(seed).randn(n, 3) * 1.2


@pytest.fixture(scope="module")
def ct():
    from mlc.io.proto import import_coremltools

    return import_coremltools()


@pytest.fixture()
def libsvm_compat():
    """coremltools' libsvm converter records ``libsvm.__version__``, which libsvm-official does
    not set (the pinned 3.35 has the module-level constants, C_SVC, ..., that it also reads)."""
    import libsvm

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(libsvm, "__version__", importlib.metadata.version("libsvm-official"), raising=False)
        yield


def _predict(model, x):
    return model.predict_batch({"x": np.asarray(x, np.float64)})  # the declared DOUBLE multiarray


def _probability_matrix(dicts, classes):
    return np.array([[d[c] for c in classes] for d in dicts])


# -- scikit-learn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("params", KERNELS, ids=lambda p: "-".join(str(v) for v in p.values()))
@pytest.mark.parametrize("n_classes", [2, 4])
def test_sklearn_svc_labels(ct, params, n_classes):
    x, y = _classification_data(n_classes)
    labels = np.array([-3, 12, 33, 1234])[y]
    clf = sklearn_svm.SVC(**params).fit(x, labels)
    model = mlc.load(ct.converters.sklearn.convert(clf, "x", "target"))
    q = np.concatenate([x, _queries()])
    decision = clf.decision_function(q)
    assert np.min(np.abs(decision)) > 1e-4  # no vote within float32 rounding of a flip
    assert _predict(model, q)["target"] == clf.predict(q).tolist()


@pytest.mark.parametrize("params", KERNELS[:3], ids=lambda p: p["kernel"])
def test_sklearn_nusvc_string_labels(ct, params):
    x, y = _classification_data(3)
    labels = np.array(["X", "Y", "z"])[y]
    clf = sklearn_svm.NuSVC(nu=0.5, **params).fit(x, labels)
    model = mlc.load(ct.converters.sklearn.convert(clf, "x", "target"))
    q = np.concatenate([x, _queries()])
    assert _predict(model, q)["target"] == clf.predict(q).tolist()


@pytest.mark.parametrize(
    "estimator, params", [("SVC", KERNELS[1]), ("NuSVC", KERNELS[0])], ids=["SVC-rbf", "NuSVC-linear"]
)
def test_sklearn_multiclass_probabilities(ct, estimator, params):
    """scikit-learn's multiclass ``predict_proba`` runs libsvm's ``multiclass_probability``,
    the coupling Core ML follows; the label is the most probable class (libsvm's
    ``svm_predict_probability``), which scikit-learn's ``predict`` (votes) need not equal."""
    x, y = _classification_data(4)
    kwargs = {"nu": 0.5} if estimator == "NuSVC" else {}
    clf = getattr(sklearn_svm, estimator)(probability=True, random_state=0, **kwargs, **params).fit(x, y)
    model = mlc.load(ct.converters.sklearn.convert(clf, "x", "target"))
    q = np.concatenate([x, _queries()])
    out = _predict(model, q)
    expected = clf.predict_proba(q)
    got = _probability_matrix(out["classProbability"], clf.classes_.tolist())
    np.testing.assert_allclose(got, expected, atol=PROB_TOL, rtol=0)
    top = np.sort(expected, axis=1)
    clear = top[:, -1] - top[:, -2] > 2 * PROB_TOL  # rows whose argmax float32 cannot flip
    assert np.array(out["target"])[clear].tolist() == clf.classes_[np.argmax(expected, axis=1)][clear].tolist()


def test_sklearn_binary_probabilities(ct):
    """Two classes: Core ML (like libsvm >= 3.2x) takes the pair's Platt sigmoid directly,
    scikit-learn's bundled libsvm still runs the coupling (coremltools warns: "usually less
    than 0.5%"). Oracle: the sigmoid of libsvm's decision value (minus scikit-learn's binary
    ``decision_function``), with scikit-learn's probA/probB; and predict_proba within 0.5%."""
    x, y = _classification_data(2)
    labels = np.array(["foo", "bar"])[y]
    clf = sklearn_svm.SVC(kernel="rbf", probability=True, random_state=0).fit(x, labels)
    model = mlc.load(ct.converters.sklearn.convert(clf, "x", "target"))
    q = np.concatenate([x, _queries()])
    out = _predict(model, q)
    got = _probability_matrix(out["classProbability"], clf.classes_.tolist())
    libsvm_decision = -clf.decision_function(q)
    p_first = np.clip(1.0 / (1.0 + np.exp(libsvm_decision * clf.probA_[0] + clf.probB_[0])), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(got[:, 0], p_first, atol=PROB_TOL, rtol=0)
    np.testing.assert_allclose(got[:, 1], 1.0 - p_first, atol=PROB_TOL, rtol=0)
    np.testing.assert_allclose(got, clf.predict_proba(q), atol=0.005, rtol=0)


@pytest.mark.parametrize("estimator", ["SVR", "NuSVR"])
@pytest.mark.parametrize("params", KERNELS, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_sklearn_regressors(ct, estimator, params):
    x, y = _regression_data()
    reg = getattr(sklearn_svm, estimator)(C=2.0, **params).fit(x, y)
    model = mlc.load(ct.converters.sklearn.convert(reg, "x", "target"))
    q = np.concatenate([x, _queries()])
    expected = reg.predict(q)
    got = np.asarray(_predict(model, q)["target"], np.float64).reshape(-1)
    np.testing.assert_allclose(got, expected, atol=VALUE_TOL, rtol=VALUE_TOL)


def test_sklearn_linear_svr_converts_to_a_glm(ct):
    """coremltools converts LinearSVR to a glmRegressor (no SVM message): checked here so
    that every scikit-learn SVM is covered."""
    x, y = _regression_data()
    reg = sklearn_svm.LinearSVR(random_state=0, max_iter=5000).fit(x, y)
    spec = ct.converters.sklearn.convert(reg, "x", "target")
    assert spec.get_spec().WhichOneof("Type") == "glmRegressor"
    q = _queries()
    got = np.asarray(_predict(mlc.load(spec), q)["target"], np.float64).reshape(-1)
    np.testing.assert_allclose(got, reg.predict(q), atol=1e-4, rtol=1e-4)


# -- libsvm ---------------------------------------------------------------------------------------


def _libsvm_decision_values(model, x) -> np.ndarray:
    """libsvm's ``svm_predict_values`` through ctypes with a buffer of K(K-1)/2 values
    (``svmutil.svm_predict`` allocates one for NU_SVC and overruns it on multiclass models,
    the crash coremltools' NuSVC test skips)."""
    k = model.get_nr_class()
    n = 1 if model.get_svm_type() in (libsvm_svm.EPSILON_SVR, libsvm_svm.NU_SVR) else k * (k - 1) // 2
    out = []
    for row in x:
        nodes, _ = libsvm_svm.gen_svm_nodearray([float(v) for v in row])
        buffer = (c_double * n)()
        libsvm_svm.libsvm.svm_predict_values(model, nodes, buffer)
        out.append(list(buffer))
    return np.asarray(out)


def _libsvm_labels(model, x) -> list:
    labels = []
    for row in x:
        nodes, _ = libsvm_svm.gen_svm_nodearray([float(v) for v in row])
        labels.append(int(libsvm_svm.libsvm.svm_predict(model, nodes)))
    return labels


def _libsvm_classifier_data():
    x, y = _classification_data(4)
    return x, np.array([1, 2, 10, 12])[y], np.concatenate([x, _queries()])


@pytest.mark.parametrize("kernel", [0, 1, 2, 3])
@pytest.mark.parametrize("svm_type", [0, 1])
def test_libsvm_classifier_votes(ct, libsvm_compat, svm_type, kernel):
    """C-SVC (-s 0) and nu-SVC (-s 1), each kernel, four classes, no -b 1: one-vs-one votes."""
    x, labels, q = _libsvm_classifier_data()
    extra = " -n 0.5" if svm_type == 1 else ""
    plain = svmutil.svm_train(labels.tolist(), x.tolist(), f"-s {svm_type} -t {kernel} -g 0.5 -r 0.5 -q{extra}")
    model = mlc.load(ct.converters.libsvm.convert(plain, "x", "target", input_length=3))
    assert np.min(np.abs(_libsvm_decision_values(plain, q))) > 1e-4
    assert _predict(model, q)["target"] == _libsvm_labels(plain, q)


@pytest.mark.parametrize("svm_type, kernel", [(0, 3), (1, 1)])
def test_libsvm_classifier_probabilities(ct, libsvm_compat, svm_type, kernel):
    """-b 1 models: ``svm_predict -b 1``'s probabilities, and its label, the most probable
    class. (With the scikit-learn tests, every kernel has a probability test: rbf and linear
    there, sigmoid and polynomial here.)"""
    x, labels, q = _libsvm_classifier_data()
    extra = " -n 0.5" if svm_type == 1 else ""
    prob = svmutil.svm_train(labels.tolist(), x.tolist(), f"-s {svm_type} -t {kernel} -g 0.5 -r 0.5 -b 1 -q{extra}")
    model = mlc.load(ct.converters.libsvm.convert(prob, "x", "target", "probabilities", input_length=3))
    expected_labels, _, expected = svmutil.svm_predict([0] * len(q), q.tolist(), prob, "-b 1 -q")
    out = _predict(model, q)
    got = _probability_matrix(out["probabilities"], prob.get_labels())
    np.testing.assert_allclose(got, np.asarray(expected), atol=PROB_TOL, rtol=0)
    top = np.sort(np.asarray(expected), axis=1)
    clear = top[:, -1] - top[:, -2] > 2 * PROB_TOL
    assert np.array(out["target"])[clear].tolist() == np.array(expected_labels, int)[clear].tolist()


def test_libsvm_ill_conditioned_probabilities_within_the_rounding_bound(ct, libsvm_compat):
    """A linear nu-SVC with a small nu scales its coefficients up to ~1e4 that cancel to
    decision values of ~10: float32 loses digits there (~1e-4 on probabilities), not in the
    coupling. The bound per query: each pair's decision value carries a rounding error below
    ``u * sum_s |w_s| (|K(x, s)| + |x| |s|)`` (u the unit roundoff of the compute dtype;
    products, kernel dot products and sums), which the Platt sigmoid scales by at most
    ``|A| / 4``; measured errors stay below a fifth of it in float32."""
    x, labels, q = _libsvm_classifier_data()
    trained = svmutil.svm_train(labels.tolist(), x.tolist(), "-s 1 -t 0 -n 0.1 -b 1 -q")
    coefficients = np.array([[trained.sv_coef[j][i] for i in range(trained.l)] for j in range(3)])
    assert np.abs(coefficients).max() > 1e3
    svs = np.array([[trained.SV[i][j].value for j in range(3)] for i in range(trained.l)])
    owner = np.repeat(np.arange(4), [trained.nSV[c] for c in range(4)])
    slope = np.abs([trained.probA[p] for p in range(6)]) / 4
    magnitude = np.zeros((len(q), 6))
    for p, (i, j) in enumerate((i, j) for i in range(4) for j in range(i + 1, 4)):
        w = np.where(owner == i, coefficients[j - 1], 0.0) + np.where(owner == j, coefficients[i], 0.0)
        dot = np.abs(q) @ np.abs(svs).T
        magnitude[:, p] = (np.abs(w) * (np.abs(q @ svs.T) + dot)).sum(axis=1)
    unit = np.finfo(FLOAT).eps / 2
    bound = 16 * unit + unit * (slope * magnitude).max(axis=1)

    model = mlc.load(ct.converters.libsvm.convert(trained, "x", "target", "probabilities", input_length=3))
    _, _, expected = svmutil.svm_predict([0] * len(q), q.tolist(), trained, "-b 1 -q")
    got = _probability_matrix(_predict(model, q)["probabilities"], trained.get_labels())
    error = np.abs(got - np.asarray(expected)).max(axis=1)
    assert np.all(error <= bound), (error / bound).max()


@pytest.mark.parametrize("labels", [(90, -1)])
def test_libsvm_binary_probabilities_and_label_order(ct, libsvm_compat, labels):
    """Two classes, labels in libsvm's first-seen order (not sorted): probabilities are the
    pair's sigmoid, as ``svm_predict -b 1`` (libsvm 3.37) computes them."""
    x, y = _classification_data(2)
    target = np.array(labels)[y]
    model_svm = svmutil.svm_train(target.tolist(), x.tolist(), "-s 0 -t 2 -b 1 -q")
    assert model_svm.get_labels() == list(labels)
    model = mlc.load(ct.converters.libsvm.convert(model_svm, "x", "target", "probabilities", input_length=3))
    q = np.concatenate([x, _queries()])
    expected_labels, _, expected = svmutil.svm_predict([0] * len(q), q.tolist(), model_svm, "-b 1 -q")
    out = _predict(model, q)
    np.testing.assert_allclose(_probability_matrix(out["probabilities"], list(labels)), expected, atol=PROB_TOL, rtol=0)
    assert out["target"] == [int(v) for v in expected_labels]


@pytest.mark.parametrize("kernel", [0, 1, 2, 3])
@pytest.mark.parametrize("svm_type", [3, 4])
def test_libsvm_regressors(ct, libsvm_compat, svm_type, kernel):
    """epsilon-SVR (-s 3) and nu-SVR (-s 4): the output is libsvm's decision value."""
    x, y = _regression_data()
    trained = svmutil.svm_train(y.tolist(), x.tolist(), f"-s {svm_type} -t {kernel} -g 0.3 -r 0.5 -c 2 -q")
    model = mlc.load(ct.converters.libsvm.convert(trained, "x", "target", input_length=3))
    q = np.concatenate([x, _queries()])
    expected = _libsvm_decision_values(trained, q)[:, 0]
    got = np.asarray(_predict(model, q)["target"], np.float64).reshape(-1)
    np.testing.assert_allclose(got, expected, atol=VALUE_TOL, rtol=VALUE_TOL)


def test_libsvm_sparse_vectors_shorter_than_the_input(ct, libsvm_compat):
    """libsvm's converter writes sparse support vectors; a feature that is zero in every
    support vector is absent, so the vectors are shorter than the input (here 4 named double
    inputs, support vectors of width 3 at most): the input's extra feature still enters the
    RBF distance."""
    x, y = _classification_data(3)
    x4 = np.concatenate([x, np.zeros((len(x), 1))], axis=1)
    trained = svmutil.svm_train(y.tolist(), x4.tolist(), "-s 0 -t 2 -g 0.5 -q")
    spec = ct.converters.libsvm.convert(trained, ["a", "b", "c", "d"], "target")
    assert max(n.index for v in spec.get_spec().supportVectorClassifier.sparseSupportVectors.vectors for n in v.nodes) == 3
    model = mlc.load(spec)
    q = np.concatenate([_queries(n=12), np.random.RandomState(3).randn(12, 1)], axis=1)
    got = [model.predict(dict(zip("abcd", map(float, row))))["target"] for row in q]
    assert got == _libsvm_labels(trained, q)


# -- the pure function ----------------------------------------------------------------------------


def test_probabilities_differentiate(ct):
    """The coupling loop has a fixed length (predict_batch above vmaps it): gradients with
    respect to the params (support vectors, coefficients, probA/probB) are finite."""
    x, y = _classification_data(3)
    clf = sklearn_svm.SVC(kernel="rbf", probability=True, random_state=0).fit(x, y)
    model = mlc.load(ct.converters.sklearn.convert(clf, "x", "target"))
    fn, params = model.jax_function()
    assert {"support_vectors", "coefficients", "rho", "probA", "probB"} <= set(params)

    def loss(params):
        out = fn(params, {"x": jnp.asarray(x[0], jnp.float32)})
        return out["classProbability"].probabilities[0]

    with jax.enable_x64(True):  # classic models compute in double; so do their gradients
        grads = jax.grad(loss)(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    assert np.abs(np.asarray(grads["coefficients"])).sum() > 0


# -- refusals -------------------------------------------------------------------------------------


def _svc_spec(ct, probability=False):
    x, y = _classification_data(3, n=30)
    clf = sklearn_svm.SVC(kernel="rbf", probability=probability, random_state=0).fit(x, y)
    return ct.converters.sklearn.convert(clf, "x", "target").get_spec()


def _load_fails(spec, error, match):
    with pytest.raises(error, match=match):
        mlc.load(spec)


def test_bad_classifier_parameters(ct):
    spec = _svc_spec(ct)
    spec.supportVectorClassifier.coefficients[0].alpha.append(1.0)
    _load_fails(spec, MLCParametersError, "coefficient row")

    spec = _svc_spec(ct)
    del spec.supportVectorClassifier.coefficients[-1]
    _load_fails(spec, MLCParametersError, "coefficient rows")

    spec = _svc_spec(ct)
    spec.supportVectorClassifier.rho.append(0.0)
    _load_fails(spec, MLCParametersError, "rho")

    spec = _svc_spec(ct)
    spec.supportVectorClassifier.numberOfSupportVectorsPerClass[0] += 1
    _load_fails(spec, MLCParametersError, "numberOfSupportVectorsPerClass")

    spec = _svc_spec(ct, probability=True)
    spec.supportVectorClassifier.probB.append(0.0)
    _load_fails(spec, MLCParametersError, "probA")

    spec = _svc_spec(ct)
    spec.supportVectorClassifier.kernel.rbfKernel.gamma = -1.0
    _load_fails(spec, MLCParametersError, "gamma")

    spec = _svc_spec(ct)
    spec.supportVectorClassifier.kernel.ClearField("rbfKernel")
    _load_fails(spec, MLCParametersError, "no kernel")

    spec = _svc_spec(ct)
    spec.supportVectorClassifier.denseSupportVectors.vectors[0].values.append(1.0)
    _load_fails(spec, MLCParametersError, "different lengths")


def test_probability_output_without_platt_parameters_is_refused(ct):
    spec = _svc_spec(ct, probability=True)
    del spec.supportVectorClassifier.probA[:]
    del spec.supportVectorClassifier.probB[:]
    _load_fails(spec, MLCUnsupportedError, "probA")


def test_bad_regressor_parameters_and_inputs(ct, libsvm_compat):
    x, y = _regression_data()
    spec = ct.converters.sklearn.convert(sklearn_svm.SVR().fit(x, y), "x", "target").get_spec()
    spec.supportVectorRegressor.coefficients.alpha.append(0.5)
    _load_fails(spec, MLCParametersError, "coefficients")

    trained = svmutil.svm_train(y.tolist(), x.tolist(), "-s 3 -t 2 -q")
    spec = ct.converters.libsvm.convert(trained, "x", "target", input_length=3).get_spec()
    spec.supportVectorRegressor.sparseSupportVectors.vectors[0].nodes[0].index = 0
    _load_fails(spec, MLCParametersError, "1-based")

    spec = ct.converters.sklearn.convert(sklearn_svm.SVR().fit(x, y), "x", "target").get_spec()
    for vector in spec.supportVectorRegressor.denseSupportVectors.vectors:
        vector.values.append(0.0)  # dense vectors of width 4 for an input of 3
    with pytest.raises(MLCFeatureTypeError, match="support vectors have 4"):
        mlc.load(spec).predict({"x": np.zeros(3, np.float32)})


def test_nan_decision_clips_like_libsvm(ct):
    """A degenerate model (libsvm can train one with rho = NaN) gives NaN decision values;
    libsvm's ``max(r, 1e-7)`` (``r > lo ? r : lo``) turns the NaN into the lower clip, so the
    pair's first class gets 1e-7 and the second 1 - 1e-7 (what svm_predict returns)."""
    x, y = _classification_data(2)
    clf = sklearn_svm.SVC(kernel="linear", probability=True, random_state=0).fit(x, y)
    spec = ct.converters.sklearn.convert(clf, "x", "target").get_spec()
    spec.supportVectorClassifier.rho[0] = float("nan")
    out = mlc.load(spec).predict({"x": x[0]})
    first, second = spec.supportVectorClassifier.int64ClassLabels.vector
    assert out["classProbability"] == pytest.approx({first: 1e-7, second: 1 - 1e-7}, abs=1e-15)
    assert out["target"] == second
