"""Build the demo model that ships with mlc: ColorNet, a tiny image classifier.

It names the colour of the object in a 64x64 RGB image (red, yellow, green, cyan, blue,
magenta). It is trained here on synthetic images (a disc or box of one hue on a noisy grey
background) with torch, converted with coremltools (image input with scale 1/255, classifier
outputs, fp16 ML Program for iOS15), and written to mlc/data/ with a sample image.

    .venv/bin/python scripts/make_demo_model.py
"""

from __future__ import annotations

import colorsys
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mlc.io.atomic import atomic_write# noqa: E402
from mlc.io.proto import import_coremltools# noqa: E402

LABELS = ["red", "yellow", "green", "cyan", "blue", "magenta"]
SIZE = 64
DATA = os.path.join(os.path.dirname(__file__), "..", "mlc", "data")


def synthetic_image(rng: np.random.Generator, label: int) -> Image.Image:
    grey = rng.integers(60, 200)
    background = np.clip(rng.normal(grey, 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    hue = label / len(LABELS) + rng.uniform(-0.04, 0.04)
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    color = tuple(int(255 * c) for c in rgb)
    r = rng.integers(12, 26)
    cx, cy = rng.integers(r, SIZE - r, size=2)
    box = (int(cx - r), int(cy - r), int(cx + r), int(cy + r))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
    return image


def dataset(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), n)
    images = np.stack([np.asarray(synthetic_image(rng, int(y)), np.float32) / 255.0 for y in labels])
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)


class ColorNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(32, len(LABELS))

    def forward(self, x):
        return torch.softmax(self.head(self.features(x).mean(dim=(2, 3))), dim=-1)


def train() -> ColorNet:
    torch.manual_seed(0)
    x, y = dataset(3000, seed=0)
    model = ColorNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(600):
        idx = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    xv, yv = dataset(600, seed=1)
    with torch.no_grad():
        acc = (model(xv).argmax(-1) == yv).float().mean().item()
    print(f"validation accuracy {acc:.3f}")
    return model.eval()


def main() -> None:
    ct = import_coremltools()
    model = train()
    traced = torch.jit.trace(model, torch.rand(1, 3, SIZE, SIZE))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.ImageType(name="image", shape=(1, 3, SIZE, SIZE), scale=1 / 255.0, color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(LABELS),
        minimum_deployment_target=ct.target.iOS15,
        convert_to="mlprogram",
    )
    mlmodel.short_description = "ColorNet: names the colour of the object in a 64x64 image (mlc demo model)"
    mlmodel.input_description["image"] = "RGB image, 64x64"
    os.makedirs(DATA, exist_ok=True)
    with atomic_write(os.path.join(DATA, "ColorNet.mlpackage")) as tmp:
        mlmodel.save(tmp)
    sample = synthetic_image(np.random.default_rng(7), LABELS.index("red"))
    with atomic_write(os.path.join(DATA, "red_ball.png")) as tmp:
        sample.save(tmp, format="PNG")
    print(f"wrote {DATA}/ColorNet.mlpackage and red_ball.png")


if __name__ == "__main__":
    main()
