"""Multinomial logistic regression on image features, trained with optax.

The classifier of ``mlc.createml.ImageClassifier``: ``p = softmax(W^T z + b)`` on standardized
features ``z = (x - mean) / scale``, fitted by minimising the mean cross entropy plus an L2
penalty ``l2 / 2 * ||W||^2`` over the whole training set (full batch, as Create ML's
``maxIterations`` counts passes of its solver). The default solver is L-BFGS
(``optax.lbfgs`` with its zoom line search): on a convex, smooth objective of a few thousand
examples it reaches a far lower loss within 25 iterations than a first-order method
(``scripts/createml_digits.py`` measures both). ``solver="adam"`` is there to compare.

Standardization keeps the problem well conditioned; ``folded()`` gives the same function
on raw features (``W / scale``, ``b - (mean / scale) @ W``), which is what an exported
model's innerProduct layer holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlc._errors import MLCParametersError

SOLVERS = ("lbfgs", "adam")
_MIN_SCALE = 1e-6  # a constant feature is left unscaled rather than divided by zero


@dataclasses.dataclass
class IterationStats:
    """One solver iteration: the objective and the accuracies after it."""

    iteration: int
    loss: float
    training_accuracy: float
    validation_accuracy: float | None


@dataclasses.dataclass
class SoftmaxRegression:
    """A fitted classifier: weights ``(d, K)`` and bias ``(K,)`` on standardized features."""

    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` acting on raw features: ``softmax(x @ W + b)`` equals ``probabilities(x)``."""
        w = self.weights / self.scale[:, None]
        b = self.bias - (self.mean / self.scale) @ self.weights
        return w.astype(np.float32), b.astype(np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of raw features, computed as an exported model's innerProduct does (``folded``)."""
        w, b = self.folded()
        return np.asarray(x, np.float32) @ w + b

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = self.logits(x)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean.astype(np.float32), np.where(scale < _MIN_SCALE, 1.0, scale).astype(np.float32)


def objective(params, z, y, mask, l2):
    """The mean cross entropy over the real rows (``mask``) plus ``l2 / 2 * ||W||^2``."""
    logits = z @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(ce * mask) / jnp.sum(mask) + 0.5 * l2 * jnp.sum(params["w"] ** 2)


_LBFGS = optax.lbfgs()
_ADAM = optax.adam(0.05)
_lbfgs_value_and_grad = optax.value_and_grad_from_state(objective)


@jax.jit
def _lbfgs_step(params, state, z, y, mask, l2):
    value, grad = _lbfgs_value_and_grad(params, z, y, mask, l2, state=state)
    updates, state = _LBFGS.update(grad, state, params, value=value, grad=grad, value_fn=objective, z=z, y=y, mask=mask, l2=l2)
    return optax.apply_updates(params, updates), state


@jax.jit
def _adam_step(params, state, z, y, mask, l2):
    grad = jax.grad(objective)(params, z, y, mask, l2)
    updates, state = _ADAM.update(grad, state, params)
    return optax.apply_updates(params, updates), state


_SOLVERS = {"lbfgs": (_LBFGS, _lbfgs_step), "adam": (_ADAM, _adam_step)}


@jax.jit
def _scores(params, z, y, mask, l2):
    """The objective, and the number of real rows classified right."""
    correct = (jnp.argmax(z @ params["w"] + params["b"], axis=-1) == y) * mask
    return objective(params, z, y, mask, l2), jnp.sum(correct)


def _padded(z: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rows padded to the next power of two (at least 64) with a zero mask, so that training
    again on a slightly different set (another split, more images) reuses the compiled steps."""
    n = len(z)
    rows = max(64, 1 << (n - 1).bit_length())
    zp = np.zeros((rows, z.shape[1]), np.float32)
    zp[:n] = z
    yp = np.zeros(rows, np.int32)
    yp[:n] = y
    mask = np.zeros(rows, np.float32)
    mask[:n] = 1.0
    return jnp.asarray(zp), jnp.asarray(yp), jnp.asarray(mask)


def fit_softmax_regression(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    max_iterations: int = 25,
    l2: float = 1e-3,
    solver: str = "lbfgs",
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    on_iteration: Callable[[IterationStats], None] | None = None,
) -> tuple[SoftmaxRegression, list[IterationStats]]:
    """Fit on features ``x`` ``(n, d)`` and class indices ``y`` ``(n,)``; returns the model and
    the per-iteration history. ``validation``: ``(x_val, y_val)`` scored after every iteration.
    ``on_iteration`` is called with each iteration's stats (for a progress bar)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise MLCParametersError(f"training features must be (n, d) with n labels, got {x.shape} and {y.shape}")
    if max_iterations < 1:
        raise MLCParametersError(f"max_iterations must be at least 1, got {max_iterations}")
    if solver not in _SOLVERS:
        raise MLCParametersError(f"solver must be one of {SOLVERS}, got {solver!r}")
    opt, step = _SOLVERS[solver]
    mean, scale = standardization(x)
    train = _padded((x - mean) / scale, y)
    held_out = None
    if validation is not None and len(validation[1]):
        held_out = _padded((np.asarray(validation[0], np.float32) - mean) / scale, np.asarray(validation[1], np.int32))
    l2 = jnp.float32(l2)
    params = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
    state = opt.init(params)
    history = []
    for i in range(1, max_iterations + 1):
        params, state = step(params, state, *train, l2)
        value, correct = _scores(params, *train, l2)
        stats = IterationStats(
            iteration=i,
            loss=float(value),
            training_accuracy=float(correct) / len(x),
            validation_accuracy=None if held_out is None else float(_scores(params, *held_out, l2)[1]) / len(validation[1]),
        )
        history.append(stats)
        if on_iteration is not None:
            on_iteration(stats)
    model = SoftmaxRegression(np.asarray(params["w"]), np.asarray(params["b"]), mean, scale)
    return model, history
