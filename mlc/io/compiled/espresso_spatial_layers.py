"""Espresso spatial layers (``general_padding``, ``upsample``) -> NeuralNetwork.proto layers,
registered with ``espresso_layers.espresso_layer``.

No uncompiled twin in ``../shared/testdata`` keeps these types (FindFour's padding layer is
folded into the convolution after it, see ``espresso_layers``), so both mappings are "inferred":
from published espresso converters and notes, and the parameter names the twins pin down for the
convolution (``pad_t`` / ``pad_b`` / ``pad_l`` / ``pad_r``: top, bottom, left, right). Where
``model.espresso.shape`` gives the top's size, the layer's reading must give that size (the
height grows by ``pad_t + pad_b``, the width by ``scaling_factor_x``, ...), so a parameter read
on the wrong axis is refused, never run. Only the forms two sources agree on are mapped; the rest
is refused naming the layer and the value.
"""

from __future__ import annotations

from mlc._errors import MLCUnsupportedError
from mlc.io.compiled.espresso_layers import Layer, Network, espresso_layer
from mlc.io.proto import proto


def _spatial(layer: Layer, network: Network) -> list[int] | None:
    """The input's size (rank-N: its own axes; rank-5 world: n, k, h, w) when published, with
    at least the two spatial axes (h, w) last."""
    shape = network.shapes.get(layer.bottoms[0])
    if shape is None:
        return None
    if len(shape) < 2:
        raise MLCUnsupportedError(f"{layer.where}: the input {layer.bottoms[0]!r} has size {shape}, no height and width to work on")
    return list(shape)


GENERAL_PADDING_KEYS = frozenset({"pad_t", "pad_b", "pad_l", "pad_r", "pad_value", "pad_fill_mode", "pad_pad_mode"})


@espresso_layer("general_padding", GENERAL_PADDING_KEYS)
def general_padding(layer: Layer, network: Network) -> None:
    """``general_padding`` -> ``padding`` with a constant: ``pad_t`` / ``pad_b`` rows above and
    below, ``pad_l`` / ``pad_r`` columns left and right (the convolution's names, twin-checked
    there), filled with ``pad_value``.

    ``pad_pad_mode`` 0 is the constant form (a published probe of Apple's compiler, and the
    default, as ``pad_fill_mode`` 0 is the zero fill of a convolution's pads); the probe names 1
    reflect and 2 replicate, but no second source or published network confirms which is which,
    so those are refused, as is a ``pad_fill_mode`` other than 0. Checked against
    ``model.espresso.shape`` where it gives the sizes.
    """
    layer.inputs(1)
    layer.outputs(1)
    layer.only("pad_pad_mode", (0,), 0)
    layer.only("pad_fill_mode", (0,), 0)
    top, bottom, left, right = (layer.int(k, 0, minimum=0) for k in ("pad_t", "pad_b", "pad_l", "pad_r"))
    shape = _spatial(layer, network)
    if shape is not None:
        network.check_shape(layer, shape[:-2] + [shape[-2] + top + bottom, shape[-1] + left + right])
    params = network.add(layer.name, "padding", layer.bottoms, layer.tops)
    params.constant.value = layer.number("pad_value", 0.0)
    for start, end in ((top, bottom), (left, right)):
        border = params.paddingAmounts.borderAmounts.add()
        border.startEdgeSize, border.endEdgeSize = start, end


UPSAMPLE_KEYS = frozenset({
    "mode", "scaling_factor_x", "scaling_factor_y", "align_corners", "is_legacy_mode",
    "use_fractional_scale_factors", "fractional_scaling_factor_x", "fractional_scaling_factor_y",
})


@espresso_layer("upsample", UPSAMPLE_KEYS)
def upsample(layer: Layer, network: Network) -> None:
    """``upsample`` with ``mode`` 0 -> ``upsample`` NN (nearest neighbour: each pixel repeated)
    by ``scaling_factor_y`` rows and ``scaling_factor_x`` columns (positive integers).

    Mode 0 as nearest neighbour: a published converter written from Apple's own espresso models
    and a published probe of Apple's compiler agree. ``mode`` 1 is bilinear in both, but which of
    the protobuf's three sampling grids (``linearUpsampleMode`` DEFAULT, ALIGN_CORNERS_TRUE /
    FALSE) ``align_corners`` and ``is_legacy_mode`` select is shown by no twin or published
    network, so it is refused, as are fractional factors (``use_fractional_scale_factors`` 1).
    With integer factors, ``fractional_scaling_factor_x/y`` must be absent, 1, or the integer
    factor (what converters write beside them), ``align_corners`` and ``is_legacy_mode`` 0.
    Checked against ``model.espresso.shape`` where it gives the sizes.
    """
    layer.inputs(1)
    layer.outputs(1)
    layer.only("mode", (0,), None)
    layer.only("use_fractional_scale_factors", (0,), 0)
    layer.only("align_corners", (0,), 0)
    layer.only("is_legacy_mode", (0,), 0)
    sy, sx = layer.int("scaling_factor_y", minimum=1), layer.int("scaling_factor_x", minimum=1)
    for key, factor in (("fractional_scaling_factor_y", sy), ("fractional_scaling_factor_x", sx)):
        if layer.has(key):
            layer.only(key, tuple(sorted({1, factor})))
    shape = _spatial(layer, network)
    if shape is not None:
        network.check_shape(layer, shape[:-2] + [shape[-2] * sy, shape[-1] * sx])
    params = network.add(layer.name, "upsample", layer.bottoms, layer.tops)
    params.scalingFactor.extend([sy, sx])
    params.mode = proto("NeuralNetwork").UpsampleLayerParams.NN
