"""scaled_dot_product_attention (iOS18) against torch.nn.functional.scaled_dot_product_attention."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
        attn_mask=None if mask is None else torch.from_numpy(mask),
    ).numpy()


@pytest.mark.parametrize("batch", [(2,), (2, 3), (1, 2, 2)])
def test_sdpa_masks(batch):
    L, S, E, EV = 4, 6, 8, 5
    q, k, v = rand(*batch, L, E), rand(*batch, S, E), rand(*batch, S, EV)
    bool_mask = RNG.random((L, S)) > 0.4
    bool_mask[:, 0] = True  # no fully masked query here
    float_mask = rand(*batch[:-1], 1, L, S) if len(batch) > 1 else rand(L, S)
    causal = np.tril(np.ones((L, S), bool))
    outs = run_mil(
        lambda q, k, v, bm, fm: (
            mb.scaled_dot_product_attention(query=q, key=k, value=v),
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=bm),
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=fm),
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=causal),
        ),
        {"q": q, "k": k, "v": v, "bm": bool_mask, "fm": float_mask},
        target="iOS18",
    )
    wants = [sdpa(q, k, v), sdpa(q, k, v, bool_mask), sdpa(q, k, v, float_mask), sdpa(q, k, v, causal)]
    for i, (out, want) in enumerate(zip(outs, wants)):
        assert out.shape == want.shape
        np.testing.assert_allclose(out, want, **TOL, err_msg=f"output {i}")


def test_sdpa_fully_masked_rows_and_broadcast_masks():
    """Rows with every key masked give zeros, as torch; masks of lower rank broadcast."""
    q, k, v = rand(2, 3, 4, 8), rand(2, 3, 6, 8), rand(2, 3, 6, 8)
    bool_mask = np.ones((1, 1, 4, 6), bool)
    bool_mask[..., 2, :] = False
    float_mask = np.zeros((6,), np.float32)
    float_mask[3:] = -np.inf
    neg_rows = np.zeros((3, 1, 6), np.float32)
    neg_rows[1] = -np.inf
    outs = run_mil(
        lambda q, k, v: (
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=bool_mask),
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=float_mask),
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=neg_rows),
        ),
        {"q": q, "k": k, "v": v},
        target="iOS18",
    )
    wants = [sdpa(q, k, v, bool_mask), sdpa(q, k, v, float_mask[None]), sdpa(q, k, v, neg_rows)]  # torch wants rank >= 2
    assert np.all(wants[0][:, :, 2] == 0)
    for out, want in zip(outs, wants):
        np.testing.assert_allclose(out, want, **TOL)


def test_sdpa_static_and_fp16_mask():
    """All-constant operands fold at trace time; an fp16 float mask is added in the query's dtype."""
    q, k, v = rand(1, 3, 4), rand(1, 5, 4), rand(1, 5, 2)
    mask = rand(3, 5).astype(np.float16)
    outs = run_mil(
        lambda x, query: (
            mb.add(x=x, y=mb.scaled_dot_product_attention(query=q, key=k, value=v)),
            mb.scaled_dot_product_attention(query=query, key=k, value=v, attn_mask=mask),
        ),
        {"x": np.zeros((1, 3, 2), np.float32), "query": q},
        target="iOS18",
    )
    np.testing.assert_allclose(outs[0], sdpa(q, k, v), **TOL)
    np.testing.assert_allclose(outs[1], sdpa(q, k, v, mask.astype(np.float32)), **TOL)
