"""Espresso shape layers (``concat``, ``split_nd``, ``expand_dims``, ``squeeze``) ->
NeuralNetwork.proto layers, registered with ``espresso_layers.espresso_layer``.

No uncompiled twin in ``../shared/testdata`` holds these types, so every mapping here is
"inferred" (see ``espresso_layers``' docstring) and each is checked, layer by layer, against the
blob sizes ``model.espresso.shape`` publishes: a reading of a layer's parameters that gives other
sizes is refused, never run.

Where the readings come from:

* ``expand_dims``, ``squeeze``, ``split_nd``: a published compiled text recogniser
  (``dcsijan/model-dump``: its ``model.espresso.net`` beside its ``model.espresso.shape``). Its
  ``expand_dims`` turns a rank-3 blob (25, 4, 192) into the rank-5 blob (25, 4, 192, 1, 1) with
  ``size_of_axes`` 2, ``axes_0`` 3, ``axes_1`` 4; its ``squeeze`` turns (25, 4, 256, 1, 1) into
  (25, 4, 256) with the same axes; its ``split_nd`` cuts (25, 4, 256) into two (25, 4, 128) blobs
  with ``nd_axis`` 2 and ``begin_0`` .. ``begin_127`` all 0. So axes are counted outermost first
  over the blob's own rank (the output's rank for ``expand_dims``), as the rank-N layers of the
  protobuf count them and as ``softmax_nd``'s ``nd_axis`` 2 on a rank-3 blob of the same network
  does (its last axis).
* ``concat``: joins its inputs on the channel axis (-3), as two independent published espresso
  converters read it (one written from Apple's own espresso models, one from the models of an
  app); ``model.espresso.shape`` must agree (the top's channels are the sum of the bottoms').

Espresso types still refused (not registered), and why:

* ``rnn_arch`` (the recogniser's bidirectional LSTM): its weights (``W_t_x``, ``W_t_h``, ``b``
  and ``*_reverse`` in the layer's ``weights`` object) have no twin to learn the gate order and
  the matrix orientation from, and its five tops (a sequence and the final states per direction)
  would need more assumptions; ``nonlinearity_type`` / ``internal_nonlinearity_*`` numbers are
  unknown too.
* ``reduce``: published notes name its ``mode`` numbers, but no published network shows which
  axes ``axis_mode`` selects, and the reduced axes cannot be told apart from sizes alone.
* ``slice``, ``crop``, ``lrn``, ``deconvolution``, ``load_constant``, ``sequence_concat``: no
  published compiled network here shows them with their sizes (which key is which side or axis,
  ``lrn``'s bias key, the deconvolution weight order and how its pads crop the output, the
  constant's layout and ``nd_rank``).
"""

from __future__ import annotations

from mlc._errors import MLCIOError, MLCUnsupportedError
from mlc.io.compiled.espresso_layers import Layer, Network, espresso_layer

MAX_AXES = 5  # espresso blobs have at most 5 axes (seq, n, k, h, w)
MAX_SPLIT_KEYS = 1024  # begin_0 .. begin_1023: the recogniser writes 128 of them, all 0


def _shape(layer: Layer, network: Network, blob: str) -> tuple[int, ...]:
    """``blob``'s size from ``model.espresso.shape`` in a rank-N network, or a refusal."""
    shape = network.shapes.get(blob)
    if not network.nd or shape is None:
        raise MLCUnsupportedError(
            f"{layer.where}: {layer.type!r} layers are mapped only in rank-N networks whose model.espresso.shape gives "
            f"the size of {blob!r}"
        )
    return shape


def _axes(layer: Layer, rank: int) -> list[int]:
    """``axes_0`` .. ``axes_<size_of_axes - 1>``: distinct axes of a rank-``rank`` blob,
    counted outermost first (0 .. rank - 1)."""
    count = layer.int("size_of_axes", minimum=1)
    if count > MAX_AXES:
        raise MLCIOError(f"{layer.where}: size_of_axes {count} is more than espresso's {MAX_AXES} axes")
    stray = [f"axes_{i}" for i in range(count, MAX_AXES) if layer.has(f"axes_{i}")]
    if stray:
        raise MLCUnsupportedError(f"{layer.where}: {', '.join(stray)} set beyond size_of_axes {count}; their meaning is unknown")
    axes = [layer.int(f"axes_{i}") for i in range(count)]
    if any(not 0 <= a < rank for a in axes):
        raise MLCUnsupportedError(
            f"{layer.where}: axes {axes} are not all within 0..{rank - 1} (a rank-{rank} blob); negative or larger axes "
            "are not a form mlc has seen"
        )
    if len(set(axes)) != len(axes):
        raise MLCIOError(f"{layer.where}: axes {axes} repeat an axis")
    return axes


AXES_KEYS = frozenset({"size_of_axes", "nd_axis", *(f"axes_{i}" for i in range(MAX_AXES))})


@espresso_layer("expand_dims", AXES_KEYS)
def expand_dims(layer: Layer, network: Network) -> None:
    """``expand_dims`` -> ``expandDims`` (rank-N): unit axes inserted at ``axes_0`` ..
    ``axes_<size_of_axes - 1>``, which index the output (the input's rank plus
    ``size_of_axes``), outermost first. ``nd_axis`` must be 0 (the published value; what another
    value means is unknown). Inferred from ``dcsijan/model-dump`` (module docstring)."""
    layer.inputs(1)
    layer.outputs(1)
    layer.only("nd_axis", (0,), 0)
    shape = list(_shape(layer, network, layer.bottoms[0]))
    rank = len(shape) + layer.int("size_of_axes", minimum=1)
    if rank > MAX_AXES:
        raise MLCIOError(f"{layer.where}: a rank-{len(shape)} blob with {rank - len(shape)} more axes has more than {MAX_AXES}")
    axes = _axes(layer, rank)
    out = iter(shape)
    network.check_shape(layer, [1 if i in axes else next(out) for i in range(rank)])
    network.add(layer.name, "expandDims", layer.bottoms, layer.tops).axes.extend(axes)


@espresso_layer("squeeze", AXES_KEYS | {"version"})
def squeeze(layer: Layer, network: Network) -> None:
    """``squeeze`` -> ``squeeze`` (rank-N): the unit axes ``axes_0`` .. ``axes_<size_of_axes -
    1>`` of the input (outermost first) removed. ``nd_axis`` must be 0 and ``version`` 1 (the
    published values); an axis whose size is not 1, or removing every axis, is refused.
    Inferred from ``dcsijan/model-dump`` (module docstring)."""
    layer.inputs(1)
    layer.outputs(1)
    layer.only("nd_axis", (0,), 0)
    layer.only("version", (1,), 1)
    shape = _shape(layer, network, layer.bottoms[0])
    axes = _axes(layer, len(shape))
    if any(shape[a] != 1 for a in axes):
        raise MLCIOError(f"{layer.where}: axes {axes} of a blob of size {shape} are not all of size 1")
    if len(axes) == len(shape):
        raise MLCUnsupportedError(f"{layer.where}: squeezing every axis of {shape} leaves a rank-0 blob, which espresso has not")
    network.check_shape(layer, [d for i, d in enumerate(shape) if i not in axes])
    params = network.add(layer.name, "squeeze", layer.bottoms, layer.tops)
    params.axes.extend(axes)
    params.squeezeAll = False


@espresso_layer("split_nd", {"nd_axis", *(f"begin_{i}" for i in range(MAX_SPLIT_KEYS))})
def split_nd(layer: Layer, network: Network) -> None:
    """``split_nd`` -> ``splitND`` (rank-N) on axis ``nd_axis`` (outermost first; negative
    counts from the last), one piece per top blob. The pieces' sizes are the tops' sizes on that
    axis in ``model.espresso.shape`` (the tops must be there, agree with the input off the axis,
    and add up to it). ``begin_<i>`` must all be 0, as published: what other values mean is
    unknown. Inferred from ``dcsijan/model-dump`` (module docstring)."""
    layer.inputs(1)
    if len(layer.tops) < 2:
        raise MLCIOError(f"{layer.where}: the layer has {len(layer.tops)} top (output) blob, a split makes at least 2")
    nonzero = sorted((k for k in layer.obj if k.startswith("begin_") and layer.int(k) != 0), key=lambda k: int(k[6:]))
    if nonzero:
        raise MLCUnsupportedError(f"{layer.where}: {', '.join(nonzero[:4])} are not 0; what a non-zero begin_<i> means is unknown")
    shape = _shape(layer, network, layer.bottoms[0])
    rank = len(shape)
    axis = layer.int("nd_axis")
    if not -rank <= axis < rank:
        raise MLCIOError(f"{layer.where}: nd_axis {axis} is out of range for a rank-{rank} blob")
    axis %= rank
    sizes = []
    for top in layer.tops:
        piece = _shape(layer, network, top)
        if len(piece) != rank or any(p != s for i, (p, s) in enumerate(zip(piece, shape)) if i != axis) or piece[axis] < 1:
            raise MLCUnsupportedError(
                f"{layer.where}: model.espresso.shape gives top {top!r} size {piece}, not a piece of {shape} cut on axis {axis}; "
                "the layer's parameters mean something else"
            )
        sizes.append(piece[axis])
    if sum(sizes) != shape[axis]:
        raise MLCUnsupportedError(
            f"{layer.where}: the tops' sizes {sizes} on axis {axis} do not add up to the input's {shape[axis]}; "
            "the layer's parameters mean something else"
        )
    params = network.add(layer.name, "splitND", layer.bottoms, layer.tops)
    params.axis = axis
    params.splitSizes.extend(sizes)
    params.numSplits = len(sizes)


@espresso_layer("concat", set())
def concat(layer: Layer, network: Network) -> None:
    """``concat`` -> ``concat`` on the channel axis (-3) of blobs of rank 3 or more (inferred:
    two published espresso converters read it so; no parameter is known, so any is refused).
    Where ``model.espresso.shape`` gives the sizes of the bottoms and the top, the top must be
    the bottoms joined on that axis; in a rank-N network those sizes are required."""
    layer.inputs((2, 1 << 16))
    layer.outputs(1)
    names = [*layer.bottoms, layer.tops[0]]
    if network.nd:
        shapes = [_shape(layer, network, name) for name in names]
    else:
        shapes = [network.shapes.get(name) for name in names]
    if all(s is not None for s in shapes):
        *ins, out = shapes
        if len({len(s) for s in shapes}) != 1 or len(out) < 3:
            raise MLCUnsupportedError(f"{layer.where}: bottoms {ins} and top {out} are not blobs of one rank of 3 or more")
        off = [s[:-3] + s[-2:] for s in shapes]
        if len(set(off)) != 1 or out[-3] != sum(s[-3] for s in ins):
            raise MLCUnsupportedError(
                f"{layer.where}: model.espresso.shape gives top {out} for bottoms {ins}, not the bottoms joined on the "
                "channel axis; the layer means something else"
            )
    network.add(layer.name, "concat", layer.bottoms, layer.tops).sequenceConcat = False
