"""Linear layers (NeuralNetwork.proto): ``innerProduct``, ``batchedMatmul``, ``embedding``,
``embeddingND`` and ``dot``.

Weights are declared with their stored shapes so quantized data decodes right and per-channel
quantization scales land on the output-channel axis (axis 0 of every matrix here):

* ``InnerProductLayerParams.weights``: ``[C_out, C_in]``.
* ``BatchedMatMulLayerParams.weights``: the ``[X1, X2]`` matrix stored column major, i.e. a
  row-major ``[X2, X1]`` array.
* ``EmbeddingLayerParams.weights``: ``[outputChannels, inputDim]``;
  ``EmbeddingNDLayerParams.weights``: ``[embeddingSize, vocabSize]``.

``int8DynamicQuantize`` (innerProduct, batchedMatmul): the weights come as ``int8RawValue`` with
one linear scale (already dequantized at load: ``w = q * scale``); the input is quantized to int8
at run time and the product dequantized. The proto does not say how the input's scale is chosen;
mlc uses one symmetric scale per tensor (``s = max|x| / 127``, ``q = round(x / s)``), so the
result carries int8 input rounding as Core ML's does (coremltools checks it against the float
product at 40 dB SNR).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from mlc.frontends.neuralnetwork.layers._common import f32
from mlc.frontends.neuralnetwork.registry import layer


# -- shared helpers ----------------------------------------------------------------------------
def _quantize_input(x):
    """``x`` rounded to the symmetric int8 grid of its own range (one scale for the tensor)."""
    scale = jnp.max(jnp.abs(x)) / 127.0
    safe = jnp.where(scale > 0, scale, 1.0)
    return jnp.clip(jnp.round(x / safe), -127.0, 127.0) * safe


def _check_int8_dynamic(ctx, p):
    """The ``int8DynamicQuantize`` preconditions that concern the weights (proto comment)."""
    wp = p.weights
    if not wp.int8RawValue:
        raise ctx.fail("int8DynamicQuantize needs the weights as int8RawValue")
    lin = wp.quantization.linearQuantization
    if wp.quantization.WhichOneof("QuantizationType") != "linearQuantization" or len(lin.scale) != 1 or len(lin.bias):
        raise ctx.fail("int8DynamicQuantize needs linear quantization with one scale and no bias")


def _bias(ctx, p, n: int):
    if not p.hasBias:
        return None
    b = jnp.reshape(ctx.weight("bias"), (-1,))
    if b.shape[0] != n:
        raise ctx.fail(f"bias has {b.shape[0]} values, the layer has {n} output channels")
    return b


def _matrix_weights(ctx, rows: int, cols: int):
    """The layer's ``weights`` as a ``[rows, cols]`` array (checked)."""
    w = jnp.asarray(ctx.weight("weights"), jnp.float32)
    if w.size != rows * cols:
        raise ctx.fail(f"weights hold {w.size} values, the layer needs {rows} x {cols}")
    return jnp.reshape(w, (rows, cols))


def _dense(ctx, p, x2d, out_channels: int, in_channels: int):
    """``x2d [N, C_in] @ W^T + b`` with the layer's weights ``[C_out, C_in]``."""
    w = _matrix_weights(ctx, out_channels, in_channels)
    if p.int8DynamicQuantize:
        _check_int8_dynamic(ctx, p)
        x2d = _quantize_input(x2d)
    y = jnp.matmul(x2d, w.T)
    b = _bias(ctx, p, out_channels)
    return y if b is None else y + b


# -- innerProduct --------------------------------------------------------------------------------
def _inner_product_weights(p):
    if p.outputChannels and p.inputChannels:
        return {"weights": ((int(p.outputChannels), int(p.inputChannels)), 0), "bias": ((int(p.outputChannels),), 0)}
    return {}


@layer("innerProduct", weights=_inner_product_weights)
def inner_product(ctx, p, x):
    """``InnerProductLayerParams``: the input is flattened to a matrix by rank
    (1: ``(C_in)``; 2: ``(x1, C_in)``; 3: ``(x1*x2, C_in)``; 4: ``(x1, x2*x3*x4)``;
    5: ``(x1*x2, x3*x4*x5)``) and the output keeps the rank (4: ``(x1, C_out, 1, 1)``;
    5: ``(x1, x2, C_out, 1, 1)``)."""
    x = f32(x)
    c_in, c_out = int(p.inputChannels), int(p.outputChannels)
    shape = tuple(x.shape)
    rank = len(shape)
    if rank == 0 or rank > 5:
        raise ctx.fail(f"input has rank {rank}; innerProduct takes rank 1 to 5")
    if rank <= 3:
        lead, k, out_shape = shape[:-1], shape[-1], shape[:-1] + (c_out,)
    elif rank == 4:
        lead, k, out_shape = shape[:1], math.prod(shape[1:]), (shape[0], c_out, 1, 1)
    else:
        lead, k, out_shape = shape[:2], math.prod(shape[2:]), shape[:2] + (c_out, 1, 1)
    if k != c_in:
        raise ctx.fail(f"input of shape {shape} gives {k} input channels, the layer has inputChannels={c_in}")
    y = _dense(ctx, p, jnp.reshape(x, (math.prod(lead), k)), c_out, c_in)
    return jnp.reshape(y, out_shape)


# -- batchedMatmul -------------------------------------------------------------------------------
def _batched_matmul_weights(p):
    x1, x2 = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
    if x1 and x2:
        return {"weights": ((x2, x1), 0), "bias": ((x2,), 0)}  # [X1, X2] stored column major
    return {}


@layer("batchedMatmul", weights=_batched_matmul_weights)
def batched_matmul(ctx, p, a, *rest):
    """``BatchedMatMulLayerParams``. Two inputs: numpy-style broadcast matmul, except that a 1-D
    operand is promoted to a matrix (``a: (D) -> (1, D)``, ``b: (D) -> (D, 1)``) and the promoted
    axis is kept, so the output rank is ``max(2, rank(a), rank(b))``; transposes apply to the last
    two axes. One input: ``a @ W + bias`` with ``W [X1, X2]`` from the weights; the output keeps
    the input's rank (transposes ignored)."""
    a = f32(a)
    if len(rest) > 1:
        raise ctx.fail(f"batchedMatmul takes 1 or 2 inputs, got {1 + len(rest)}")
    if rest:
        if p.int8DynamicQuantize:
            raise ctx.fail("int8DynamicQuantize needs exactly one input")
        return _matmul_two(ctx, p, a, f32(rest[0]))
    x1, x2 = int(p.weightMatrixFirstDimension), int(p.weightMatrixSecondDimension)
    if a.ndim == 0 or a.shape[-1] != x1:
        raise ctx.fail(f"input of shape {tuple(a.shape)} does not end in weightMatrixFirstDimension={x1}")
    lead = tuple(a.shape[:-1])
    y = _dense(ctx, p, jnp.reshape(a, (-1, x1)), x2, x1)
    return jnp.reshape(y, lead + (x2,))


def _matmul_two(ctx, p, a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ctx.fail("batchedMatmul inputs must have rank at least 1")
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[:, None]
    if p.transposeA:
        a = jnp.swapaxes(a, -1, -2)
    if p.transposeB:
        b = jnp.swapaxes(b, -1, -2)
    if a.shape[-1] != b.shape[-2]:
        raise ctx.fail(f"cannot multiply matrices of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return jnp.matmul(a, b)


# -- embedding / embeddingND ---------------------------------------------------------------------
def _lookup(table, x, n: int):
    """Rows of ``table [n, E]`` at the float indices ``x``. The spec requires indices in
    ``[0, n-1]``; a negative one counts from the end (the MIL ``gather`` of a constant matrix
    lowers to ``embeddingND``), and the rest are clamped."""
    idx = jnp.asarray(x).astype(jnp.int32)
    idx = jnp.clip(jnp.where(idx < 0, idx + n, idx), 0, n - 1)
    return jnp.take(table, idx, axis=0)


def _embedding_weights(p):
    if p.outputChannels and p.inputDim:
        return {"weights": ((int(p.outputChannels), int(p.inputDim)), 0), "bias": ((int(p.outputChannels),), 0)}
    return {}


@layer("embedding", weights=_embedding_weights)
def embedding(ctx, p, x):
    """``EmbeddingLayerParams``: input ``(x1, 1, 1, 1)`` or ``(x1, x2, 1, 1, 1)`` of indices,
    output ``(x1, C_out, 1, 1)`` / ``(x1, x2, C_out, 1, 1)``; weights ``[C_out, inputDim]``."""
    n, c_out = int(p.inputDim), int(p.outputChannels)
    shape = tuple(jnp.shape(x))
    if len(shape) < 4 or shape[-3:] != (1, 1, 1):
        raise ctx.fail(f"input of shape {shape}: embedding takes rank 4 or 5 with the last three dimensions 1")
    table = _matrix_weights(ctx, c_out, n).T
    y = _lookup(table, jnp.reshape(x, shape[:-3]), n)
    b = _bias(ctx, p, c_out)
    if b is not None:
        y = y + b
    return jnp.reshape(y, shape[:-3] + (c_out, 1, 1))


def _embedding_nd_weights(p):
    if p.embeddingSize and p.vocabSize:
        return {"weights": ((int(p.embeddingSize), int(p.vocabSize)), 0), "bias": ((int(p.embeddingSize),), 0)}
    return {}


@layer("embeddingND", weights=_embedding_nd_weights)
def embedding_nd(ctx, p, x):
    """``EmbeddingNDLayerParams``: input ``(..., 1)`` of indices (rank >= 2), output
    ``(..., embeddingSize)``; weights ``[embeddingSize, vocabSize]``."""
    n, e = int(p.vocabSize), int(p.embeddingSize)
    shape = tuple(jnp.shape(x))
    if len(shape) < 1 or shape[-1] != 1:
        raise ctx.fail(f"input of shape {shape}: embeddingND takes indices whose last dimension is 1")
    table = _matrix_weights(ctx, e, n).T
    y = _lookup(table, jnp.reshape(x, shape[:-1]), n)
    b = _bias(ctx, p, e)
    return y if b is None else y + b


# -- dot -------------------------------------------------------------------------------------------
@layer("dot")
def dot(ctx, p, a, b):
    """``DotProductLayerParams``: the dot product of two ``[..., C, 1, 1]`` blobs along the
    channel axis, giving ``[..., 1, 1, 1]``; leading axes are batch. The reduction covers the
    last three axes (C, H, W), which is the channel dot product for the ``H = W = 1`` blobs the
    spec allows. ``cosineSimilarity`` divides by both L2 norms."""
    a, b = f32(a), f32(b)
    if a.ndim < 3 or b.ndim < 3:
        raise ctx.fail(f"inputs have shapes {tuple(a.shape)} and {tuple(b.shape)}; dot takes rank >= 3")
    if a.shape[-3:] != b.shape[-3:]:
        raise ctx.fail(f"inputs of shapes {tuple(a.shape)} and {tuple(b.shape)} differ in their last three axes")
    axes = (-3, -2, -1)
    y = jnp.sum(a * b, axis=axes, keepdims=True)
    if p.cosineSimilarity:
        na = jnp.sum(a * a, axis=axes, keepdims=True)
        nb = jnp.sum(b * b, axis=axes, keepdims=True)
        y = y / jnp.sqrt(jnp.maximum(na * nb, 1e-24))
    return y
