"""``scaled_dot_product_attention`` (iOS18 transformers.py)."""

import math

import jax.numpy as jnp

from mlc.frontends.mil.registry import op


@op("scaled_dot_product_attention", since="CoreML8")
def scaled_dot_product_attention(query, key, value, attn_mask=None):
    """softmax(Q K^T / sqrt(E) + mask) V, as torch's. A bool mask keeps the True positions;
    a float mask is added to the scores. The mask broadcasts against (B, *, L, S). A query
    whose every score is masked gets zeros, as torch gives (not the NaN of a plain softmax)."""
    dtype = jnp.result_type(query)
    scores = jnp.matmul(query, jnp.swapaxes(key, -1, -2)) / jnp.asarray(math.sqrt(jnp.shape(query)[-1]), dtype)
    if attn_mask is not None:
        if jnp.result_type(attn_mask) == jnp.bool_:
            scores = jnp.where(attn_mask, scores, jnp.asarray(-jnp.inf, dtype))
        else:
            scores = scores + jnp.asarray(attn_mask).astype(dtype)
    return jnp.matmul(_safe_softmax(scores), value)


def _safe_softmax(scores):
    """Softmax over the last axis; a row of only -inf gives zeros."""
    m = jnp.max(scores, axis=-1, keepdims=True)
    e = jnp.exp(scores - jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m))
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total == 0, jnp.ones_like(total), total)
