"""``supportVectorRegressor`` and ``supportVectorClassifier`` (SVM.proto), with libsvm's
semantics (the proto's fields are libsvm's ``svm_model``: ``rho``, ``sv_coef``, ``nSV``,
``probA``, ``probB``; kernels in ``_kernels.py``).

Regressor: ``f(x) = sum_i coefficients.alpha[i] K(x, sv_i) - rho`` (libsvm's
``svm_predict_values``: rho is subtracted; coremltools writes sklearn's ``-intercept_``).

Classifier with K classes (``numberOfSupportVectorsPerClass`` groups the support vectors by
class, in label order; ``coefficients`` is libsvm's (K-1) x l ``sv_coef``):

- one decision value per pair ``(i, j)``, ``i < j`` in libsvm's order
  ``(0,1), (0,2), ..., (1,2), ...``: ``d_ij = sum_{s in class i} sv_coef[j-1][s] K(x, s)
  + sum_{s in class j} sv_coef[i][s] K(x, s) - rho[p]``;
- without ``probA``/``probB``: one-vs-one voting, ``d_ij > 0`` votes for i, otherwise for j;
  the label is the class with most votes, the first in label order on a tie (libsvm's
  ``svm_predict``);
- with ``probA``/``probB`` (the proto: "required if you want probabilities or multi class
  predictions"): libsvm's ``svm_predict_probability``. Each pair's Platt sigmoid
  ``r_ij = 1 / (1 + exp(A d_ij + B))`` clipped to ``[1e-7, 1 - 1e-7]``; two classes give
  ``(r_01, 1 - r_01)`` directly; more are coupled by ``multiclass_probability`` (Wu, Lin &
  Weng 2004, method 2) with libsvm's stopping rule (``max(100, K)`` sweeps, tolerance
  ``0.005 / K``), run here as a fixed-length ``fori_loop`` that freezes once converged, so it
  stays jittable, vmappable and differentiable. The label is then the most probable class
  (libsvm returns the argmax of the estimates; it can differ from the vote winner, as
  scikit-learn's ``predict`` vs ``predict_proba`` do). coremltools' own tests accept these
  probabilities to 1e-5 against libsvm's and (multiclass) scikit-learn's ``predict_proba``,
  which uses the same coupling; for two classes scikit-learn still couples, so it differs by
  up to ~0.5% (coremltools warns about it when converting).

Support vectors, coefficients, rho and probA/probB are params, in the dtype the classic front
end computes in (double under JAX's 64-bit mode, as libsvm; float32 otherwise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCUnsupportedError
from mlc.frontends.classic.models._kernels import FLOAT, kernel_function, match_width, support_vectors
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext
from mlc.frontends.classic.values import class_labels, classifier_outputs, regressor_outputs, vectorize

MIN_PROB = 1e-7  # libsvm's clip of each pairwise probability


def _kernel_values(ctx: StageContext, kernel, sparse: bool, params: dict, values: dict):
    x = vectorize(ctx, values)
    x, svs = match_width(ctx, x, params["support_vectors"], sparse)
    return kernel(x, svs)


# -- regressor ---------------------------------------------------------------------------------


@model_type("supportVectorRegressor")
def support_vector_regressor(ctx: StageContext) -> Stage:
    message = ctx.message
    kernel = kernel_function(ctx, message.kernel)
    svs, sparse = support_vectors(ctx, message)
    alpha = np.asarray(message.coefficients.alpha, FLOAT)
    if alpha.shape[0] != svs.shape[0]:
        ctx.fail(f"{alpha.shape[0]} coefficients for {svs.shape[0]} support vectors (they must be the same number)")
    params = {"support_vectors": svs, "coefficients": alpha, "rho": np.asarray(message.rho, FLOAT)}

    def fn(params: dict, values: dict) -> dict:
        k = _kernel_values(ctx, kernel, sparse, params, values)
        return regressor_outputs(ctx, params["coefficients"] @ k - params["rho"])

    return Stage(fn, params)


# -- classifier --------------------------------------------------------------------------------


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _pair_coefficient_layout(counts: list[int], pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """For each pair p = (i, j) and support vector s: which ``sv_coef`` row weighs s in d_ij
    (row j-1 for class i's vectors, row i for class j's) and whether s takes part at all."""
    owner = np.repeat(np.arange(len(counts)), counts)
    rows = np.zeros((len(pairs), owner.shape[0]), np.int32)
    mask = np.zeros((len(pairs), owner.shape[0]), FLOAT)
    for p, (i, j) in enumerate(pairs):
        rows[p, owner == i], mask[p, owner == i] = j - 1, 1.0
        rows[p, owner == j], mask[p, owner == j] = i, 1.0
    return rows, mask


def _classifier_params(ctx: StageContext, message, labels: tuple) -> tuple[dict, np.ndarray, bool]:
    """Params, support-vector counts per class and sparseness, checked as Core ML's validator does."""
    k = len(labels)
    if k < 2:
        ctx.fail(f"{k} class label(s); a support vector classifier needs at least two")
    svs, sparse = support_vectors(ctx, message)
    n_sv = svs.shape[0]
    counts = np.asarray(message.numberOfSupportVectorsPerClass, np.int64)
    if counts.shape[0] != k:
        ctx.fail(f"numberOfSupportVectorsPerClass has {counts.shape[0]} entries for {k} classes")
    if np.any(counts < 0) or int(counts.sum()) != n_sv:
        ctx.fail(f"numberOfSupportVectorsPerClass sums to {int(counts.sum())}, but there are {n_sv} support vectors")
    if len(message.coefficients) != k - 1:
        ctx.fail(f"{len(message.coefficients)} coefficient rows; {k} classes need {k - 1}")
    if any(len(c.alpha) != n_sv for c in message.coefficients):
        ctx.fail(f"every coefficient row needs {n_sv} entries (one per support vector)")
    coefficients = np.asarray([list(c.alpha) for c in message.coefficients], FLOAT).reshape(k - 1, n_sv)
    n_pairs = k * (k - 1) // 2
    if len(message.rho) != n_pairs:
        ctx.fail(f"{len(message.rho)} rho values; {k} classes need {n_pairs} (one per pair)")
    params = {"support_vectors": svs, "coefficients": coefficients, "rho": np.asarray(message.rho, FLOAT)}
    if len(message.probA) or len(message.probB):
        if len(message.probA) != len(message.probB):
            ctx.fail(f"probA has {len(message.probA)} values and probB {len(message.probB)}; they must be the same size")
        if len(message.probA) != n_pairs:
            ctx.fail(f"probA/probB have {len(message.probA)} values; {k} classes need {n_pairs} (one per pair)")
        params["probA"] = np.asarray(message.probA, FLOAT)
        params["probB"] = np.asarray(message.probB, FLOAT)
    return params, counts, sparse


def _declares_probabilities(ctx: StageContext) -> bool:
    name = ctx.predicted_probabilities_name
    if name is not None:
        return name in ctx.outputs
    return len(ctx.outputs) > 1


def _votes(decisions, pairs: list[tuple[int, int]], k: int):
    """One-vs-one votes: ``d_ij > 0`` votes for i, otherwise for j (libsvm)."""
    first = np.zeros((len(pairs), k), np.int32)
    second = np.zeros((len(pairs), k), np.int32)
    for p, (i, j) in enumerate(pairs):
        first[p, i], second[p, j] = 1.0, 1.0
    wins = (decisions > 0).astype(jnp.int32)
    return wins @ first + (1 - wins) @ second


def _pairwise_matrix(decisions, prob_a, prob_b, pairs: list[tuple[int, int]], k: int):
    """``r[i, j]`` = P(class i | i or j), from each pair's Platt sigmoid (libsvm's
    ``sigmoid_predict``, clipped as ``svm_predict_probability`` clips it: with libsvm's
    ``max``/``min`` (``x > y ? x : y``), so a NaN decision, from a degenerate model, becomes
    ``MIN_PROB``)."""
    r_ij = jax.nn.sigmoid(-(decisions * prob_a + prob_b))
    r_ij = jnp.where(r_ij > MIN_PROB, r_ij, MIN_PROB)
    r_ij = jnp.where(r_ij < 1.0 - MIN_PROB, r_ij, 1.0 - MIN_PROB)
    first = np.asarray([i for i, _ in pairs])
    second = np.asarray([j for _, j in pairs])
    r = jnp.zeros((k, k), r_ij.dtype)
    return r.at[first, second].set(r_ij).at[second, first].set(1.0 - r_ij)


def couple_pairwise(r, k: int):
    """libsvm's ``multiclass_probability``: the p minimising ``p^T Q p`` on the simplex, with
    ``Q_tt = sum_{j != t} r_jt^2`` and ``Q_tj = -r_jt r_tj``, by Gauss-Seidel sweeps.

    Each of at most ``max(100, k)`` sweeps first checks ``max_t |(Qp)_t - p^T Q p| < 0.005/k``
    (libsvm's stopping rule) and leaves p alone from then on; the loop has a fixed length, so
    it jits, vmaps and differentiates."""
    q = -(r.T * r)
    q = q.at[jnp.diag_indices(k)].set(jnp.sum(jnp.square(r), axis=0))
    eps = 0.005 / k

    def sweep_one(t, state):
        p, qp, pqp = state
        diff = (pqp - qp[t]) / q[t, t]
        p = p.at[t].add(diff)
        pqp = (pqp + diff * (diff * q[t, t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff)
        qp = (qp + diff * q[t]) / (1.0 + diff)
        return p / (1.0 + diff), qp, pqp

    def iteration(_, state):
        p, done = state
        qp = q @ p
        pqp = p @ qp
        done = done | (jnp.max(jnp.abs(qp - pqp)) < eps)
        swept, _, _ = jax.lax.fori_loop(0, k, sweep_one, (p, qp, pqp))
        return jnp.where(done, p, swept), done

    p0 = jnp.full((k,), 1.0 / k, r.dtype)
    p, _ = jax.lax.fori_loop(0, max(100, k), iteration, (p0, jnp.asarray(False)))
    return p


def _probabilities(decisions, params: dict, pairs: list[tuple[int, int]], k: int):
    r = _pairwise_matrix(decisions, params["probA"], params["probB"], pairs, k)
    if k == 2:
        return jnp.stack([r[0, 1], r[1, 0]])
    return couple_pairwise(r, k)


@model_type("supportVectorClassifier")
def support_vector_classifier(ctx: StageContext) -> Stage:
    message = ctx.message
    kernel = kernel_function(ctx, message.kernel)
    labels = class_labels(ctx, message)
    params, counts, sparse = _classifier_params(ctx, message, labels)
    k = len(labels)
    pairs = _pairs(k)
    coef_rows, coef_mask = _pair_coefficient_layout(counts.tolist(), pairs)
    sv_index = np.arange(coef_rows.shape[1])
    probabilistic = "probA" in params
    if not probabilistic and _declares_probabilities(ctx):
        raise MLCUnsupportedError(
            f"{ctx.where} ({ctx.kind}): the model declares a class-probability output but has no probA/probB; "
            "Core ML's probabilities come from libsvm's pairwise Platt sigmoids, which need them"
        )

    def fn(params: dict, values: dict) -> dict:
        kv = _kernel_values(ctx, kernel, sparse, params, values)
        weights = params["coefficients"][coef_rows, sv_index] * coef_mask
        decisions = weights @ kv - params["rho"]
        if probabilistic:
            scores = _probabilities(decisions, params, pairs, k)
        else:
            scores = _votes(decisions, pairs, k)
        return classifier_outputs(ctx, scores, labels)

    return Stage(fn, params)
