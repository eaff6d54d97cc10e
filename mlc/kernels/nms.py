"""Non-maximum suppression shared by the front ends: the greedy suppression of MIL's
``non_maximum_suppression`` and the NeuralNetwork ``NonMaximumSuppression`` layer, and the box
overlap (``pairwise_iou``) that the classic ``nonMaximumSuppression`` model type uses too.

Boxes are (center x, center y, width, height).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


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


def suppress(boxes, scores, iou_threshold, score_threshold, max_boxes: int, per_class: bool):
    """Greedy NMS of one batch: boxes (B, 4), scores (B, K) -> boxes (max_boxes, 4), scores
    (max_boxes, K), indices (max_boxes,) int32 and the count kept; past the count the rows are 0
    and the indices -1.

    A box's score is its best class score (its class the argmax); boxes are visited by
    descending score (ties in input order) and one is suppressed when its IoU with a kept box
    exceeds ``iou_threshold`` (within its class only with ``per_class``). ``score_threshold``
    (None for none) rejects boxes scoring below it; when it rejects every box, the best box is
    still returned, as Core ML does.
    """
    n = boxes.shape[0]
    best = jnp.max(scores, axis=-1)
    order = jnp.argsort(best, descending=True, stable=True)
    conflict = pairwise_iou(boxes[order]) > iou_threshold
    if per_class:
        cls = jnp.argmax(scores, axis=-1)[order]
        conflict &= cls[:, None] == cls[None, :]
    valid = best[order] >= score_threshold if score_threshold is not None else jnp.ones((n,), bool)

    def visit(i, carry):
        keep, count = carry
        ok = valid[i] & ~jnp.any(keep & conflict[i]) & (count < max_boxes)
        return keep.at[i].set(ok), count + ok

    keep, _ = lax.fori_loop(0, n, visit, (jnp.zeros((n,), bool), jnp.int32(0)))
    if score_threshold is not None and n:
        keep = keep.at[0].set(keep[0] | ~jnp.any(keep))
    count = jnp.sum(keep, dtype=jnp.int32)
    rank = jnp.argsort(~keep, stable=True)  # kept positions first, in score order
    rank = jnp.pad(rank, (0, max(max_boxes - n, 0)))[:max_boxes]
    index = order[rank].astype(jnp.int32)
    slot = jnp.arange(max_boxes) < count
    out_boxes = jnp.where(slot[:, None], boxes[index], 0)
    out_scores = jnp.where(slot[:, None], scores[index], 0)
    return out_boxes, out_scores, jnp.where(slot, index, -1), count


def non_maximum_suppression(boxes, scores, iou_threshold, score_threshold, max_boxes: int, per_class: bool):
    """``suppress`` over a batch: boxes (n, B, 4), scores (n, B, K) -> boxes (n, max_boxes, 4),
    scores (n, max_boxes, K), indices (n, max_boxes) and counts (n,). ``max_boxes`` and
    ``per_class`` are static (Python int and bool); the thresholds may be traced."""
    run = lambda b, s: suppress(b, s, iou_threshold, score_threshold, max_boxes, per_class)
    return jax.vmap(run)(jnp.asarray(boxes), jnp.asarray(scores))
