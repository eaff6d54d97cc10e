"""The two shape worlds of NeuralNetwork models, decided here and nowhere else.

NeuralNetwork.proto, ``NeuralNetworkMultiArrayShapeMapping`` / ``NeuralNetworkImageShapeMapping``:

* ``RANK5_ARRAY_MAPPING`` (the default, and the only one before specification version 4):
  every multiarray input becomes a rank-5 tensor ``[Seq, Batch, C, H, W]``; a declared shape
  ``(C,)`` maps to ``[1, 1, C, 1, 1]`` and ``(C, H, W)`` to ``[1, 1, C, H, W]``. At run time the
  caller may also pass the full rank-5 array (Seq and Batch other than 1).
* ``EXACT_ARRAY_MAPPING`` (spec v4+): the declared shape and rank pass through unchanged.
* ``RANK5_IMAGE_MAPPING``: an image is ``[1, 1, C, H, W]``; ``RANK4_IMAGE_MAPPING``: ``[1, C, H, W]``.

Layer functions never ask which mapping the inputs used: legacy layers name their axes from the
end (width -1, height -2, channel -3, batch -4, sequence -5), which means the same in both worlds,
and the few defined on rank-5 tensors only (``reshape``, ``permute``, ``sequenceRepeat``, the
recurrent layers...) work from their input's rank. The rank-5 input mapping (``(C,)`` or
``(C, H, W)`` also given as a full ``[S, B, C, H, W]`` array) is checked at the boundary by
``Feature.rank5_mapped`` in ``mlc.features``.

Outputs, in both worlds: a tensor is reshaped to the output's declared shape when the
declaration is a fixed shape with the same number of elements (rank-5 ``[1, 1, C, H, W]`` ->
``(C,)`` or ``(C, H, W)``; a rank-4 image's ``[1, C, 1, 1]`` -> a declared ``(1, 1, C)``), as
Core ML returns them (coremltools' ``test_model.py`` image-input tests expect this); otherwise
(no declared shape, a flexible one, another size) it is returned as computed. A rank-0 blob (a
``squeeze`` or ``slice*`` that removed every axis, ``layers/shape_nd.py``) is returned as
``(1,)``: Core ML returns no rank-0 array (coremltools' ``testing_utils.compare_shapes``: "Core
ML does not support scalar as output").
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.features import Feature

RANK5_ARRAY_MAPPING, EXACT_ARRAY_MAPPING = 0, 1
RANK5_IMAGE_MAPPING, RANK4_IMAGE_MAPPING = 0, 1


class ShapeWorld:
    def __init__(self, network, model: str):
        self.model = model
        self.rank5_arrays = int(network.arrayInputShapeMapping) == RANK5_ARRAY_MAPPING
        self.rank4_images = int(network.imageInputShapeMapping) == RANK4_IMAGE_MAPPING

    def input_tensor(self, feature: Feature, value):
        """A boundary array (already checked against the description) as the network's tensor."""
        shape = tuple(value.shape)
        if feature.kind == "image":
            return value[None] if not self.rank4_images else value  # value is (1, C, H, W)
        if feature.kind != "multiArray" or not self.rank5_arrays:
            return value
        if len(shape) == 5:
            return value
        if len(shape) == 1:
            return jnp.reshape(value, (1, 1, shape[0], 1, 1))
        if len(shape) == 3:
            return jnp.reshape(value, (1, 1) + shape)
        raise MLCFeatureTypeError(
            f"{self.model}: input {feature.name!r} has rank {len(shape)}; a network with the rank-5 input mapping "
            f"takes rank 1 (C), rank 3 (C, H, W) or rank 5 (Seq, Batch, C, H, W) multiarrays"
        )

    def output_value(self, feature: Feature | None, value):
        """A network tensor as the output the description declares."""
        if np.ndim(value) == 0:
            value = jnp.reshape(value, (1,))
        if feature is None or feature.kind != "multiArray" or feature.shape_ranges or feature.enumerated_shapes:
            return value
        declared = tuple(feature.shape)
        shape = tuple(np.shape(value))
        if declared and shape != declared and math.prod(shape) == math.prod(declared):
            return jnp.reshape(value, declared)
        return value
