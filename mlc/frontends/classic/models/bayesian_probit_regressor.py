"""``bayesianProbitRegressor`` (BayesianProbitRegressor.proto).

Each feature takes discrete values; each (``featureId``, ``featureValue``) pair has a Gaussian
weight (``mean``, ``precision`` = 1/variance), and ``bias`` is one more Gaussian weight. The input
(``regressionInputFeatureName``, an int multiarray) is either a vector ``x`` (feature ``i`` has value
``x[i]``) or an ``(N, 2)`` matrix of (feature id, value) rows. The regression output is Gaussian:

    mean     = bias.mean + sum of the matching weights' means
    variance = 1/bias.precision + sum of the matching weights' variances

(a pair with no weight contributes nothing). The proto's link ``P(y=+1|x,w) = Φ(<w,x>/β)``
averaged over these Gaussian weights is ``Φ(mean / sqrt(β² + variance))``; the proto carries no
β, so β = 1:

    probability             = Φ(mean / sqrt(1 + variance))
    pessimistic probability = Φ((mean + optimism * sqrt(variance)) / sqrt(1 + variance))

with ``optimism`` the optional double input ``optimismInputFeatureName`` (0 when absent): the
proto's "shift regression mean by o*stdev". The probability goes to ``predictedFeatureName``
(else the one declared output the message does not name); ``meanOutputFeatureName``,
``varianceOutputFeatureName`` and ``pessimisticProbabilityOutputFeatureName`` give the rest.
The sampled-probability output draws from the posterior and is refused (``MLCUnsupportedError``).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.stats
import numpy as np

from mlc._errors import MLCFeatureTypeError, MLCUnsupportedError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.values import FLOAT
from mlc.frontends.classic.stage import Stage, StageContext

_INT32_MAX = np.iinfo(np.int32).max

_OUTPUT_FIELDS = ("meanOutputFeatureName", "varianceOutputFeatureName", "pessimisticProbabilityOutputFeatureName")


def _weight_table(ctx: StageContext, m):
    """The weights sorted by (feature id, value): ids, values (int32), means, precisions.

    Pairs beyond int32 can never match an int32 input and are left out."""
    rows, seen = [], set()
    for feature in m.features:
        if m.numberOfFeatures and feature.featureId >= m.numberOfFeatures:
            ctx.fail(f"featureId {feature.featureId} is not below numberOfFeatures {m.numberOfFeatures}")
        for w in feature.weights:
            key = (int(feature.featureId), int(w.featureValue))
            if key in seen:
                ctx.fail(f"feature {key[0]} has two weights for value {key[1]}")
            seen.add(key)
            _check_gaussian(ctx, w.featureWeight, f"the weight of feature {key[0]} value {key[1]}")
            if key[0] <= _INT32_MAX and key[1] <= _INT32_MAX:
                rows.append((*key, w.featureWeight.mean, w.featureWeight.precision))
    rows.sort()
    table = np.asarray(rows, np.float64).reshape(-1, 4)
    return table[:, 0].astype(np.int32), table[:, 1].astype(np.int32), table[:, 2].astype(FLOAT), table[:, 3].astype(FLOAT)


def _check_gaussian(ctx: StageContext, g, what: str) -> None:
    if not np.isfinite(g.mean):
        ctx.fail(f"{what} has mean {g.mean}")
    if not (np.isfinite(g.precision) and g.precision > 0):
        ctx.fail(f"{what} has precision {g.precision}; a precision (1/variance) must be positive and finite")


def lookup(key_ids, key_values, ids, values):
    """Position of each (id, value) pair in the lexicographically sorted keys, and whether it is
    there: a vectorised binary search, jittable."""
    key_ids, key_values = jnp.asarray(key_ids), jnp.asarray(key_values)
    k = key_ids.shape[0]
    lo = jnp.zeros(ids.shape, jnp.int32)
    hi = jnp.full(ids.shape, k, jnp.int32)
    for _ in range(max(k, 1).bit_length()):
        mid = (lo + hi) // 2
        at = jnp.minimum(mid, k - 1)
        below = (key_ids[at] < ids) | ((key_ids[at] == ids) & (key_values[at] < values))
        active = lo < hi
        lo = jnp.where(active & below, mid + 1, lo)
        hi = jnp.where(active & ~below, mid, hi)
    at = jnp.minimum(lo, k - 1)
    return at, (lo < k) & (key_ids[at] == ids) & (key_values[at] == values)


def _pairs(ctx: StageContext, x):
    """(feature ids, values) of the input: a vector, or (N, 2) rows of (id, value)."""
    x = jnp.asarray(x, jnp.int32)
    if x.ndim == 1:
        return jnp.arange(x.shape[0], dtype=jnp.int32), x
    if x.ndim == 2 and x.shape[1] == 2:
        return x[:, 0], x[:, 1]
    raise MLCFeatureTypeError(
        f"{ctx.where} ({ctx.kind}): the input must be a vector of feature values or (N, 2) rows of (feature id, value); got shape {x.shape}"
    )


def _probability_output(ctx: StageContext, m, named: set) -> str | None:
    """``predictedFeatureName``, else the declared output no field names; any other output the
    message does not name is refused."""
    rest = [n for n in ctx.outputs if n not in named]
    chosen = ctx.predicted_feature_name if ctx.predicted_feature_name in rest else None
    stray = [n for n in rest if n != chosen] if chosen else rest[1:]
    if stray:
        ctx.fail(f"outputs {rest} are named by no output field; only one (the probability) may be")
    return chosen or (rest[0] if rest else None)


def _as_declared(value, feature):
    """A scalar as its declared output: a double stays 0-d, a multiarray takes its shape."""
    if feature.kind == "multiArray":
        shape = feature.shape if int(np.prod(feature.shape or (0,))) == 1 else (1,)
        return jnp.reshape(value, shape)
    return value


def _regression_input(ctx: StageContext, m) -> str:
    name = m.regressionInputFeatureName
    if not name:
        arrays = [n for n, f in ctx.inputs.items() if f.kind == "multiArray"]
        if len(arrays) != 1:
            ctx.fail("regressionInputFeatureName is not set")
        name = arrays[0]
    feature = ctx.inputs.get(name)
    if feature is None:
        ctx.fail(f"regressionInputFeatureName {name!r} is not one of the inputs {list(ctx.inputs)}")
    if feature.kind != "multiArray" or feature.dtype is None or feature.dtype.kind not in "iu":
        ctx.fail(f"the regression input {name!r} must be an int32 multiarray, got {feature.type_string()}")
    return name


def _optimism_input(ctx: StageContext, m) -> str | None:
    name = m.optimismInputFeatureName
    if not name or name not in ctx.inputs:
        return None
    if ctx.inputs[name].kind != "double":
        ctx.fail(f"the optimism input {name!r} must be a double, got {ctx.inputs[name].type_string()}")
    return name


@model_type("bayesianProbitRegressor")
def bayesian_probit_regressor(ctx: StageContext) -> Stage:
    m = ctx.message
    source = _regression_input(ctx, m)
    optimism = _optimism_input(ctx, m)
    if m.sampledProbabilityOutputFeatureName and m.sampledProbabilityOutputFeatureName in ctx.outputs:
        raise MLCUnsupportedError(
            f"{ctx.where} ({ctx.kind}): the sampled-probability output {m.sampledProbabilityOutputFeatureName!r} "
            "draws from the posterior with a sampler the spec does not define; mlc does not produce it"
        )
    named = {getattr(m, f): f for f in _OUTPUT_FIELDS if getattr(m, f) and getattr(m, f) in ctx.outputs}
    probability = _probability_output(ctx, m, set(named) | {m.sampledProbabilityOutputFeatureName})
    key_ids, key_values, means, precisions = _weight_table(ctx, m)
    if m.HasField("bias"):
        _check_gaussian(ctx, m.bias, "the bias")
    bias_mean = FLOAT(m.bias.mean if m.HasField("bias") else 0.0)
    bias_precision = FLOAT(m.bias.precision if m.HasField("bias") else np.inf)  # no bias: variance 0
    outputs = ctx.outputs

    def fn(params: dict, values: dict) -> dict:
        ids, vals = _pairs(ctx, values[source])
        if key_ids.size:
            at, found = lookup(key_ids, key_values, ids, vals)
            mean_sum = jnp.sum(jnp.where(found, params["weight_mean"][at], 0.0))
            var_sum = jnp.sum(jnp.where(found, 1.0 / params["weight_precision"][at], 0.0))
        else:
            mean_sum = var_sum = FLOAT(0.0)
        mean = params["bias_mean"] + mean_sum
        variance = 1.0 / params["bias_precision"] + var_sum
        scale = jnp.sqrt(1.0 + variance)
        shift = jnp.asarray(values[optimism], FLOAT).reshape(()) if optimism and optimism in values else 0.0
        result = {
            "meanOutputFeatureName": mean,
            "varianceOutputFeatureName": variance,
            "pessimisticProbabilityOutputFeatureName": jax.scipy.stats.norm.cdf((mean + shift * jnp.sqrt(variance)) / scale),
        }
        out = {name: _as_declared(result[field], outputs[name]) for name, field in named.items()}
        if probability is not None:
            out[probability] = _as_declared(jax.scipy.stats.norm.cdf(mean / scale), outputs[probability])
        return out

    params = {"weight_mean": means, "weight_precision": precisions, "bias_mean": bias_mean, "bias_precision": bias_precision}
    return Stage(fn, params)
