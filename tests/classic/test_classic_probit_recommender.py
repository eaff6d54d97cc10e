"""``bayesianProbitRegressor`` and ``itemSimilarityRecommender``, each against an oracle written
here from its proto's text: numpy/scipy formulas for the probit regressor, plain Python for the
recommender. Specs are built from Model.proto directly (coremltools has no builders for them).

Probit tolerances: mlc sums a few float32 weights (relative error ~1e-7 per term, magnitudes
below 10) and evaluates Φ in float32, so 1e-5 relative / 1e-6 absolute bounds the difference
from the float64 oracle. The recommender computes in float64 like the oracle: exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

import mlc
from mlc._errors import MLCFeatureTypeError, MLCParametersError, MLCUnsupportedError
from mlc.io.proto import proto

INT32, DOUBLE = 131104, 65600


def _model():
    spec = proto("Model").Model()
    spec.specificationVersion = 3
    return spec


def _double(fd, name, optional=False):
    fd.name = name
    fd.type.doubleType.SetInParent()
    fd.type.isOptional = optional


# == bayesianProbitRegressor =========================================================================

# feature id -> {value: (mean, precision)}
WEIGHTS = {
    0: {0: (0.3, 2.0), 1: (-0.7, 4.0), 2: (1.1, 0.5)},
    1: {0: (-0.2, 1.5), 3: (0.9, 8.0)},
    2: {1: (0.4, 3.0), 2: (-1.3, 0.8)},
    4: {5: (2.0, 1.0)},
}
BIAS = (0.15, 5.0)


def probit_spec(pairs=False, outputs=("probability", "mean", "variance", "pessimistic"), optimism=True,
                weights=WEIGHTS, bias=BIAS, probability_output="probability", number_of_features=6):
    spec = _model()
    d = spec.description
    x = d.input.add()
    x.name = "x"
    x.type.multiArrayType.dataType = INT32
    x.type.multiArrayType.shape.extend([3, 2] if pairs else [6])
    if optimism:
        _double(d.input.add(), "optimism", optional=True)
    for name in outputs:
        _double(d.output.add(), name)
    if probability_output:
        d.predictedFeatureName = probability_output
    m = spec.bayesianProbitRegressor
    m.numberOfFeatures = number_of_features
    if bias is not None:
        m.bias.mean, m.bias.precision = bias
    for fid, table in weights.items():
        feature = m.features.add()
        feature.featureId = fid
        for value, (mean, precision) in table.items():
            w = feature.weights.add()
            w.featureValue = value
            w.featureWeight.mean, w.featureWeight.precision = mean, precision
    m.regressionInputFeatureName = "x"
    if optimism:
        m.optimismInputFeatureName = "optimism"
    m.meanOutputFeatureName = "mean" if "mean" in outputs else ""
    m.varianceOutputFeatureName = "variance" if "variance" in outputs else ""
    m.pessimisticProbabilityOutputFeatureName = "pessimistic" if "pessimistic" in outputs else ""
    return spec


def probit_oracle(x, optimism=0.0, weights=WEIGHTS, bias=BIAS):
    """The proto's model with β = 1: Gaussian weights summed, Φ of the mean over sqrt(1 + variance)."""
    x = np.asarray(x)
    pairs = list(enumerate(x)) if x.ndim == 1 else [tuple(r) for r in x]
    mean, variance = (bias[0], 1.0 / bias[1]) if bias else (0.0, 0.0)
    for fid, value in pairs:
        if int(value) in weights.get(int(fid), {}):
            mu, precision = weights[int(fid)][int(value)]
            mean += mu
            variance += 1.0 / precision
    scale = math.sqrt(1.0 + variance)
    return {
        "probability": norm.cdf(mean / scale),
        "mean": mean,
        "variance": variance,
        "pessimistic": norm.cdf((mean + optimism * math.sqrt(variance)) / scale),
    }


def _close(out, expected):
    for name, value in out.items():
        assert isinstance(value, float), name
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("x", [[0, 1, 2, 0, 5, 0], [2, 3, 1, 7, 5, 9], [1, 0, 0, 0, 0, 0], [9, 9, 9, 9, 9, 9]])
def test_probit_vector_input(x):
    x = np.asarray(x, np.int32)
    _close(mlc.load(probit_spec()).predict({"x": x}), probit_oracle(x))


def test_probit_pairs_input():
    x = np.array([[0, 2], [4, 5], [1, 1]], np.int32)  # (feature id, value); (1, 1) has no weight
    _close(mlc.load(probit_spec(pairs=True)).predict({"x": x}), probit_oracle(x))


def test_probit_many_sparse_weights():
    # 60 features, each with weights for a random subset of values 0..29 (the lookup's binary search)
    rng = np.random.default_rng(3)
    weights = {
        fid: {int(v): (float(rng.normal()), float(rng.uniform(0.5, 20))) for v in rng.choice(30, size=rng.integers(1, 12), replace=False)}
        for fid in range(60)
        if rng.uniform() < 0.8
    }
    spec = probit_spec(weights=weights, number_of_features=60, optimism=False)
    spec.description.input[0].type.multiArrayType.shape[:] = [60]
    model = mlc.load(spec)
    for x in rng.integers(0, 30, size=(3, 60)).astype(np.int32):
        _close(model.predict({"x": x}), probit_oracle(x, weights=weights))


def test_probit_hand_computed():
    # features 0 and 1 at value 0: mean 0.15 + 0.3 - 0.2 = 0.25; variance 1/5 + 1/2 + 1/1.5
    out = mlc.load(probit_spec(pairs=True)).predict({"x": np.array([[0, 0], [1, 0], [3, 3]], np.int32)})
    variance = 0.2 + 0.5 + 1 / 1.5
    assert out["mean"] == pytest.approx(0.25, abs=1e-6)
    assert out["variance"] == pytest.approx(variance, rel=1e-6)
    assert out["probability"] == pytest.approx(norm.cdf(0.25 / math.sqrt(1 + variance)), abs=1e-6)


@pytest.mark.parametrize("optimism", [-2.0, -0.5, 1.0])
def test_probit_optimism_shifts_the_pessimistic_probability(optimism):
    x = np.array([0, 3, 2, 0, 5, 1], np.int32)
    out = mlc.load(probit_spec()).predict({"x": x, "optimism": optimism})
    _close(out, probit_oracle(x, optimism))
    assert (out["pessimistic"] < out["probability"]) == (optimism < 0)


def test_probit_without_bias_or_optional_outputs():
    x = np.array([1, 0, 2, 0, 0, 0], np.int32)
    out = mlc.load(probit_spec(outputs=("probability",), optimism=False, bias=None)).predict({"x": x})
    assert list(out) == ["probability"]
    _close(out, probit_oracle(x, bias=None))


def test_probit_probability_is_the_unnamed_output():
    spec = probit_spec(probability_output=None)
    x = np.array([2, 0, 1, 0, 5, 0], np.int32)
    _close(mlc.load(spec).predict({"x": x}), probit_oracle(x))


def test_probit_batches():
    xs = np.random.default_rng(0).integers(0, 4, size=(8, 6)).astype(np.int32)
    out = mlc.load(probit_spec(optimism=False)).predict_batch({"x": xs})
    for i, x in enumerate(xs):
        expected = probit_oracle(x)
        for name in ("probability", "mean", "variance", "pessimistic"):
            np.testing.assert_allclose(np.asarray(out[name])[i], expected[name], rtol=1e-5, atol=1e-6)


def test_probit_refuses_sampled_probability():
    spec = probit_spec()
    _double(spec.description.output.add(), "sampled")
    spec.bayesianProbitRegressor.sampledProbabilityOutputFeatureName = "sampled"
    with pytest.raises(MLCUnsupportedError, match="sampled"):
        mlc.load(spec)


def _probit_edit(edit, **kw):
    spec = probit_spec(**kw)
    edit(spec)
    return spec


@pytest.mark.parametrize(
    "spec, match",
    [
        (probit_spec(weights={0: {1: (0.5, 0.0)}}), "precision"),
        (probit_spec(weights={0: {1: (0.5, -1.0)}}), "precision"),
        (probit_spec(weights={0: {1: (float("nan"), 1.0)}}), "mean"),
        (probit_spec(bias=(0.0, 0.0)), "bias"),
        (probit_spec(number_of_features=3), "numberOfFeatures"),
        (_probit_edit(lambda s: s.bayesianProbitRegressor.features[0].weights.add().CopyFrom(
            s.bayesianProbitRegressor.features[0].weights[0])), "two weights"),
        (_probit_edit(lambda s: setattr(s.bayesianProbitRegressor, "regressionInputFeatureName", "y")), "'y'"),
        (_probit_edit(lambda s: s.description.input[0].type.multiArrayType.__setattr__("dataType", DOUBLE)), "int32"),
        (_probit_edit(lambda s: _double(s.description.output.add(), "stray")), "stray"),
    ],
)
def test_probit_bad_parameters(spec, match):
    with pytest.raises(MLCParametersError, match=match):
        mlc.load(spec)


def test_probit_bad_input_shape():
    spec = probit_spec(pairs=True)
    spec.description.input[0].type.multiArrayType.ClearField("shape")
    with pytest.raises(MLCFeatureTypeError, match=r"\(N, 2\)"):
        mlc.load(spec).predict({"x": np.zeros((3, 3), np.int32)})


# == itemSimilarityRecommender ======================================================================

# observed item i -> (adjustment, [(k, sim(k, i)), ...]) by item index
SIMILARITIES = {
    0: (0.0, [(1, 0.8), (2, 0.3), (4, 0.1)]),
    1: (0.5, [(0, 0.8), (3, 0.6), (5, 0.2)]),
    2: (0.0, [(0, 0.3), (4, 0.9)]),
    3: (1.0, [(1, 0.6), (5, 0.7), (6, 0.4)]),
    5: (0.0, [(3, 0.7), (6, 0.5)]),
}
STRING_IDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date"]
INT_IDS = [101, 7, 55, 3, 900, 42, 18]


def recommender_spec(ids=None, item_input="dictionary", count=True, restriction=False, exclusion=False,
                     list_output=True, score_output=True, similarities=SIMILARITIES):
    """``ids``: None (item indices), STRING_IDS or INT_IDS."""
    spec = _model()
    d = spec.description
    key = "string" if ids is not None and isinstance(ids[0], str) else "int64"

    def items_type(fd, kind, optional=False):
        t = fd.type
        t.isOptional = optional
        if kind == "dictionary":
            getattr(t.dictionaryType, f"{key}KeyType").SetInParent()
        elif kind == "sequence":
            getattr(t.sequenceType, f"{key}Type").SetInParent()
        else:
            t.multiArrayType.dataType = INT32

    m = spec.itemSimilarityRecommender
    fd = d.input.add()
    fd.name = "items"
    items_type(fd, item_input)
    m.itemInputFeatureName = "items"
    if count:
        fd = d.input.add()
        fd.name, m.numRecommendationsInputFeatureName = "k", "k"
        fd.type.int64Type.SetInParent()
        fd.type.isOptional = True
    for flag, name, field in ((restriction, "only", "itemRestrictionInputFeatureName"),
                              (exclusion, "exclude", "itemExclusionInputFeatureName")):
        if flag:
            fd = d.input.add()
            fd.name = name
            items_type(fd, "sequence", optional=True)
            setattr(m, field, name)
    if list_output:
        fd = d.output.add()
        fd.name = m.recommendedItemListOutputFeatureName = "recommendations"
        items_type(fd, "sequence")
    if score_output:
        fd = d.output.add()
        fd.name = m.recommendedItemScoreOutputFeatureName = "scores"
        items_type(fd, "dictionary")
    for i, (adjustment, links) in similarities.items():
        entry = m.itemItemSimilarities.add()
        entry.itemId, entry.itemScoreAdjustment = i, adjustment
        for k, sim in links:
            link = entry.similarItemList.add()
            link.itemId, link.similarityScore = k, sim
    if ids is not None:
        (m.itemStringIds if key == "string" else m.itemInt64Ids).vector.extend(ids)
    return spec


def recommend(ratings, ids=None, k=None, restriction=None, exclusion=None, similarities=SIMILARITIES):
    """The proto's recommender: score_k = sum_i sim(k, i) * (rating_i - adjustment_i) over the
    observed items, best first, without the excluded (default: observed) items."""
    names = ids or list(range(7))
    index = {name: i for i, name in enumerate(names)}
    observed = {index[item]: r for item, r in ratings.items() if item in index}
    scores = [0.0] * len(names)
    for i, rating in observed.items():
        adjustment, links = similarities.get(i, (0.0, []))
        for j, sim in links:
            scores[j] += sim * (rating - adjustment)
    excluded = {index[x] for x in exclusion if x in index} if exclusion is not None else set(observed)
    pool = [index[x] for x in restriction if x in index] if restriction is not None else range(len(names))
    ranked = sorted((j for j in set(pool) if j not in excluded), key=lambda j: (-scores[j], j))
    ranked = ranked if k is None else ranked[:k]
    return [names[j] for j in ranked], {names[j]: scores[j] for j in ranked}


def _recommend_with_mlc(spec, items, **extra):
    out = mlc.load(spec).predict({"items": items, **extra})
    return out.get("recommendations"), out.get("scores")


@pytest.mark.parametrize("ids", [None, STRING_IDS, INT_IDS], ids=["indices", "strings", "int64"])
@pytest.mark.parametrize("k", [None, 0, 3, 100])
def test_recommender_dictionary_input(ids, k):
    names = ids or list(range(7))
    ratings = {names[0]: 4.0, names[1]: 2.0, names[3]: 5.0}
    extra = {} if k is None else {"k": k}
    got = _recommend_with_mlc(recommender_spec(ids=ids), ratings, **extra)
    assert got == recommend(ratings, ids, k)
    assert got[0] and all(isinstance(x, type(names[0])) for x in got[0]) or k == 0


def test_recommender_hand_computed():
    # items 0 (rating 4, no adjustment) and 1 (rating 2, adjustment 0.5):
    # score(2) = 0.3*4 = 1.2; score(3) = 0.6*1.5 = 0.9; score(4) = 0.1*4 = 0.4; score(5) = 0.2*1.5 = 0.3
    items, scores = _recommend_with_mlc(recommender_spec(), {0: 4.0, 1: 2.0})
    assert items == [2, 3, 4, 5, 6]
    assert scores == pytest.approx({2: 1.2, 3: 0.9, 4: 0.4, 5: 0.3, 6: 0.0})


@pytest.mark.parametrize("kind", ["sequence", "multiArray"])
def test_recommender_item_list_input_rates_each_item_one(kind):
    items = [0, 3, 5]
    value = items if kind == "sequence" else np.array(items, np.int32)
    got = _recommend_with_mlc(recommender_spec(item_input=kind), value, k=4)
    assert got == recommend({i: 1.0 for i in items}, k=4)


def test_recommender_string_sequence_input():
    got = _recommend_with_mlc(recommender_spec(ids=STRING_IDS, item_input="sequence"), ["fig", "pear"])
    assert got == recommend({"fig": 1.0, "pear": 1.0}, STRING_IDS)


def test_recommender_restriction_and_exclusion():
    spec = recommender_spec(ids=STRING_IDS, restriction=True, exclusion=True)
    ratings = {"apple": 3.0, "fig": 2.0}
    for extra in [dict(only=["plum", "lime", "date", "apple"]), dict(exclude=[]), dict(exclude=["pear", "lime"]),
                  dict(only=["pear", "fig", "kiwi"], exclude=["kiwi"], k=1)]:
        got = _recommend_with_mlc(spec, ratings, **extra)
        expected = recommend(ratings, STRING_IDS, extra.get("k"), extra.get("only"), extra.get("exclude"))
        assert got == expected, extra
    # an empty exclusion list recommends the observed items too
    items, _ = _recommend_with_mlc(spec, ratings, exclude=[])
    assert "apple" in items and "fig" in items


def test_recommender_ignores_unknown_items():
    ratings = {"apple": 3.0, "mango": 5.0}
    got = _recommend_with_mlc(recommender_spec(ids=STRING_IDS), ratings)
    assert got == recommend({"apple": 3.0}, STRING_IDS)


def test_recommender_single_output_and_default_input_name():
    spec = recommender_spec(count=False, score_output=False)
    spec.itemSimilarityRecommender.itemInputFeatureName = ""  # the only input is taken
    out = mlc.load(spec).predict({"items": {2: 1.0}})
    assert list(out) == ["recommendations"] and out["recommendations"] == recommend({2: 1.0})[0]


def test_recommender_merges_entries_of_one_item():
    spec = recommender_spec()
    extra = spec.itemSimilarityRecommender.itemItemSimilarities.add()
    extra.itemId = 2
    link = extra.similarItemList.add()
    link.itemId, link.similarityScore = 6, 0.25
    _, scores = _recommend_with_mlc(spec, {2: 2.0})
    assert scores[6] == pytest.approx(0.5) and scores[4] == pytest.approx(1.8)


def test_recommender_negative_count():
    with pytest.raises(MLCFeatureTypeError, match="non-negative"):
        _recommend_with_mlc(recommender_spec(), {0: 1.0}, k=-1)


def _recommender_edit(edit, **kw):
    spec = recommender_spec(**kw)
    edit(spec.itemSimilarityRecommender, spec.description)
    return spec


@pytest.mark.parametrize(
    "spec, match",
    [
        (_recommender_edit(lambda m, d: m.itemStringIds.vector.extend(["x"] * 7), ids=INT_IDS), "both"),
        (_recommender_edit(lambda m, d: m.itemInt64Ids.vector.__delitem__(6), ids=INT_IDS), "cannot name item index 6"),
        (_recommender_edit(lambda m, d: m.itemStringIds.vector.__setitem__(1, "apple"), ids=STRING_IDS), "duplicates"),
        (_recommender_edit(lambda m, d: setattr(m, "itemInputFeatureName", "nope")), "'nope'"),
        (_recommender_edit(lambda m, d: d.input[1].type.doubleType.SetInParent()), "int64"),
        (_recommender_edit(lambda m, d: (m.ClearField("recommendedItemListOutputFeatureName"),
                                         m.ClearField("recommendedItemScoreOutputFeatureName"))), "neither"),
        (_recommender_edit(lambda m, d: d.output[1].type.sequenceType.int64Type.SetInParent()), "dictionary"),
        (recommender_spec(ids=STRING_IDS, item_input="multiArray"), "strings"),
        (_recommender_edit(lambda m, d: d.input[0].type.dictionaryType.stringKeyType.SetInParent()), "int64 items|string items"),
    ],
)
def test_recommender_bad_parameters(spec, match):
    with pytest.raises(MLCParametersError, match=match):
        mlc.load(spec)
