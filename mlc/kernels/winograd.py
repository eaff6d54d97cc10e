"""Winograd convolution F(m x m, 3 x 3) for 2-D, 3x3, stride-1, undilated, ungrouped convolutions.

A 3x3 convolution computed tile by tile: each ``m x m`` output tile reads an ``a x a`` input tile
(``a = m + 2``), and ``Y = A^T [(G g G^T) * (B^T d B)] A`` (Lavin and Gray, 2015) replaces the
``9 m^2`` multiplications per tile and channel pair by ``a^2``. Written in plain ``jax.numpy``:

- **weight transform** ``U = G g G^T``, laid out ``(a^2, C_in, C_out)``: it reads only the weights,
  so ``mlc.runtime.hoist`` computes it once per set of weights (it is written with slices,
  scalar multiplies and adds only, so the hoisted part still runs in numpy on the host,
  ``mlc.runtime.host_jaxpr``);
- **input transform** ``V = B^T d B`` from strided slices of the padded input, channels-last:
  written by one fused elementwise loop in XLA (no array of tiles before it);
- **one batched matrix product** over the ``a^2`` tile positions, ``(a^2, tiles, C_in) x
  (a^2, C_in, C_out)``: where the time goes, and what XLA:CPU's dot kernels do best (as ``a^2``
  separate products the gain disappears);
- **output transform** ``A^T M A``, interleaving the tiles back and cropping the tiles that pad
  an odd output size.

Any padding (Core ML's ``same``, ``valid``, custom, negative = cropping) is applied first; the
input is padded further at the end so that whole tiles cover the output. Float rounding differs
from a direct convolution: F(2x2, 3x3) adds at most a few float32 ulps (its transforms are
additions, and halves in ``G``), F(4x4, 3x3) more (its constants reach 8 and 1/24); see
``bench/experiments.md`` for the errors measured against torch.
"""

from __future__ import annotations

import functools
from fractions import Fraction as _F

import jax
import jax.numpy as jnp
import numpy as np

# (B^T, G, A^T) for F(m x m, 3 x 3): interpolation points 0, +-1 (and +-2 for m = 4), and infinity.
# ``convolution.conv`` uses m = 2 only: F(4x4, 3x3) has a quarter of the products per output
# but transformed weights 4x the kernel's size and 10-20x F(2x2, 3x3)'s rounding error, beyond
# float32 tolerance at 256 channels and more (bench/experiments.md); it stays here, tested, for
# measurements.
MATRICES = {
    2: (
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (_F(1, 2), _F(1, 2), _F(1, 2)), (_F(1, 2), _F(-1, 2), _F(1, 2)), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: (
        (
            (4, 0, -5, 0, 1, 0),
            (0, -4, -4, 1, 1, 0),
            (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0),
            (0, 2, -1, -2, 1, 0),
            (0, 4, 0, -5, 0, 1),
        ),
        (
            (_F(1, 4), 0, 0),
            (_F(-1, 6), _F(-1, 6), _F(-1, 6)),
            (_F(-1, 6), _F(1, 6), _F(-1, 6)),
            (_F(1, 24), _F(1, 12), _F(1, 6)),
            (_F(1, 24), _F(-1, 12), _F(1, 6)),
            (0, 0, 1),
        ),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}


def eligible(x, weight, *, strides, padding, dilations, groups: int) -> bool:
    """Whether ``conv(x, weight, ...)`` can be computed by ``conv`` here: 2-D, 3x3 kernel,
    stride 1, dilation 1, one group, a non-empty output."""
    if x.ndim != 4 or tuple(weight.shape[2:]) != (3, 3) or groups != 1:
        return False
    if tuple(strides) != (1, 1) or tuple(dilations) != (1, 1) or weight.shape[1] != x.shape[1]:
        return False
    return all(size + lo + hi - 2 >= 1 for size, (lo, hi) in zip(x.shape[2:], padding))


def transform_weight(weight, m: int = 2):
    """``U = G g G^T`` for ``weight (C_out, C_in, 3, 3)``, as ``(a^2, C_in, C_out)`` (row-major
    over the ``a x a`` tile positions). Only slices, scalar multiplies and adds: it depends on
    the weights alone and is hoisted."""
    _, g, _ = MATRICES[m]
    rows = [_combine(g_row, [weight[:, :, k, :] for k in range(3)]) for g_row in g]  # (O, I, 3) each
    u = [_combine(g_col, [r[:, :, k] for k in range(3)]) for r in rows for g_col in g]  # (O, I) each
    stacked = jax.lax.concatenate([jnp.reshape(t, (1, *t.shape)) for t in u], 0)  # not jnp.stack: numpy-evaluable
    return jnp.transpose(stacked, (0, 2, 1))


def conv(x, u, *, padding, m: int = 2, precision=None):
    """Cross-correlation of ``x (N, C_in, H, W)`` with the transformed weight ``u`` (from
    ``transform_weight``), ``padding`` a (low, high) pair per spatial dimension; the output
    is ``(N, C_out, H', W')`` as a direct convolution's."""
    bt, _, at = MATRICES[m]
    a = m + 2
    n, c, h, w = x.shape
    (top, bottom), (left, right) = padding
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    need_h, need_w = m * tiles_h + 2, m * tiles_w + 2  # whole tiles: pad the end further
    last = jnp.transpose(x, (0, 2, 3, 1))  # channels-last, the layout of XLA:CPU's convolutions
    zero = jnp.zeros((), x.dtype)
    xp = jax.lax.pad(last, zero, [(0, 0, 0), (top, need_h - h - top, 0), (left, need_w - w - left, 0), (0, 0, 0)])

    v = _input_transform(xp, bt, m, tiles_h, tiles_w).reshape(a * a, n * tiles_h * tiles_w, c)
    prod = jax.lax.dot_general(v, u.astype(x.dtype), (((2,), (1,)), ((0,), (0,))), precision=precision)
    prod = prod.reshape(a, a, n, tiles_h, tiles_w, -1)  # (a, a, N, th, tw, O)
    cols = [[_combine(a_row, [prod[i, j] for i in range(a)]) for j in range(a)] for a_row in at]  # [m][a] (N, th, tw, O)
    y = [[_combine(a_col, row) for a_col in at] for row in cols]  # [m][m]
    y = jnp.stack([jnp.stack(r, axis=3) for r in y], axis=2)  # (N, th, m, tw, m, O)
    y = y.reshape(n, tiles_h * m, tiles_w * m, -1)[:, :out_h, :out_w]
    return jnp.transpose(y, (0, 3, 1, 2))


def _input_transform(xp, bt, m: int, tiles_h: int, tiles_w: int):
    """``V = B^T d B`` for every tile of ``xp (N, H, W, C)``, as ``(a, a, N, tiles_h, tiles_w, C)``.

    Each step is a sum over k of a constant column ``B^T[:, k]``, broadcast, times the strided
    slice of tile element k: a broadcast multiply-add whose result already has the tile-position
    axis in front, so XLA computes it as one loop. (Computing each ``V[a, b]`` on its own and
    stacking them costs one loop each and a copy of ``V``: XLA:CPU does not fuse a
    concatenate into the loops that produce its operands.)"""
    a = len(bt)

    def along(v, axis, k, count):  # tile element k along ``axis``: positions k, k + m, ...
        start, limit, stride = [0] * v.ndim, list(v.shape), [1] * v.ndim
        start[axis], limit[axis], stride[axis] = k, k + m * (count - 1) + 1, m
        return jax.lax.slice(v, start, limit, stride)

    def transform(v, axis, count, out_axis):  # sum_k B^T[:, k] (on out_axis) * element k
        acc = None
        for k in range(a):
            column = [float(bt[i][k]) for i in range(a)]
            if not any(column):
                continue
            shape = [1] * (v.ndim + 1)
            shape[out_axis] = a
            term = jnp.expand_dims(along(v, axis, k, count), out_axis) * _constant(tuple(column), tuple(shape), np.dtype(v.dtype).name)
            acc = term if acc is None else acc + term
        return acc

    rows = transform(xp, 1, tiles_h, 0)  # (a, N, tiles_h, W, C)
    return transform(rows, 3, tiles_w, 1)  # (a, a, N, tiles_h, tiles_w, C)


@functools.lru_cache(maxsize=None)
def _constant(values: tuple, shape: tuple, dtype: str) -> np.ndarray:
    """One read-only array per distinct value: a traced program holds each once, however many
    convolutions use it (``mlc.runtime.hoist`` passes a program's array constants as
    arguments; one per convolution would be dozens)."""
    array = np.asarray(values, dtype=dtype).reshape(shape)
    array.flags.writeable = False
    return array


def _combine(coefficients, terms):
    """``sum(c * t)`` over the nonzero coefficients, +-1 as adds and subtracts."""
    acc = None
    for coef, term in zip(coefficients, terms):
        if coef == 0:
            continue
        if coef in (1, -1):
            if acc is None:
                acc = term if coef == 1 else -term
            else:
                acc = acc + term if coef == 1 else acc - term
            continue
        scaled = term * np.asarray(float(coef), dtype=term.dtype)
        acc = scaled if acc is None else acc + scaled
    return acc
