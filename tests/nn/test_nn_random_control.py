"""NeuralNetwork random, control-flow and NMS layers, built with coremltools' NeuralNetworkBuilder.

Random layers are checked by their moments (tolerances: several standard errors of the
estimate for the sample sizes used) and by seed determinism; control flow and NMS against
numpy / plain Python references. Only ``activation`` layers and the layers under test are used,
so the file depends on no other layer family.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc

pytest.importorskip("coremltools")
from coremltools.models import datatypes  # noqa: E402
from coremltools.models.neural_network import NeuralNetworkBuilder  # noqa: E402

N = 20_000  # samples per moment check: standard error of a mean of unit variance is 0.007


def _builder(inputs, outputs=(("out", None),), exact=True):
    feats = [(name, datatypes.Array(*shape)) for name, shape in inputs]
    return NeuralNetworkBuilder(feats, list(outputs), disable_rank5_shape_mapping=exact)


def _linear(b, name, x, out, alpha, beta):
    b.add_activation(name, "LINEAR", x, out, params=[alpha, beta])


def _predict(builder, **inputs):
    return mlc.load(builder.spec).predict({k: np.asarray(v, np.float32) for k, v in inputs.items()})


# -- random ----------------------------------------------------------------------------------------
def _static_model(kind, seed, shape=(N,), **kw):
    b = _builder([("x", (1,))], outputs=[("out", None)])
    getattr(b, f"add_random_{kind}_static")(name="r", output_name="out", output_shape=list(shape), seed=seed, **kw)
    return b


@pytest.mark.parametrize(
    "kind, kw, mean, std",
    [
        ("normal", dict(mean=2.0, stddev=3.0), 2.0, 3.0),
        ("uniform", dict(minval=-1.0, maxval=3.0), 1.0, 4.0 / np.sqrt(12)),
        ("bernoulli", dict(prob=0.3), 0.3, np.sqrt(0.3 * 0.7)),
    ],
)
def test_static_moments_and_seed(kind, kw, mean, std):
    b = _static_model(kind, 7, **kw)
    m = mlc.load(b.spec)
    y = np.asarray(m.predict({"x": np.zeros(1, np.float32)})["out"])
    assert y.shape == (N,)
    # 5 standard errors of the mean, and of the std (se(std) ~ std / sqrt(2N) for these shapes)
    assert abs(y.mean() - mean) < 5 * std / np.sqrt(N)
    assert abs(y.std() - std) < 5 * std * 1.5 / np.sqrt(N)
    if kind == "uniform":
        assert y.min() >= -1.0 and y.max() < 3.0
    if kind == "bernoulli":
        assert set(np.unique(y)) <= {0.0, 1.0}
    # seed >= 0: the same values on every call and every load
    again = mlc.load(b.spec).predict({"x": np.zeros(1, np.float32)})["out"]
    np.testing.assert_array_equal(y, np.asarray(again))
    np.testing.assert_array_equal(y, np.asarray(m.predict({"x": np.zeros(1, np.float32)})["out"]))


def test_seed_minus_one_draws_fresh_values():
    m = mlc.load(_static_model("normal", -1, shape=(64,), mean=0.0, stddev=1.0).spec)
    a, b = (np.asarray(m.predict({"x": np.zeros(1, np.float32)})["out"]) for _ in range(2))
    assert not np.array_equal(a, b)


def test_different_seeds_differ():
    a = _predict(_static_model("uniform", 1, shape=(64,), minval=0.0, maxval=1.0), x=[0])["out"]
    b = _predict(_static_model("uniform", 2, shape=(64,), minval=0.0, maxval=1.0), x=[0])["out"]
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("exact", [True, False])
def test_like_takes_input_shape(exact):
    shape = (2, 3, 4)
    b = _builder([("x", shape)], exact=exact)
    b.add_random_normal_like(name="r", input_name="x", output_name="out", mean=5.0, stddev=0.0, seed=3)
    y = np.asarray(_predict(b, x=np.random.rand(*shape))["out"])
    assert y.size == 24
    np.testing.assert_allclose(y, 5.0)  # stddev 0: the mean exactly


def test_dynamic_shape_from_input_values():
    b = _builder([("shape", (3,))])
    b.add_random_uniform_dynamic(name="r", input_names=["shape"], output_name="out", minval=2.0, maxval=2.0, seed=1)
    y = np.asarray(_predict(b, shape=[2, 5, 7])["out"])
    assert y.shape == (2, 5, 7)
    np.testing.assert_allclose(y, 2.0)
    b = _builder([("shape", (2,))])
    b.add_random_bernoulli_dynamic(name="r", input_names=["shape"], output_name="out", prob=1.0, seed=1)
    np.testing.assert_array_equal(np.asarray(_predict(b, shape=[3, 4])["out"]), np.ones((3, 4)))


def test_categorical_frequencies():
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]], np.float32)
    for is_logits, x in ((True, np.log(probs + 1e-12)), (False, probs)):
        b = _builder([("x", (2, 3))])
        b.add_categorical_distribution(name="c", input_name="x", output_name="out", num_samples=N, is_logits=is_logits, seed=5)
        y = np.asarray(_predict(b, x=x)["out"])
        assert y.shape == (2, N)
        freq = np.stack([np.bincount(y[i].astype(int), minlength=3) / N for i in range(2)])
        # binomial standard error is at most 0.5 / sqrt(N) = 0.0035; allow 5 of them
        np.testing.assert_allclose(freq, probs, atol=0.018)


def test_categorical_temperature_sharpens():
    logits = np.array([[0.0, 1.0]], np.float32)
    b = _builder([("x", (1, 2))])
    b.add_categorical_distribution(name="c", input_name="x", output_name="out", num_samples=N, temperature=0.25, seed=2)
    y = np.asarray(_predict(b, x=logits)["out"])
    p1 = 1 / (1 + np.exp(-4.0))  # softmax([0, 1] / 0.25)[1]
    assert abs(y.mean() - p1) < 0.01


@pytest.mark.parametrize(
    "build",
    [
        lambda b: b.add_random_bernoulli_static(name="r", output_name="out", output_shape=[2], prob=1.5),
        lambda b: b.add_random_uniform_static(name="r", output_name="out", output_shape=[2], minval=1.0, maxval=0.0),
        lambda b: b.add_random_normal_static(name="r", output_name="out", output_shape=[2], seed=-5),
        lambda b: b.add_categorical_distribution(name="r", input_name="x", output_name="out", num_samples=0),
    ],
)
def test_random_bad_parameters(build):
    b = _builder([("x", (1,))])
    build(b)
    with pytest.raises(mlc.MLCError, match="layer 'r'"):
        _predict(b, x=[0])


def test_dynamic_bad_shape_values():
    b = _builder([("shape", (2,))])
    b.add_random_normal_dynamic(name="r", input_names=["shape"], output_name="out")
    with pytest.raises(mlc.MLCError, match="non-negative integers"):
        _predict(b, shape=[2.5, 3])


# -- control flow ----------------------------------------------------------------------------------
@pytest.mark.parametrize("exact", [True, False])
def test_branch(exact):
    b = _builder([("x", (3,)), ("cond", (1,))], exact=exact)
    layer = b.add_branch("branch", "cond")
    _linear(NeuralNetworkBuilder(nn_spec=layer.branch.ifBranch), "mul", "x", "out", 10.0, 0.0)
    _linear(NeuralNetworkBuilder(nn_spec=layer.branch.elseBranch), "add", "x", "out", 1.0, 10.0)
    m = mlc.load(b.spec)
    x = np.array([1, 2, 3], np.float32)
    for cond, want in ((1.0, x * 10), (-0.5, x * 10), (0.0, x + 10), (1e-7, x + 10)):
        y = m.predict({"x": x, "cond": np.array([cond], np.float32)})["out"]
        np.testing.assert_allclose(np.asarray(y).reshape(-1), want)


def test_loop_fixed_iterations_and_input_count():
    b = _builder([("x", (1,))])
    _linear(b, "init", "x", "out", 1.0, 0.0)
    loop = b.add_loop("loop", max_iterations=5)
    _linear(NeuralNetworkBuilder(nn_spec=loop.loop.bodyNetwork), "inc", "out", "out", 1.0, 2.0)
    np.testing.assert_allclose(np.asarray(_predict(b, x=[1])["out"]), [11.0])
    # an input overrides maxLoopIterations
    b = _builder([("x", (1,)), ("n", (1,))])
    _linear(b, "init", "x", "out", 1.0, 0.0)
    loop = b.add_loop("loop", input_name="n", max_iterations=5)
    _linear(NeuralNetworkBuilder(nn_spec=loop.loop.bodyNetwork), "inc", "out", "out", 1.0, 2.0)
    np.testing.assert_allclose(np.asarray(_predict(b, x=[1], n=[3])["out"]), [7.0])
    np.testing.assert_allclose(np.asarray(_predict(b, x=[1], n=[0])["out"]), [1.0])


def _while_model(max_iterations=0):
    """out = x; cond = 3 - out; while cond: out += 1 (stops at out == 3 when x is an integer <= 3)."""
    b = _builder([("x", (1,))])
    _linear(b, "init", "x", "out", 1.0, 0.0)
    loop = b.add_loop("loop", condition="cond", max_iterations=max_iterations)
    _linear(NeuralNetworkBuilder(nn_spec=loop.loop.conditionNetwork), "cond", "out", "cond", -1.0, 3.0)
    _linear(NeuralNetworkBuilder(nn_spec=loop.loop.bodyNetwork), "inc", "out", "out", 1.0, 1.0)
    return b


def test_while_loop():
    m = mlc.load(_while_model().spec)
    np.testing.assert_allclose(np.asarray(m.predict({"x": np.array([-4], np.float32)})["out"]), [3.0])
    np.testing.assert_allclose(np.asarray(m.predict({"x": np.array([3], np.float32)})["out"]), [3.0])


def test_while_loop_with_bound():
    m = mlc.load(_while_model(max_iterations=2).spec)
    np.testing.assert_allclose(np.asarray(m.predict({"x": np.array([-4], np.float32)})["out"]), [-2.0])
    np.testing.assert_allclose(np.asarray(m.predict({"x": np.array([2], np.float32)})["out"]), [3.0])


def test_loop_break_and_continue():
    """for 100 iterations: i += 1; if i >= 5: break; (continue when i >= 3); j += 1  ->  i = 5, j = 2."""
    b = _builder([("x", (1,))], outputs=[("i", None), ("j", None)])
    _linear(b, "i0", "x", "i", 0.0, 0.0)
    _linear(b, "j0", "x", "j", 0.0, 0.0)
    loop = b.add_loop("loop", max_iterations=100)
    body = NeuralNetworkBuilder(nn_spec=loop.loop.bodyNetwork)
    _linear(body, "inc_i", "i", "i", 1.0, 1.0)
    body.add_activation("ge5", "THRESHOLDEDRELU", "i", "ge5", params=4.5)
    stop = body.add_branch("stop", "ge5")
    NeuralNetworkBuilder(nn_spec=stop.branch.ifBranch).add_loop_break("break")
    body.add_activation("ge3", "THRESHOLDEDRELU", "i", "ge3", params=2.5)
    skip = body.add_branch("skip", "ge3")
    NeuralNetworkBuilder(nn_spec=skip.branch.ifBranch).add_loop_continue("continue")
    _linear(body, "inc_j", "j", "j", 1.0, 1.0)
    y = _predict(b, x=[0])
    np.testing.assert_allclose(np.asarray(y["i"]), [5.0])
    np.testing.assert_allclose(np.asarray(y["j"]), [2.0])


def test_control_flow_bad_inputs():
    b = _builder([("x", (3,)), ("cond", (2,))])
    layer = b.add_branch("branch", "cond")
    _linear(NeuralNetworkBuilder(nn_spec=layer.branch.ifBranch), "mul", "x", "out", 10.0, 0.0)
    with pytest.raises(mlc.MLCParametersError, match="scalar"):
        _predict(b, x=[1, 2, 3], cond=[1, 1])
    b = _builder([("x", (1,))])
    _linear(b, "init", "x", "out", 1.0, 0.0)
    b.add_loop_break("stray")
    with pytest.raises(mlc.MLCParametersError, match="outside a loop"):
        _predict(b, x=[1])


# -- NMS -------------------------------------------------------------------------------------------
def _iou(a, b):
    def corners(x):
        return x[0] - x[2] / 2, x[0] + x[2] / 2, x[1] - x[3] / 2, x[1] + x[3] / 2

    ax0, ax1, ay0, ay1 = corners(a)
    bx0, bx1, by0, by1 = corners(b)
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _nms_reference(boxes, scores, iou_t, score_t, m, per_class):
    """Greedy NMS, one batch, following the proto's description."""
    best, cls = scores.max(-1), scores.argmax(-1)
    kept = []
    for i in np.argsort(-best, kind="stable"):
        if best[i] < score_t or len(kept) == m:
            continue
        if all(_iou(boxes[i], boxes[k]) <= iou_t or (per_class and cls[i] != cls[k]) for k in kept):
            kept.append(i)
    return kept or [int(np.argmax(best))]


def _nms_model(n, c, dynamic, **kw):
    names = ["boxes", "scores"] + (["iou", "score", "max"] if dynamic else [])
    shapes = [(2, n, 4), (2, n, c)] + [(1,)] * (3 if dynamic else 0)
    outs = ["sel_boxes", "sel_scores", "sel_ids", "count"]
    b = _builder(list(zip(names, shapes)), outputs=[(o, None) for o in outs])
    b.add_nms("nms", names, outs, **kw)
    return b


@pytest.mark.parametrize("per_class, dynamic", [(False, False), (True, True)])
def test_nms(per_class, dynamic):
    rng = np.random.default_rng(0)
    n, c, m = 30, 3, 12
    boxes = rng.random((2, n, 4)).astype(np.float32)
    scores = rng.random((2, n, c)).astype(np.float32)
    iou_t, score_t = 0.2, 0.5
    if dynamic:
        b = _nms_model(n, c, True, per_class_suppression=per_class)
        y = _predict(b, boxes=boxes, scores=scores, iou=[iou_t], score=[score_t], max=[m])
    else:
        b = _nms_model(n, c, False, iou_threshold=iou_t, score_threshold=score_t, max_boxes=m, per_class_suppression=per_class)
        y = _predict(b, boxes=boxes, scores=scores)
    out = {k: np.asarray(v) for k, v in y.items()}
    assert out["sel_boxes"].shape == (2, m, 4) and out["sel_ids"].shape == (2, m) and out["count"].shape == (2,)
    for i in range(2):
        kept = _nms_reference(boxes[i], scores[i], iou_t, score_t, m, per_class)
        k = len(kept)
        assert out["count"][i] == k
        np.testing.assert_array_equal(out["sel_ids"][i], kept + [-1] * (m - k))
        np.testing.assert_allclose(out["sel_boxes"][i, :k], boxes[i, kept])
        np.testing.assert_allclose(out["sel_scores"][i, :k], scores[i, kept])
        assert not out["sel_boxes"][i, k:].any() and not out["sel_scores"][i, k:].any()


def test_nms_no_box_survives():
    rng = np.random.default_rng(1)
    boxes, scores = rng.random((2, 5, 4)), rng.random((2, 5, 1))
    b = _nms_model(5, 1, False, iou_threshold=0.5, score_threshold=2.0, max_boxes=3)
    y = {k: np.asarray(v) for k, v in _predict(b, boxes=boxes, scores=scores).items()}
    np.testing.assert_array_equal(y["count"], [1, 1])
    np.testing.assert_array_equal(y["sel_ids"][:, 0], scores[:, :, 0].argmax(-1))
    np.testing.assert_array_equal(y["sel_ids"][:, 1:], -1)


def test_nms_bad_max_boxes():
    b = _nms_model(5, 1, False, iou_threshold=0.5, score_threshold=0.0, max_boxes=0)
    with pytest.raises(mlc.MLCParametersError, match="maxBoxes"):
        _predict(b, boxes=np.zeros((2, 5, 4)), scores=np.zeros((2, 5, 1)))
