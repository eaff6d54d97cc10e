"""The result of MIL's ``classify`` op: probabilities plus the (static) class labels.

A JAX pytree: the probabilities are its only leaf, the labels ride along as static data, so
it passes through ``jit`` and ``vmap`` and becomes ``classLabel`` plus the probability
dictionary only at the model boundary.
"""

from __future__ import annotations

import jax
import numpy as np


@jax.tree_util.register_pytree_node_class
class Classification:
    def __init__(self, probabilities, classes: tuple):
        self.probabilities = probabilities
        self.classes = tuple(classes)

    def tree_flatten(self):
        return (self.probabilities,), self.classes

    @classmethod
    def tree_unflatten(cls, classes, children):
        return cls(children[0], classes)

    def label(self):
        """The most probable class (one example)."""
        probs = np.asarray(self.probabilities).reshape(-1)
        return _plain(self.classes[int(np.argmax(probs))])

    def probability_dict(self) -> dict:
        probs = np.asarray(self.probabilities, dtype=np.float64).reshape(-1)
        return {_plain(c): float(p) for c, p in zip(self.classes, probs)}

    def unbatch(self) -> list["Classification"]:
        probs = np.asarray(self.probabilities)
        return [Classification(p, self.classes) for p in probs]

    def __repr__(self) -> str:
        return f"Classification(probabilities={self.probabilities!r}, classes={list(self.classes)!r})"


def _plain(c):
    if isinstance(c, np.ndarray):
        c = c.item() if c.ndim == 0 else c
    if isinstance(c, np.generic):
        c = c.item()
    return c
