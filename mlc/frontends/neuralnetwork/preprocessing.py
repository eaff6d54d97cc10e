"""Image preprocessing of NeuralNetwork models (NeuralNetwork.proto ``NeuralNetworkPreprocessing``).

An image input reaches the network as float32 ``(1, C, H, W)`` with its channels in the
declared order (RGB, BGR or one gray channel), pixel values 0-255. Each preprocessing entry
names its input (``featureName``; empty means the network's only image input) and is one of:

* ``scaler`` (``NeuralNetworkImageScaler``): ``x * channelScale + bias``, the bias per channel
  in the declared order: ``redBias, greenBias, blueBias`` for RGB, ``blueBias, greenBias,
  redBias`` for BGR, ``grayBias`` for grayscale.
* ``meanImage`` (``NeuralNetworkMeanImage``): subtract a ``[C, H, W]`` mean image.

Entries apply in the order the spec lists them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mlc._errors import MLCParametersError
from mlc.features import FeatureDescriptions

_BIASES = {
    "RGB": ("redBias", "greenBias", "blueBias"),
    "BGR": ("blueBias", "greenBias", "redBias"),
    "GRAYSCALE": ("grayBias",),
    "GRAYSCALE_FLOAT16": ("grayBias",),
}


def _scaler(message, color_space: str) -> Callable:
    scale = np.float32(message.channelScale)
    bias = np.asarray([getattr(message, b) for b in _BIASES[color_space]], np.float32).reshape(1, -1, 1, 1)
    return lambda x: x * scale + bias


def _mean_image(message, shape: tuple[int, int], channels: int, where: str) -> Callable:
    mean = np.asarray(message.meanImage, np.float32)
    h, w = shape
    if mean.size != channels * h * w:
        raise MLCParametersError(f"{where}: meanImage has {mean.size} values, the image needs {channels}x{h}x{w}")
    mean = mean.reshape(1, channels, h, w)
    return lambda x: x - mean


def image_preprocessors(preprocessing, inputs: FeatureDescriptions, model: str) -> dict[str, list[Callable]]:
    """Input name -> the functions to apply, in order, to its ``(1, C, H, W)`` image."""
    images = [n for n, f in inputs.items() if f.kind == "image"]
    out: dict[str, list[Callable]] = {}
    for entry in preprocessing:
        name = entry.featureName or (images[0] if len(images) == 1 else "")
        where = f"{model}: preprocessing for input {name!r}"
        if name not in inputs or inputs[name].kind != "image":
            raise MLCParametersError(f"{where}: no image input of that name; the image inputs are {images}")
        feature = inputs[name]
        channels = 1 if feature.color_space.startswith("GRAYSCALE") else 3
        kind = entry.WhichOneof("preprocessor")
        if kind == "scaler":
            fn = _scaler(entry.scaler, feature.color_space)
        elif kind == "meanImage":
            fn = _mean_image(entry.meanImage, feature.shape, channels, where)
        else:
            continue
        out.setdefault(name, []).append(fn)
    return out
