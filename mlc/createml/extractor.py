"""The feature extractor of an image classifier: a Core ML model and the name of its feature output.

The default is EfficientNet-Lite0 pretrained on ImageNet (``mlc/data/EfficientNetLite0Features.mlmodel``,
made by ``scripts/make_feature_extractor.py``): a 224x224 RGB image in, its 1280 pooled features
out. Any Core ML model with one image input can take its place, with the name of a multiarray
output (optional when it has just one). Images are fitted to the extractor's input (converted to
its colour space and resized, ``mlc.features.fit_image``), run through mlc in batches of a fixed
size on the chosen device (the last batch padded, so one compile serves them all), and their
features cached (``mlc.createml.cache``) under the extractor's fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from mlc._errors import MLCParametersError
from mlc.features import fit_image
from mlc.model import Model, load

DEFAULT_EXTRACTOR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "EfficientNetLite0Features.mlmodel")
DEFAULT_INPUT = "image"
DEFAULT_OUTPUT = "features"
DEFAULT_SIZE = 224
DEFAULT_BATCH = 16


def _image_input(model) -> Any:
    images = [f for f in model.input_description.values() if f.kind == "image"]
    others = [n for n, f in model.input_description.items() if f.kind != "image"]
    if len(images) != 1 or others:
        raise MLCParametersError(
            f"{model.name}: a feature extractor takes exactly one input, an image; this model's inputs are "
            f"{[f'{n} ({f.type_string()})' for n, f in model.input_description.items()]}"
        )
    return images[0]


def _feature_output(model, output: str | None) -> str:
    outputs = model.output_description
    if output is None:
        if len(outputs) != 1:
            raise MLCParametersError(
                f"{model.name}: the extractor has {len(outputs)} outputs {list(outputs)}; name the one holding the features (output=...)"
            )
        output = next(iter(outputs))
    if output not in outputs:
        raise MLCParametersError(f"{model.name}: the extractor has no output {output!r}; its outputs are {list(outputs)}")
    if outputs[output].kind != "multiArray":
        raise MLCParametersError(
            f"{model.name}: output {output!r} is {outputs[output].type_string()}; the features must be a multiarray"
        )
    return output


def fingerprint(model, output: str) -> str:
    """A digest of the model's specification, its weights as loaded, and the output name:
    features cached under it are valid exactly for this extractor."""
    h = hashlib.sha256()
    h.update(model.spec.SerializeToString(deterministic=True))
    for key in sorted(model.params):
        h.update(key.encode())
        h.update(np.ascontiguousarray(np.asarray(model.params[key])).tobytes())
    h.update(output.encode())
    return h.hexdigest()[:32]


class FeatureExtractor:
    """A Core ML model turning one image into a feature vector (``extract``)."""

    def __init__(self, model: Any = None, output: str | None = None, *, device: Any = None, batch_size: int = DEFAULT_BATCH):
        if model is None:
            model, output = load(DEFAULT_EXTRACTOR, device=device), output or DEFAULT_OUTPUT
        elif not isinstance(model, Model):
            model = load(model, device=device)
        self.model = model
        self.image = _image_input(model)
        self.output = _feature_output(model, output)
        if batch_size < 1:
            raise MLCParametersError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.fingerprint = fingerprint(model, self.output)

    @property
    def is_default(self) -> bool:
        return os.path.abspath(self.model.name) == os.path.abspath(DEFAULT_EXTRACTOR)

    @property
    def input_name(self) -> str:
        return self.image.name

    def fit(self, image):
        """``image`` (any PIL image) as the extractor's input takes it: colour space and size."""
        return fit_image(image, self.image)

    def extract(self, images: list, on_batch=None) -> np.ndarray:
        """Features of fitted images, ``(n, d)`` float32, computed in fixed-size batches.
        ``on_batch(k)`` is told how many images each batch held (for a progress bar)."""
        if not images:
            return np.zeros((0, 0), np.float32)
        size = min(self.batch_size, 1 << (len(images) - 1).bit_length())
        rows = []
        for start in range(0, len(images), size):
            chunk = list(images[start : start + size])
            real = len(chunk)
            chunk += [chunk[-1]] * (size - real)
            out = self.model.predict_batch({self.input_name: chunk})[self.output]
            rows.append(np.asarray(out, np.float32).reshape(size, -1)[:real])
            if on_batch is not None:
                on_batch(real)
        return np.concatenate(rows)
