"""Image inputs and outputs: declared color spaces, scale/bias preprocessing, size/mode checks."""

import numpy as np
import pytest
import torch
from PIL import Image

import mlc

H, W = 10, 12


class Conv(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _convert(ct, channels, color_layout, scale, bias):
    module = Conv(channels).eval()
    traced = torch.jit.trace(module, torch.rand(1, channels, H, W))
    image = ct.ImageType(name="image", shape=(1, channels, H, W), scale=scale, bias=bias, color_layout=color_layout)
    mlmodel = ct.convert(traced, inputs=[image], minimum_deployment_target=ct.target.iOS15,
                         compute_precision=ct.precision.FLOAT32)
    return module, mlc.load(mlmodel)


@pytest.mark.parametrize("layout", ["RGB", "BGR"])
def test_color_image_with_scale_and_bias(ct, layout):
    bias = [-0.5, 0.1, 0.25]
    module, model = _convert(ct, 3, getattr(ct.colorlayout, layout), 1 / 127.5, bias)
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = next(iter(model.predict({"image": Image.fromarray(pixels, "RGB")}).values()))
    channels = pixels.astype(np.float32).transpose(2, 0, 1)
    if layout == "BGR":
        channels = channels[::-1]
    x = channels / 127.5 + np.array(bias, np.float32)[:, None, None]
    with torch.no_grad():
        expected = module(torch.from_numpy(np.ascontiguousarray(x[None]))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_grayscale_image(ct):
    module, model = _convert(ct, 1, ct.colorlayout.GRAYSCALE, 1 / 255.0, [0.0])
    pixels = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    out = next(iter(model.predict({"image": Image.fromarray(pixels, "L")}).values()))
    with torch.no_grad():
        expected = module(torch.from_numpy(pixels.astype(np.float32)[None, None] / 255.0)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def rgb_model(ct):
    return _convert(ct, 3, ct.colorlayout.RGB, 1.0, [0.0, 0.0, 0.0])[1]


def test_image_description(rgb_model):
    assert str(rgb_model.input_description["image"]) == f"image: Image (RGB {W}x{H})"


def test_wrong_image_size_is_refused(rgb_model):
    with pytest.raises(mlc.MLCFeatureTypeError, match=rf"input 'image'.*image is 5x5.*expects {W}x{H}"):
        rgb_model.predict({"image": Image.new("RGB", (5, 5))})


def test_wrong_image_mode_is_refused(rgb_model):
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"image mode 'L' does not match the declared RGB"):
        rgb_model.predict({"image": Image.new("L", (W, H))})


def test_array_for_image_input_is_refused(rgb_model):
    with pytest.raises(mlc.MLCFeatureTypeError, match=r"expected a PIL image"):
        rgb_model.predict({"image": np.zeros((1, 3, H, W), np.float32)})


def test_predict_batch_takes_a_list_of_images(rgb_model):
    images = [Image.fromarray(np.full((H, W, 3), i * 20, np.uint8)) for i in range(3)]
    (batched,) = rgb_model.predict_batch({"image": images}).values()
    for i, im in enumerate(images):
        (single,) = rgb_model.predict({"image": im}).values()
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-4)


def test_image_output(ct):
    class Invert(torch.nn.Module):
        def forward(self, x):
            return 255.0 - x

    traced = torch.jit.trace(Invert(), torch.rand(1, 3, H, W))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.ImageType(name="image", shape=(1, 3, H, W), color_layout=ct.colorlayout.RGB)],
        outputs=[ct.ImageType(name="inverted", color_layout=ct.colorlayout.RGB)],
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,
    )
    model = mlc.load(mlmodel)
    pixels = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = model.predict({"image": Image.fromarray(pixels)})["inverted"]
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (W, H)
    np.testing.assert_array_equal(np.asarray(out), 255 - pixels)
