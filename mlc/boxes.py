"""Bounding-box geometry shared by the non-maximum suppressions (MIL ``non_maximum_suppression``,
the NeuralNetwork NMS layer, and the classic ``nonMaximumSuppression`` model type)."""

from __future__ import annotations

import jax.numpy as jnp


def pairwise_iou(boxes):
    """IoU of every pair of ``(B, 4)`` boxes given as (center x, center y, width, height);
    0 where the union is empty, and at most 1 despite rounding (so a threshold of 1 suppresses
    nothing)."""
    cx, cy, w, h = (boxes[:, i] for i in range(4))
    x0, x1, y0, y1 = cx - 0.5 * w, cx + 0.5 * w, cy - 0.5 * h, cy + 0.5 * h
    iw = jnp.maximum(0.0, jnp.minimum(x1[:, None], x1[None, :]) - jnp.maximum(x0[:, None], x0[None, :]))
    ih = jnp.maximum(0.0, jnp.minimum(y1[:, None], y1[None, :]) - jnp.maximum(y0[:, None], y0[None, :]))
    inter = iw * ih
    area = w * h
    union = area[:, None] + area[None, :] - inter
    return jnp.where(union > 0, jnp.minimum(inter / jnp.where(union > 0, union, 1.0), 1.0), 0.0)
