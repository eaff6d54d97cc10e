"""Winograd convolution F(m x m, 3 x 3) for 2-D, 3x3, stride-1, undilated, ungrouped convolutions.

A 3x3 convolution computed tile by tile: each ``m x m`` output tile reads an ``a x a`` input tile
(``a = m + 2``), and ``Y = A^T [(G g G^T) * (B^T d B)] A`` (Lavin and Gray, 2015) replaces the
``9 m^2`` multiplications per tile and channel pair by ``a^2``. Written in plain JAX (``lax``):

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

import numpy as np
from jax import lax

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
    over the ``a x a`` tile positions). Only a transpose, slices, broadcasts, multiplies, adds
    and reshapes: it depends on the weights alone, is hoisted, and runs in numpy on the host."""
    _, g, _ = MATRICES[m]
    a = m + 2
    # Kernel positions first: every term below is made of contiguous (C_in, C_out) planes
    # (numpy on the host is several times slower on the (C_out, C_in, 3, 3) layout).
    hwio = lax.transpose(weight, (2, 3, 1, 0))
    rows = _transform(hwio, g, 0, 1, 0)  # (a, 3, I, O): G applied to the kernel's rows
    u = _transform(rows, g, 1, 1, 1)  # (a, a, I, O)
    return lax.reshape(u, (a * a, *weight.shape[1::-1]))


def conv(x, u, *, padding, m: int = 2, precision=None):
    """Cross-correlation of ``x (N, C_in, H, W)`` with the transformed weight ``u`` (from
    ``transform_weight``), ``padding`` a (low, high) pair per spatial dimension; the output
    is ``(N, C_out, H', W')`` as a direct convolution's.

    Written with ``lax`` primitives only: ``jnp``'s wrappers cost several times more to trace,
    and a model traces this once per convolution on every cold start."""
    bt, _, at = MATRICES[m]
    a = m + 2
    n, c, h, w = x.shape
    (top, bottom), (left, right) = padding
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    need_h, need_w = m * tiles_h + 2, m * tiles_w + 2  # whole tiles: pad the end further
    last = lax.transpose(x, (0, 2, 3, 1))  # channels-last, the layout of XLA:CPU's convolutions
    zero = np.zeros((), x.dtype)
    xp = lax.pad(last, zero, [(0, 0, 0), (top, need_h - h - top, 0), (left, need_w - w - left, 0), (0, 0, 0)])

    v = lax.reshape(_input_transform(xp, bt, m, tiles_h, tiles_w), (a * a, n * tiles_h * tiles_w, c))
    prod = lax.dot_general(v, lax.convert_element_type(u, x.dtype), (((2,), (1,)), ((0,), (0,))), precision=precision)
    c_out = prod.shape[-1]
    planes = [lax.reshape(lax.slice_in_dim(prod, p, p + 1), (n, tiles_h, tiles_w, c_out)) for p in range(a * a)]
    cols = [[_combine(a_row, [planes[i * a + j] for i in range(a)]) for j in range(a)] for a_row in at]  # [m][a] (N, th, tw, O)
    y = [[_combine(a_col, row) for a_col in at] for row in cols]  # [m][m] (N, th, tw, O)
    y = lax.concatenate([lax.expand_dims(lax.concatenate([lax.expand_dims(t, (3,)) for t in r], 3), (2,)) for r in y], 2)  # (N, th, m, tw, m, O)
    y = lax.reshape(y, (n, tiles_h * m, tiles_w * m, c_out))
    y = lax.slice(y, (0, 0, 0, 0), (n, out_h, out_w, c_out))
    return lax.transpose(y, (0, 3, 1, 2))


def _input_transform(xp, bt, m: int, tiles_h: int, tiles_w: int):
    """``V = B^T d B`` for every tile of ``xp (N, H, W, C)``, as ``(a, a, N, tiles_h, tiles_w, C)``.

    Each step is a sum over k of a constant column ``B^T[:, k]``, broadcast, times the strided
    slice of tile element k: a broadcast multiply-add whose result already has the tile-position
    axis in front, so XLA computes it as one loop. (Computing each ``V[a, b]`` on its own and
    stacking them costs one loop each and a copy of ``V``: XLA:CPU does not fuse a
    concatenate into the loops that produce its operands.)"""
    rows = _transform(xp, bt, 1, m, 0, count=tiles_h)  # (a, N, tiles_h, W, C)
    return _transform(rows, bt, 3, m, 1, count=tiles_w)  # (a, a, N, tiles_h, tiles_w, C)


def _transform(v, matrix, axis: int, step: int, out_axis: int, count: int | None = None):
    """``sum_k matrix[:, k] (along a new axis at out_axis) * v[k :: step][:count] (along axis)``:
    ``matrix`` applied along ``axis`` to windows of ``len(matrix[0])`` positions ``step`` apart
    (``count`` windows; the whole axis for one window). Each term is a strided slice times a
    constant column, broadcast against each other, and added: one loop in XLA."""
    rows, width = len(matrix), len(matrix[0])
    count = 1 if count is None else count
    acc = None
    for k in range(width):
        column = tuple(float(matrix[i][k]) for i in range(rows))
        if not any(column):
            continue
        start, limit, stride = [0] * v.ndim, list(v.shape), [1] * v.ndim
        start[axis], limit[axis], stride[axis] = k, k + step * (count - 1) + 1, step
        piece = lax.slice(v, start, limit, stride)
        if count == 1 and out_axis == axis:  # the window is the whole axis: it becomes the new one
            piece = lax.squeeze(piece, (axis,))
        ones = [1] * (piece.ndim + 1)
        ones[out_axis] = rows
        # size-1 axes broadcast in lax.mul: no broadcast of the constant (which, reading no
        # input, the hoister would compute ahead and pass in at full size)
        term = lax.mul(lax.expand_dims(piece, (out_axis,)), _constant(column, tuple(ones), np.dtype(v.dtype).name))
        acc = term if acc is None else lax.add(acc, term)
    return acc


@functools.lru_cache(maxsize=None)
def _constant(values: tuple, shape: tuple, dtype: str) -> np.ndarray:
    """One read-only array per distinct column and shape: a traced program holds each once,
    however many convolutions use it (``mlc.runtime.hoist`` passes a program's array constants
    as arguments; one per convolution would be dozens)."""
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
                acc = term if coef == 1 else lax.neg(term)
            else:
                acc = lax.add(acc, term) if coef == 1 else lax.sub(acc, term)
            continue
        scaled = lax.mul(term, np.asarray(float(coef), dtype=term.dtype))
        acc = scaled if acc is None else lax.add(acc, scaled)
    return acc
