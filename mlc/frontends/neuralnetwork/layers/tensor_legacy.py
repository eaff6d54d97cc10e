"""Legacy (rank-5 era) tensor layers: ``reshape``, ``flatten``, ``permute``, ``concat``, ``split``,
``sequenceRepeat``, ``reorganizeData``, ``slice``, ``loadConstant``, ``crop``, ``padding``.

These layers predate the exact-rank (ND) layers and name their axes from the end: W = -1,
H = -2, C = -3, batch = -4, sequence = -5 (``mlc.frontends.neuralnetwork.shapes``). Written with negative axes they
mean the same in the rank-5 world (tensors ``[Seq, Batch, C, H, W]``) and in the exact world.
Each docstring says whether the layer's behaviour depends on the rank-5 layout:

* rank-5 path needed: ``reshape`` (sequence/batch axes -5/-4 of a rank-5 tensor), ``permute``
  (its four axes are ``[Seq, C, H, W]`` = positions 0, 2, 3, 4 of a rank-5 tensor, batch fixed),
  ``concat`` with ``sequenceConcat`` and ``sequenceRepeat`` (axis -5 exists only at rank >= 5),
  ``loadConstant`` (always yields the rank-5 ``[1, 1, C, H, W]``).
* rank-agnostic (trailing C/H/W axes only): ``flatten``, ``concat`` (channel), ``split``,
  ``reorganizeData``, ``slice``, ``crop``, ``padding``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from mlc.frontends.neuralnetwork.registry import layer
from mlc.kernels.channels_last import spatial_pad

CHANNEL_FIRST, CHANNEL_LAST = 0, 1


def _need_rank(ctx, x, rank: int, what: str = "input"):
    if jnp.ndim(x) < rank:
        raise ctx.fail(f"{what} must have rank >= {rank}, got shape {tuple(jnp.shape(x))}")


# -- reshape / flatten / permute -----------------------------------------------------------------

def _refill(x, lead: tuple, chw: tuple, mode: int):
    """x's data, read in ``mode`` order, refilled into ``lead + chw`` (chw = C, H, W): CHANNEL_LAST
    reads each item in H, W, C order and writes the output in H, W, C order too
    (proto ``ReshapeLayerParams``)."""
    if mode != CHANNEL_LAST:
        return jnp.reshape(x, lead + chw)
    c, h, w = chw
    y = jnp.reshape(jnp.moveaxis(x, -3, -1), lead + (h, w, c))
    return jnp.moveaxis(y, -1, -3)


def _resolve_target(ctx, target: list[int], count: int) -> tuple[int, ...]:
    """``targetShape`` with one optional -1 inferred, checked against ``count`` elements."""
    if any(t == 0 or t < -1 for t in target) or target.count(-1) > 1:
        raise ctx.fail(f"targetShape {target} must hold positive sizes (and at most one -1)")
    known = math.prod(t for t in target if t != -1)
    if -1 in target:
        if count % known:
            raise ctx.fail(f"targetShape {target} does not divide {count} elements")
        target = [count // known if t == -1 else t for t in target]
    if math.prod(target) != count:
        raise ctx.fail(f"targetShape {target} holds {math.prod(target)} elements, the input has {count}")
    return tuple(target)


@layer("reshape")
def reshape(ctx, p, x):
    """``ReshapeLayerParams``: rank-5 path needed.

    In the rank-5 world x is ``[Seq, B, C, H, W]``: a 3-long ``targetShape`` reshapes each
    ``[C, H, W]`` item (Seq and B kept); a 4-long one ``[Seq_out, C, H, W]`` re-cuts the sequence of
    each batch item (output ``[Seq_out, B, C_out, H_out, W_out]``). In the exact world a 3-long
    target keeps the leading axes, and a 4-long target reshapes an input of rank 3 or 4 as a whole
    to ``[Seq_out, C_out, H_out, W_out]``. ``CHANNEL_LAST`` reads and writes the data in H, W, C
    order.
    """
    target = [int(t) for t in p.targetShape]
    mode = int(p.mode)
    if len(target) not in (3, 4):
        raise ctx.fail(f"targetShape must have length 3 or 4, got {target}")
    _need_rank(ctx, x, 3)
    rank, shape = jnp.ndim(x), tuple(jnp.shape(x))
    if len(target) == 3:
        return _refill(x, shape[:-3], _resolve_target(ctx, target, math.prod(shape[-3:])), mode)
    if rank == 5:
        s, b = shape[:2]
        t = _resolve_target(ctx, target, s * math.prod(shape[-3:]))
        y = _refill(jnp.swapaxes(x, 0, 1), (b, t[0]), t[1:], mode)  # each batch item's sequence
        return jnp.swapaxes(y, 0, 1)
    if rank > 5:
        raise ctx.fail(f"a 4-long targetShape needs an input of rank 3 to 5, got shape {shape}")
    t = _resolve_target(ctx, target, math.prod(shape))
    return _refill(x, t[:1], t[1:], mode)


@layer("flatten")
def flatten(ctx, p, x):
    """``FlattenLayerParams``: ``[..., C, H, W]`` -> ``[..., C*H*W, 1, 1]`` (leading axes are batch);
    ``CHANNEL_LAST`` flattens in H, W, C order. Rank-agnostic."""
    _need_rank(ctx, x, 3)
    lead = tuple(jnp.shape(x))[:-3]
    if int(p.mode) == CHANNEL_LAST:
        x = jnp.moveaxis(x, -3, -1)
    return jnp.reshape(x, lead + (-1, 1, 1))


@layer("permute")
def permute(ctx, p, x):
    """``PermuteLayerParams``: rank-5 path needed. ``axis`` permutes ``[Seq, C, H, W]``: in the rank-5
    world those are positions 0, 2, 3, 4 of ``[Seq, B, C, H, W]`` and batch (1) stays put; an
    exact-world rank-4 input is taken as ``[Seq, C, H, W]`` itself."""
    axis = [int(a) for a in p.axis] or [0, 1, 2, 3]
    if sorted(axis) != [0, 1, 2, 3]:
        raise ctx.fail(f"axis must be a permutation of [0, 1, 2, 3], got {axis}")
    rank = jnp.ndim(x)
    if rank == 5:
        where = (0, 2, 3, 4)
    elif rank == 4:
        where = (0, 1, 2, 3)
    else:
        raise ctx.fail(f"input must have rank 5 ([Seq, B, C, H, W]) or 4 ([Seq, C, H, W]), got rank {rank}")
    perm = list(range(rank))
    for k, a in enumerate(axis):
        perm[where[k]] = where[a]
    return jnp.transpose(x, perm)


# -- concat / split / sequenceRepeat --------------------------------------------------------------

@layer("concat")
def concat(ctx, p, *xs):
    """``ConcatLayerParams``: along C (-3), or along Seq (-5) with ``sequenceConcat``. The channel
    form is rank-agnostic (rank >= 3); the sequence form needs rank >= 5, i.e. the rank-5 path."""
    axis, need = (-5, 5) if p.sequenceConcat else (-3, 3)
    if len(xs) < 2:
        raise ctx.fail(f"needs at least 2 inputs, got {len(xs)}")
    ranks = {jnp.ndim(x) for x in xs}
    if len(ranks) != 1:
        raise ctx.fail(f"inputs must have equal ranks, got shapes {[tuple(jnp.shape(x)) for x in xs]}")
    _need_rank(ctx, xs[0], need, "inputs")
    rest = {tuple(s for i, s in enumerate(jnp.shape(x)) if i != jnp.ndim(x) + axis) for x in xs}
    if len(rest) != 1:
        raise ctx.fail(f"inputs differ off axis {axis}: shapes {[tuple(jnp.shape(x)) for x in xs]}")
    dtype = jnp.result_type(*xs)
    return jnp.concatenate([jnp.asarray(x, dtype) for x in xs], axis=axis)


@layer("split")
def split(ctx, p, x):
    """``SplitLayerParams``: ``nOutputs`` equal parts along C (-3). Rank-agnostic (rank >= 3)."""
    n = int(p.nOutputs) or len(ctx.layer.output)
    if n != len(ctx.layer.output):
        raise ctx.fail(f"nOutputs is {n} but the layer names {len(ctx.layer.output)} outputs")
    _need_rank(ctx, x, 3)
    c = jnp.shape(x)[-3]
    if n < 1 or c % n:
        raise ctx.fail(f"cannot split {c} channels into {n} equal parts")
    return tuple(jnp.split(x, n, axis=-3))


@layer("sequenceRepeat")
def sequence_repeat(ctx, p, x):
    """``SequenceRepeatLayerParams``: the whole sequence (axis -5) repeated ``nRepetitions`` times
    (0 means 1): ``[x0..xS-1, x0..xS-1, ...]``. Needs rank >= 5: the rank-5 path."""
    n = int(p.nRepetitions) or 1
    _need_rank(ctx, x, 5)
    reps = [1] * jnp.ndim(x)
    reps[-5] = n
    return jnp.tile(x, reps)


# -- reorganizeData ------------------------------------------------------------------------------

SPACE_TO_DEPTH, DEPTH_TO_SPACE, PIXEL_SHUFFLE = 0, 1, 2


def _space_to_depth(x, b: int):
    *lead, c, h, w = jnp.shape(x)
    y = jnp.reshape(x, (*lead, c, h // b, b, w // b, b))
    n = len(lead)
    y = jnp.transpose(y, (*range(n), n + 2, n + 4, n, n + 1, n + 3))  # [..., bi, bj, C, H/b, W/b]
    return jnp.reshape(y, (*lead, c * b * b, h // b, w // b))


def _depth_to_space(x, b: int, pixel_shuffle: bool):
    *lead, c, h, w = jnp.shape(x)
    co, n = c // (b * b), len(lead)
    if pixel_shuffle:  # channel = co * b * b + bi * b + bj (torch.pixel_shuffle)
        y = jnp.reshape(x, (*lead, co, b, b, h, w))
        y = jnp.transpose(y, (*range(n), n, n + 3, n + 1, n + 4, n + 2))
    else:  # channel = (bi * b + bj) * co + c (TF depth_to_space)
        y = jnp.reshape(x, (*lead, b, b, co, h, w))
        y = jnp.transpose(y, (*range(n), n + 2, n + 3, n, n + 4, n + 1))
    return jnp.reshape(y, (*lead, co, h * b, w * b))


@layer("reorganizeData")
def reorganize_data(ctx, p, x):
    """``ReorganizeDataLayerParams`` over the last three axes ``[C, H, W]`` (leading axes are batch):
    SPACE_TO_DEPTH / DEPTH_TO_SPACE as TensorFlow's (channel index ``(bi*b + bj)*C + c``),
    PIXEL_SHUFFLE as torch's (``c*b*b + bi*b + bj``). Rank-agnostic."""
    b, mode = int(p.blockSize), int(p.mode)
    _need_rank(ctx, x, 3)
    if b < 2:
        raise ctx.fail(f"blockSize must be greater than 1, got {b}")
    c, h, w = jnp.shape(x)[-3:]
    if mode == SPACE_TO_DEPTH:
        if h % b or w % b:
            raise ctx.fail(f"blockSize {b} must divide H ({h}) and W ({w})")
        return _space_to_depth(x, b)
    if mode in (DEPTH_TO_SPACE, PIXEL_SHUFFLE):
        if c % (b * b):
            raise ctx.fail(f"blockSize^2 ({b * b}) must divide C ({c})")
        return _depth_to_space(x, b, mode == PIXEL_SHUFFLE)
    raise ctx.fail(f"unknown reorganization mode {mode}")


# -- slice / loadConstant ------------------------------------------------------------------------

@layer("slice")
def slice_(ctx, p, x):
    """``SliceLayerParams``: ``[startIndex, endIndex)`` step ``stride`` along C (-3), H (-2) or W (-1),
    negative indices counted from the end (-1 is N-1, so an end of -1 drops the last element),
    as Python slicing. Rank-agnostic (rank >= 3, 2, 1 for C, H, W)."""
    kind = int(p.axis)
    if kind not in (0, 1, 2):
        raise ctx.fail(f"unknown slice axis {kind}")
    axis = -3 + kind
    _need_rank(ctx, x, -axis)
    stride = int(p.stride)
    if stride < 1:
        raise ctx.fail(f"stride must be positive, got {stride}")
    n = jnp.shape(x)[axis]
    start, end, _ = slice(int(p.startIndex), int(p.endIndex), stride).indices(n)
    if len(range(start, end, stride)) == 0:
        raise ctx.fail(f"slice [{p.startIndex}:{p.endIndex}:{stride}] of an axis of {n} is empty")
    index = [slice(None)] * jnp.ndim(x)
    index[axis] = slice(start, end, stride)
    return x[tuple(index)]


def _load_constant_weights(p):
    shape = tuple(int(s) for s in p.shape)
    return {"data": (shape, 0)} if shape and all(s > 0 for s in shape) else {}


@layer("loadConstant", weights=_load_constant_weights)
def load_constant(ctx, p):
    """``LoadConstantLayerParams``: ``data`` of ``shape`` ``[C, H, W]`` as the rank-5 blob
    ``[1, 1, C, H, W]`` (the proto's output is rank 5 in either world; a declared output rank,
    ``outputTensor``, wins). Rank-5 path needed: the output is a rank-5 tensor."""
    shape = tuple(int(s) for s in p.shape)
    if not shape or any(s <= 0 for s in shape):
        raise ctx.fail(f"shape must hold positive sizes, got {list(shape)}")
    data = jnp.asarray(ctx.weight("data"), jnp.float32)
    if data.size != math.prod(shape):
        raise ctx.fail(f"data holds {data.size} values, shape {list(shape)} needs {math.prod(shape)}")
    ranks = ctx.output_ranks
    rank = ranks[0] if ranks and ranks[0] >= len(shape) else max(5, len(shape))
    return jnp.reshape(data, (1,) * (rank - len(shape)) + shape)


# -- crop / padding ------------------------------------------------------------------------------

def _borders(ctx, amounts, what: str):
    """``BorderAmounts`` -> ((top, bottom), (left, right)); unset means no border."""
    edges = list(amounts.borderAmounts)
    if not edges:
        return (0, 0), (0, 0)
    if len(edges) != 2:
        raise ctx.fail(f"{what}.borderAmounts must have 2 entries ([H, W]), got {len(edges)}")
    return tuple((int(e.startEdgeSize), int(e.endEdgeSize)) for e in edges)


@layer("crop")
def crop(ctx, p, x, *ref):
    """``CropLayerParams`` on the last two axes. One input: remove ``cropAmounts`` (top, bottom,
    left, right). Two inputs: a window of the second input's H, W at ``offset`` [H, W]. Rank-agnostic
    (rank >= 3)."""
    _need_rank(ctx, x, 3)
    h, w = jnp.shape(x)[-2:]
    if len(ref) > 1:
        raise ctx.fail(f"takes 1 or 2 inputs, got {1 + len(ref)}")
    if not ref:
        (top, bottom), (left, right) = _borders(ctx, p.cropAmounts, "cropAmounts")
        ho, wo = h - top - bottom, w - left - right
    else:
        offset = [int(o) for o in p.offset] or [0, 0]
        if len(offset) != 2:
            raise ctx.fail(f"offset must have 2 entries ([H, W]), got {offset}")
        top, left = offset
        _need_rank(ctx, ref[0], 2, "reference input")
        ho, wo = jnp.shape(ref[0])[-2:]
    if ho < 1 or wo < 1 or top + ho > h or left + wo > w:
        raise ctx.fail(f"crop window {ho}x{wo} at ({top}, {left}) does not fit an input of {h}x{w}")
    return x[..., top : top + ho, left : left + wo]


@layer("padding")
def padding(ctx, p, x):
    """``PaddingLayerParams`` on the last two axes (H, W): constant ``value``, reflection (mirror
    without repeating the edge, numpy ``reflect``) or replication (numpy ``edge``). Rank-agnostic
    (rank >= 2)."""
    _need_rank(ctx, x, 2)
    (top, bottom), (left, right) = _borders(ctx, p.paddingAmounts, "paddingAmounts")
    pads = [(0, 0)] * (jnp.ndim(x) - 2) + [(top, bottom), (left, right)]
    kind = p.WhichOneof("PaddingType")
    if kind == "constant":
        return spatial_pad(x, pads, mode="constant", constant_values=jnp.asarray(p.constant.value, jnp.result_type(x)))
    if kind == "reflection":
        h, w = jnp.shape(x)[-2:]
        if max(top, bottom) >= h or max(left, right) >= w:
            raise ctx.fail(f"reflection padding ({top}, {bottom}, {left}, {right}) must be smaller than H x W {h}x{w}")
        return spatial_pad(x, pads, mode="reflect")
    if kind == "replication":
        return spatial_pad(x, pads, mode="edge")
    raise ctx.fail("padding type (constant, reflection or replication) is not set")
