"""Small NeuralNetwork specs for tests, made with coremltools' ``NeuralNetworkBuilder``."""

from __future__ import annotations

import mlc


def network(inputs: dict, outputs, *, exact: bool):
    """A builder with multiarray ``inputs`` (name -> shape) and shape-free ``outputs`` (names);
    ``exact`` picks the exact-rank input mapping, else the legacy rank-5 one."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    feats = [(name, datatypes.Array(*shape)) for name, shape in inputs.items()]
    return NeuralNetworkBuilder(feats, [(name, None) for name in outputs], disable_rank5_shape_mapping=exact)


def predict(builder, inputs: dict) -> dict:
    """Load the builder's spec with mlc and predict."""
    return mlc.load(builder.spec).predict(inputs)
