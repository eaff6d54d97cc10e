"""Labelled image folders for tests, notebooks and benchmarks, generated on the spot (no downloads).

- :func:`write_shapes_dataset`: filled shapes (circle, square, triangle, ...) of random colour,
  position, size and rotation on noisy textured backgrounds; the label is the shape.
- :func:`write_digits_dataset`: scikit-learn's bundled handwritten digits (``load_digits``: 1797
  8x8 images of 0..9), upscaled, dark ink on a light background.
- :func:`write_corrupt_files`: files that look like images by name but are not readable.

Everything is deterministic: the same arguments write byte-identical files. Each generated image
draws from its own ``numpy.random.default_rng([seed, ...])``, so asking for more images per class
adds files without changing the existing ones.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "write_corrupt_files", "write_digits_dataset", "write_shapes_dataset"]

_SUPERSAMPLE = 4  # shapes are drawn at 4x and downsampled, for smooth edges


def _regular_polygon(sides: int, start_angle: float = 0.0):
    def vertices(angle: float) -> list[tuple[float, float]]:
        return [
            (math.cos(angle + start_angle + 2 * math.pi * k / sides), math.sin(angle + start_angle + 2 * math.pi * k / sides))
            for k in range(sides)
        ]

    return vertices


def _star_vertices(angle: float) -> list[tuple[float, float]]:
    radii = [1.0, 0.45] * 5
    return [(r * math.cos(angle + math.pi * k / 5), r * math.sin(angle + math.pi * k / 5)) for k, r in enumerate(radii)]


SHAPES = {
    "circle": None,  # drawn as an ellipse; rotation does not apply
    "square": _regular_polygon(4, math.pi / 4),
    "triangle": _regular_polygon(3, -math.pi / 2),
    "pentagon": _regular_polygon(5, -math.pi / 2),
    "hexagon": _regular_polygon(6),
    "star": _star_vertices,
}
"""The shapes :func:`write_shapes_dataset` can draw: vertices on the unit circle at a rotation."""


def write_shapes_dataset(root, *, per_class: int = 12, size: int = 64, seed: int = 0, classes=("circle", "square", "triangle")) -> str:
    """Write ``root/<class>/<class>_<i>.png`` (``i`` = 0 .. per_class-1), ``size`` x ``size`` RGB.

    Each image is one filled shape of random colour, centre, radius (22%..38% of the size) and
    rotation over a random background (a colour gradient with pixel noise and a few faint lines).
    The shape's colour is kept far from the background's, so the class is clear to a pretrained
    CNN. ``classes`` are names from :data:`SHAPES`. Returns ``root``.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; the shapes are {sorted(SHAPES)}")
    root = os.fspath(root)
    for class_index, name in enumerate(classes):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, class_index, i])
            _shape_image(name, size, rng).save(os.path.join(folder, f"{name}_{i}.png"))
    return root


def _shape_image(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    background = _noisy_background(size, rng)
    colour = _contrasting_colour(np.asarray(background).reshape(-1, 3).mean(axis=0), rng)
    mask = _shape_mask(name, size, rng)
    return Image.composite(Image.new("RGB", (size, size), colour), background, mask)


def _noisy_background(size: int, rng: np.random.Generator) -> Image.Image:
    (top_left, top_right), (bottom_left, bottom_right) = rng.uniform(0, 255, size=(2, 2, 3))
    x = np.linspace(0.0, 1.0, size)[None, :, None]
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    gradient = (top_left * (1 - x) + top_right * x) * (1 - y) + (bottom_left * (1 - x) + bottom_right * x) * y
    noisy = gradient + rng.normal(0.0, 18.0, size=(size, size, 3))
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2)]
        shade = tuple(int(v) for v in np.clip(gradient.mean(axis=(0, 1)) + rng.normal(0, 30, 3), 0, 255))
        draw.line(points, fill=shade, width=max(1, size // 32))
    return image


def _contrasting_colour(background_mean: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour at least ~150 away (Euclidean, 0..255 RGB) from the background's mean."""
    colour = rng.integers(0, 256, 3)
    for _ in range(100):
        if np.linalg.norm(colour - background_mean) >= 150:
            break
        colour = rng.integers(0, 256, 3)
    else:  # no luck: the opposite corner of the colour cube is always far enough
        colour = np.where(background_mean < 128, 255, 0)
    return tuple(int(c) for c in colour)


def _shape_mask(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    radius = rng.uniform(0.22, 0.38) * size
    margin = radius + 1
    cx, cy = rng.uniform(margin, size - margin, 2)
    angle = rng.uniform(0.0, 2 * math.pi)
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, radius = cx * _SUPERSAMPLE, cy * _SUPERSAMPLE, radius * _SUPERSAMPLE
    if SHAPES[name] is None:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        draw.polygon([(cx + radius * x, cy + radius * y) for x, y in SHAPES[name](angle)], fill=255)
    return mask.resize((size, size), Image.Resampling.BOX)


def write_digits_dataset(root, *, fraction_test: float | None = None, seed: int = 0, size: int = 32, limit_per_class: int | None = None):
    """Write scikit-learn's bundled digits as ``root/<digit>/<i>.png``; ``i`` is the image's index
    in ``sklearn.datasets.load_digits()``.

    Each 8x8 image (values 0..16) becomes ``255 - min(16 v, 255)`` (dark ink on light paper),
    upscaled bilinearly to ``size`` x ``size``, saved as 8-bit grayscale PNG. ``limit_per_class``
    keeps only the first N images of each digit (dataset order).

    With ``fraction_test`` (0 < f < 1), each digit's images are split by a seeded permutation
    (``numpy.random.default_rng(seed)``, digits in order 0..9): ``round(f * n)`` of them, at least
    1 and at most n-1, go to ``root/test/<digit>/``, the others to ``root/train/<digit>/``;
    returns ``(train_root, test_root)``. Without it, returns ``root``.
    """
    from sklearn.datasets import load_digits

    if fraction_test is not None and not 0.0 < fraction_test < 1.0:
        raise ValueError(f"fraction_test must be between 0 and 1 (exclusive), got {fraction_test!r}")
    digits = load_digits()
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    train_root, test_root = os.path.join(root, "train"), os.path.join(root, "test")
    for digit in range(10):
        indices = np.flatnonzero(digits.target == digit)[:limit_per_class]
        if fraction_test is None:
            _write_digits(digits.images, indices, os.path.join(root, str(digit)), size)
            continue
        n_test = min(max(round(fraction_test * len(indices)), 1), len(indices) - 1)
        test = np.sort(indices[rng.permutation(len(indices))[:n_test]])
        train = np.setdiff1d(indices, test)
        _write_digits(digits.images, train, os.path.join(train_root, str(digit)), size)
        _write_digits(digits.images, test, os.path.join(test_root, str(digit)), size)
    return root if fraction_test is None else (train_root, test_root)


def _write_digits(images: np.ndarray, indices: np.ndarray, folder: str, size: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i in indices:
        _digit_image(images[i], size).save(os.path.join(folder, f"{int(i)}.png"))


def _digit_image(values: np.ndarray, size: int) -> Image.Image:
    ink = np.clip(np.rint(values * 16.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(255 - ink)
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)


def write_corrupt_files(folder) -> list[str]:
    """Write files named like images that no reader can decode; returns their paths:
    ``empty.png`` (0 bytes), ``truncated.jpg`` (the first half of a real JPEG),
    ``truncated.png`` (the first half of a real PNG), ``random_bytes.jpg`` (seeded random bytes)
    and ``not_an_image.png`` (a line of text)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    jpeg, png = _encoded(noise, "JPEG"), _encoded(noise, "PNG")
    contents = {
        "empty.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "random_bytes.jpg": np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "not_an_image.png": b"this is a text file, not an image\n",
    }
    paths = []
    for name, data in contents.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()
