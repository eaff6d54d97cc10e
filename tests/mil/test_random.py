"""Random ops (random.py): distributions checked by their moments and frequencies, seeds by
reproducibility.

Every statistical check allows 5 standard errors of the estimate for the sample size, so a
correct sampler fails it with probability below 1e-6 (and, with a fixed seed, never).
"""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from scipy.special import softmax

from mlc.testing.mil_program import mil_model

N = (200, 500)  # 100,000 samples
SIGMAS = 5.0


def sample_model(make, target="iOS15", shape_input=None):
    """A model returning ``make(shape)`` (plus a dummy output); shape static unless shape_input."""
    inputs = {"x": (1,)}
    if shape_input is not None:
        inputs["dyn_shape"] = ((len(shape_input),), "int32")

        def body(x, dyn_shape):
            return mb.add(x=x, y=x), make(dyn_shape)
    else:

        def body(x):
            return mb.add(x=x, y=x), make(np.array(N, np.int32))

    return mil_model(body, inputs, target=target)


def draw(model, shape_input=None):
    feeds = {"x": np.zeros(1, np.float32)}
    if shape_input is not None:
        feeds["dyn_shape"] = np.array(shape_input, np.int32)
    out = model.predict(feeds)
    return out[list(model.output_description)[1]]


def assert_mean(samples, mean, std):
    tol = SIGMAS * std / np.sqrt(samples.size)
    assert abs(samples.mean(dtype=np.float64) - mean) <= tol, (samples.mean(), mean, tol)


def assert_variance(samples, variance, fourth_moment):
    """Sample variance within 5 standard errors: Var(s^2) ~ (mu4 - sigma^4) / n."""
    tol = SIGMAS * np.sqrt((fourth_moment - variance**2) / samples.size)
    assert abs(samples.var(dtype=np.float64) - variance) <= tol, (samples.var(), variance, tol)


# -- distributions ------------------------------------------------------------------------------
@pytest.mark.parametrize("mean, stddev, target", [(0.0, 1.0, "iOS15"), (3.0, 0.5, "iOS17"), (-2.0, 4.0, "iOS15")])
def test_normal_moments(mean, stddev, target):
    model = sample_model(lambda s: mb.random_normal(shape=s, mean=mean, stddev=stddev, seed=7), target)
    z = draw(model)
    assert z.shape == N and z.dtype == np.float32
    assert_mean(z, mean, stddev)
    assert_variance(z, stddev**2, 3 * stddev**4)
    # shape of the distribution: the fraction within one sigma is 68.27%
    inside = np.mean(np.abs(z - mean) < stddev)
    assert abs(inside - 0.682689) <= SIGMAS * np.sqrt(0.682689 * 0.317311 / z.size)


@pytest.mark.parametrize("low, high, target", [(0.0, 1.0, "iOS15"), (-3.0, 5.0, "iOS17")])
def test_uniform_moments_and_range(low, high, target):
    model = sample_model(lambda s: mb.random_uniform(shape=s, low=low, high=high, seed=11), target)
    u = draw(model)
    assert u.shape == N and u.dtype == np.float32
    assert u.min() >= low and u.max() < high  # half-open [low, high)
    width = high - low
    assert_mean(u, (low + high) / 2, width / np.sqrt(12))
    assert_variance(u, width**2 / 12, width**4 / 80)
    # flat: each tenth of the interval holds 10% of the samples
    counts = np.histogram(u, bins=10, range=(low, high))[0] / u.size
    np.testing.assert_allclose(counts, 0.1, atol=SIGMAS * np.sqrt(0.1 * 0.9 / u.size))


@pytest.mark.parametrize("prob, target", [(0.5, "iOS15"), (0.1, "iOS17"), (0.93, "iOS15")])
def test_bernoulli_frequency(prob, target):
    b = draw(sample_model(lambda s: mb.random_bernoulli(shape=s, prob=prob, seed=5), target))
    assert b.shape == N and b.dtype == np.float32
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert_mean(b, prob, np.sqrt(prob * (1 - prob)))


def test_defaults():
    """mean 0 / stddev 1, low 0 / high 1, prob 0.5."""

    def body(x):
        shape = np.array(N, np.int32)
        return mb.random_normal(shape=shape, seed=3), mb.random_uniform(shape=shape, seed=3), mb.random_bernoulli(shape=shape, seed=3)

    z, u, b = mil_model(body, {"x": (1,)}).predict({"x": np.zeros(1, np.float32)}).values()
    assert_mean(z, 0.0, 1.0)
    assert_variance(z, 1.0, 3.0)
    assert u.min() >= 0 and u.max() < 1
    assert_mean(u, 0.5, np.sqrt(1 / 12))
    assert_mean(b, 0.5, 0.5)


def test_degenerate_parameters_are_exact():
    """prob 0/1, stddev 0 and low == high leave nothing to chance (coremltools' smoke tests)."""
    shape = np.array([2, 1, 3], np.int32)

    def body(x):
        return (
            mb.random_bernoulli(shape=shape, prob=1.0),
            mb.random_bernoulli(shape=shape, prob=0.0),
            mb.random_normal(shape=shape, mean=1.5, stddev=0.0),
            mb.random_uniform(shape=shape, low=-2.0, high=-2.0),
            mb.add(x=x, y=x),
        )

    out = mil_model(body, {"x": (1,)}).predict({"x": np.zeros(1, np.float32)})
    ones, zeros, normal, uniform, _ = out.values()
    for a, value in ((ones, 1.0), (zeros, 0.0), (normal, 1.5), (uniform, -2.0)):
        np.testing.assert_array_equal(a, np.full((2, 1, 3), value, np.float32))


def categorical_model(mode, size, shape, seed=13, target="iOS15"):
    return mil_model(lambda x: mb.random_categorical(x=x, mode=mode, size=size, seed=seed), {"x": shape}, target=target)


def categorical(model, x):
    return next(iter(model.predict({"x": x}).values()))


@pytest.mark.parametrize("mode, target", [("logits", "iOS15"), ("probs", "iOS17")])
def test_categorical_frequencies(mode, target):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 6)).astype(np.float32) * 2
    probs = softmax(logits.astype(np.float64), axis=-1)
    size = 20_000
    x = logits if mode == "logits" else probs.astype(np.float32)
    out = categorical(categorical_model(mode, size, x.shape, target=target), x)
    assert out.shape == (2, 3, size) and out.dtype == np.float32
    assert np.all(out == np.round(out)) and out.min() >= 0 and out.max() <= 5
    for index in np.ndindex(2, 3):
        freq = np.bincount(out[index].astype(np.int64), minlength=6) / size
        p = probs[index]
        np.testing.assert_array_less(np.abs(freq - p), SIGMAS * np.sqrt(p * (1 - p) / size) + 1e-12)


def test_categorical_zero_probability_never_drawn_and_default_size():
    probs = np.array([[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0]], np.float32)
    model = mil_model(lambda x: mb.random_categorical(x=x, mode="probs", size=2000, seed=1), {"x": probs.shape})
    out = categorical(model, probs)
    assert set(np.unique(out[0])) == {1.0, 3.0}
    np.testing.assert_array_equal(out[1], 2.0)
    # defaults: mode logits, size 1 -> one draw per distribution, the last axis becomes 1
    single = mil_model(lambda x: mb.random_categorical(x=x, seed=1), {"x": (3, 1)})
    np.testing.assert_array_equal(categorical(single, np.zeros((3, 1), np.float32)), np.zeros((3, 1), np.float32))


def test_fp16_parameters_give_fp16_outputs():
    def body(x):
        return (
            mb.random_normal(shape=np.array([500, 200], np.int32), mean=np.float16(2.0), stddev=np.float16(0.5), seed=4),
            mb.random_uniform(shape=np.array([3], np.int32), low=np.float16(1.0), high=np.float16(1.0)),
            mb.random_bernoulli(shape=np.array([4], np.int32), prob=np.float16(1.0)),
            mb.random_categorical(x=x, size=3, seed=2),
        )

    model = mil_model(body, {"x": ((2, 1), "fp16")}, target="iOS17")
    normal, uniform, bern, cat = model.predict({"x": np.zeros((2, 1), np.float16)}).values()
    assert {a.dtype for a in (normal, uniform, bern, cat)} == {np.dtype(np.float16)}
    assert_mean(normal.astype(np.float32), 2.0, 0.5 + 1e-3)  # fp16 rounding adds < 1e-3 of spread
    np.testing.assert_array_equal(uniform, np.ones(3, np.float16))
    np.testing.assert_array_equal(bern, np.ones(4, np.float16))
    np.testing.assert_array_equal(cat, np.zeros((2, 3), np.float16))


# -- shapes computed at run time ----------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda s: mb.random_normal(shape=s, mean=1.0, stddev=2.0),
        lambda s: mb.random_uniform(shape=s, low=-1.0, high=1.0),
        lambda s: mb.random_bernoulli(shape=s, prob=0.3),
    ],
    ids=["normal", "uniform", "bernoulli"],
)
def test_shape_from_input(make):
    model = sample_model(make, shape_input=[2, 3, 4])
    assert draw(model, [2, 3, 4]).shape == (2, 3, 4)
    big = draw(model, [4, 25, 1000])
    assert big.shape == (4, 25, 1000)
    assert not np.array_equal(big, draw(model, [4, 25, 1000]))  # seed -1: fresh values per call


# -- seeds --------------------------------------------------------------------------------------
def all_ops_model(seed):
    """normal, uniform and bernoulli samples of shape N, all with ``seed``."""

    def body(x):
        shape = np.array(N, np.int32)
        return (
            mb.random_normal(shape=shape, seed=seed),
            mb.random_uniform(shape=shape, seed=seed),
            mb.random_bernoulli(shape=shape, seed=seed),
        )

    return mil_model(body, {"x": (1,)})


def samples(model):
    return list(model.predict({"x": np.zeros(1, np.float32)}).values())


def test_seed_reproducible_across_calls_and_models():
    model = all_ops_model(42)
    first = samples(model)
    for again in (samples(model), samples(all_ops_model(42))):
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(first, samples(all_ops_model(43))):
        assert not np.array_equal(a, b)


def test_categorical_seed_reproducible_and_unseeded_fresh():
    x = np.zeros((2, 10), np.float32)  # uniform over 10 classes
    seeded = categorical_model("logits", 64, x.shape, seed=9)
    np.testing.assert_array_equal(categorical(seeded, x), categorical(seeded, x))
    unseeded = categorical_model("logits", 64, x.shape, seed=-1)
    assert not np.array_equal(categorical(unseeded, x), categorical(unseeded, x))  # chance 10**-128


def test_unseeded_static_shape_fresh_per_call():
    model = all_ops_model(-1)
    first, second = samples(model), samples(model)
    assert not any(np.array_equal(a, b) for a, b in zip(first, second))


def test_bad_seed():
    import mlc

    with pytest.raises(mlc.MLCError, match="seed must be >= 0, or -1"):
        draw(sample_model(lambda s: mb.random_normal(shape=s, seed=-2)))
