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
        z = (np.asarray(x, np.float32) - self.mean) / self.scale
        return z @ self.weights + self.bias

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(jax.nn.softmax(jnp.asarray(self.logits(x)), axis=-1))


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean.astype(np.float32), np.where(scale < _MIN_SCALE, 1.0, scale).astype(np.float32)


def _objective(l2: float):
    def loss(params, z, y):
        logits = z @ params["w"] + params["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    return loss


def _solver(name: str, loss) -> tuple[optax.GradientTransformation, Callable]:
    """The optax transformation and one jitted step ``(params, state, z, y) -> (params, state, loss)``."""
    if name == "lbfgs":
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(params, state, z, y):
            value, grad = value_and_grad(params, z, y, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss, z=z, y=y)
            return optax.apply_updates(params, updates), state, value

    elif name == "adam":
        opt = optax.adam(0.05)

        def step(params, state, z, y):
            value, grad = jax.value_and_grad(loss)(params, z, y)
            updates, state = opt.update(grad, state, params)
            return optax.apply_updates(params, updates), state, value

    else:
        raise MLCParametersError(f"solver must be one of {SOLVERS}, got {name!r}")
    return opt, jax.jit(step)


def _accuracy(params, z, y) -> float:
    predicted = np.asarray(jnp.argmax(z @ params["w"] + params["b"], axis=-1))
    return float(np.mean(predicted == y))


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
    mean, scale = standardization(x)
    z = jnp.asarray((x - mean) / scale)
    zv = yv = None
    if validation is not None and len(validation[1]):
        zv = jnp.asarray((np.asarray(validation[0], np.float32) - mean) / scale)
        yv = np.asarray(validation[1], np.int32)
    loss = _objective(l2)
    opt, step = _solver(solver, loss)
    params = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
    state = opt.init(params)
    y_dev = jnp.asarray(y)
    history = []
    for i in range(1, max_iterations + 1):
        params, state, _ = step(params, state, z, y_dev)
        stats = IterationStats(
            iteration=i,
            loss=float(loss(params, z, y_dev)),
            training_accuracy=_accuracy(params, z, y),
            validation_accuracy=None if zv is None else _accuracy(params, zv, yv),
        )
        history.append(stats)
        if on_iteration is not None:
            on_iteration(stats)
    model = SoftmaxRegression(np.asarray(params["w"]), np.asarray(params["b"]), mean, scale)
    return model, history
