"""``NonMaximumSuppression`` (NeuralNetwork.proto ``NonMaximumSuppressionLayerParams``).

The greedy suppression itself is the one MIL's ``non_maximum_suppression`` runs
(``mlc.kernels.nms.non_maximum_suppression``), with the same semantics: boxes (B, N, 4) as
(center x, center y, width, height), scores (B, N, C) reduced to their max over C, a box
suppressed when its IoU with a kept box exceeds ``iouThreshold`` (within its argmax class only
under ``perClassSuppression``), boxes scoring below ``scoreThreshold`` rejected, and the best
box still returned when none survives.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from mlc.kernels import nms
from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer

# jitted once per shape: the layer also runs eagerly (a maxBoxes input makes the model run layer
# by layer), where the unjitted greedy loop would dispatch op by op
_nms_jit = jax.jit(nms.non_maximum_suppression, static_argnums=(4, 5))


def _threshold(value) -> jnp.ndarray:
    """An optional (1,) threshold input as a scalar (it may be traced)."""
    return jnp.reshape(f32(value), (-1,))[0]


def _max_boxes(ctx, p, overrides) -> int:
    """``maxBoxes``, or the value of the fifth input (read at trace time: it sets the output shape)."""
    if len(overrides) > 2:
        values = np.asarray(overrides[2], np.float64).reshape(-1)
        if values.size != 1:
            raise ctx.fail(f"the maxBoxes input must hold one value, got {values.size}")
        n = float(values[0])
        if not math.isfinite(n) or n != round(n):
            raise ctx.fail(f"the maxBoxes input must be an integer, got {n}")
        n = int(n)
    else:
        n = int(p.maxBoxes)
    if n < 1:
        raise ctx.fail(f"maxBoxes must be positive, got {n}")
    return n


@layer("NonMaximumSuppression", static=(4,))
def non_maximum_suppression(ctx, p, boxes, scores, *overrides):
    """Inputs: boxes (B, N, 4), scores (B, N, C), optional (1,) overrides of iouThreshold,
    scoreThreshold and maxBoxes. Outputs: boxes (B, maxBoxes, 4), scores (B, maxBoxes, C), box
    indices (B, maxBoxes) and counts (B,), as float32; the first three padded with 0, 0 and -1
    past each batch's count."""
    if len(overrides) > 3:
        raise ctx.fail(f"takes 2 to 5 inputs, got {2 + len(overrides)}")
    boxes, scores = f32(boxes), f32(scores)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ctx.fail(f"boxes must have shape (B, N, 4), got {boxes.shape}")
    if scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ctx.fail(f"scores must have shape (B, N, C) with (B, N) = {boxes.shape[:2]}, got {scores.shape}")
    iou = _threshold(overrides[0]) if len(overrides) > 0 else jnp.float32(p.iouThreshold)
    score = _threshold(overrides[1]) if len(overrides) > 1 else jnp.float32(p.scoreThreshold)
    max_boxes = _max_boxes(ctx, p, overrides)
    out_boxes, out_scores, index, count = _nms_jit(boxes, scores, iou, score, max_boxes, bool(p.perClassSuppression))
    return out_boxes, out_scores, index.astype(jnp.float32), count.astype(jnp.float32)
