"""Image augmentations of an image classifier's training set, like Create ML's
``MLImageClassifier.ImageAugmentationOptions`` (``addNoise``, ``blur``, ``crop``, ``exposure``,
``flip``, ``rotation``).

Each augmentation turns one training image into one randomly parameterised copy of the same size,
always RGB. Inputs in another mode (grayscale ``L``, ``RGBA``, palette ``P``, ...) are converted with
``Image.convert("RGB")`` first; an alpha channel is dropped, not composited.

Randomness is reproducible: :func:`augmented_copies` gives every (seed, image index, augmentation)
its own generator, so a copy does not change when other augmentations are switched on or when
images are processed in another order.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy
from PIL import Image, ImageFilter

from mlc._errors import MLCParametersError

AUGMENTATIONS = ("noise", "blur", "crop", "exposure", "flip", "rotate")

# Bump when a transform or its parameter ranges change: it is part of every copy_key, so cached
# features of copies made by an older version are not reused.
AUGMENT_VERSION = 1

# Create ML's option names (ImageAugmentationOptions) and spellings users try, compared after
# lowercasing and dropping "_", "-" and spaces.
_ALIASES = {
    "noise": "noise",
    "addnoise": "noise",
    "blur": "blur",
    "crop": "crop",
    "exposure": "exposure",
    "flip": "flip",
    "rotate": "rotate",
    "rotation": "rotate",
}

# Transforms that ignore their random generator: their copies are the same for every seed.
_DETERMINISTIC = frozenset({"flip"})

NOISE_SIGMA_RANGE = (0.02, 0.05)  # standard deviation of the noise, as a fraction of 255
BLUR_RADIUS_RANGE = (0.005, 0.015)  # Gaussian radius, as a fraction of the shorter side
BLUR_MIN_RADIUS = 0.5  # pixels, so that small images are still visibly blurred
CROP_KEEP_RANGE = (0.6, 0.9)  # fraction of each side the crop keeps
EXPOSURE_EV_RANGE = (-1.0, 1.0)  # brightness is scaled by 2**ev
ROTATE_DEGREES_RANGE = (-30.0, 30.0)
ROTATE_FILL = (0, 0, 0)  # corners uncovered by a rotation are black


def canonical_name(name: str) -> str:
    """The name in :data:`AUGMENTATIONS` that ``name`` (ours or Create ML's, any case) stands for."""
    if not isinstance(name, str):
        raise MLCParametersError(
            f"An augmentation name must be a string, not {type(name).__name__} ({name!r}); "
            f"valid names: {', '.join(AUGMENTATIONS)}.")
    key = name.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    if key not in _ALIASES:
        raise MLCParametersError(
            f"Unknown augmentation {name!r}; valid names: {', '.join(AUGMENTATIONS)} "
            f"(Create ML's addNoise and rotation are accepted too).")
    return _ALIASES[key]


def parse_augmentations(value) -> tuple[str, ...]:
    """The augmentations that ``value`` asks for, deduplicated, in :data:`AUGMENTATIONS` order.

    ``value`` is None or empty (no augmentation), a comma-separated string such as
    ``"flip, rotate"``, or an iterable of names. Names are ours or Create ML's (``addNoise``,
    ``rotation``), in any case; empty entries (``"flip,"``) are ignored.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        entries = list(value)
    else:
        raise MLCParametersError(
            f"Augmentations must be a comma-separated string or a list of names, not "
            f"{type(value).__name__} ({value!r}); valid names: {', '.join(AUGMENTATIONS)}.")
    chosen = {canonical_name(entry) for entry in entries if not (isinstance(entry, str) and not entry.strip())}
    return tuple(name for name in AUGMENTATIONS if name in chosen)


def _as_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise MLCParametersError(f"Augmentations need a PIL image, not {type(image).__name__}.")
    return image if image.mode == "RGB" else image.convert("RGB")


def _from_float_pixels(pixels: numpy.ndarray) -> Image.Image:
    """An RGB image from float pixel values, rounded and clipped to [0, 255]."""
    return Image.fromarray(numpy.clip(numpy.rint(pixels), 0, 255).astype(numpy.uint8), "RGB")


def add_noise(image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
    """Create ML's ``addNoise``: independent Gaussian noise on every channel of every pixel,
    with a standard deviation drawn from :data:`NOISE_SIGMA_RANGE` (times 255), then clipped."""
    sigma = numpy.float32(rng.uniform(*NOISE_SIGMA_RANGE) * 255.0)
    pixels = numpy.asarray(image, dtype=numpy.float32)
    return _from_float_pixels(pixels + sigma * rng.standard_normal(pixels.shape, dtype=numpy.float32))


def blur(image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
    """Create ML's ``blur``: a Gaussian blur whose radius is a random fraction
    (:data:`BLUR_RADIUS_RANGE`) of the shorter side, at least :data:`BLUR_MIN_RADIUS` pixels."""
    radius = max(BLUR_MIN_RADIUS, rng.uniform(*BLUR_RADIUS_RANGE) * min(image.size))
    return image.filter(ImageFilter.GaussianBlur(radius))


def crop(image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
    """Create ML's ``crop``: a random window keeping a fraction (:data:`CROP_KEEP_RANGE`, the same
    for both sides, so the aspect ratio is kept) of the image, resized back to the original size."""
    width, height = image.size
    keep = rng.uniform(*CROP_KEEP_RANGE)
    crop_width, crop_height = max(1, round(width * keep)), max(1, round(height * keep))
    left = int(rng.integers(0, width - crop_width + 1))
    top = int(rng.integers(0, height - crop_height + 1))
    window = (left, top, left + crop_width, top + crop_height)
    return image.resize(image.size, Image.Resampling.BILINEAR, box=window)


def exposure(image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
    """Create ML's ``exposure``: every pixel value scaled by ``2**ev``, ``ev`` uniform in
    :data:`EXPOSURE_EV_RANGE` (one to two stops darker or brighter), then clipped."""
    factor = 2.0 ** rng.uniform(*EXPOSURE_EV_RANGE)
    return _from_float_pixels(numpy.asarray(image, dtype=numpy.float32) * numpy.float32(factor))


def flip(image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
    """Create ML's ``flip``: the horizontal mirror image (left and right swapped); not random."""
    del rng
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def rotate(image: Image.Image, rng: numpy.random.Generator) -> Image.Image:
    """Create ML's ``rotation``: a rotation about the centre by an angle uniform in
    :data:`ROTATE_DEGREES_RANGE`, keeping the size; corners left uncovered are filled with
    :data:`ROTATE_FILL` (black)."""
    degrees = rng.uniform(*ROTATE_DEGREES_RANGE)
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=ROTATE_FILL)


_TRANSFORMS = {
    "noise": add_noise,
    "blur": blur,
    "crop": crop,
    "exposure": exposure,
    "flip": flip,
    "rotate": rotate,
}


def augment(image: Image.Image, name: str, rng: numpy.random.Generator) -> Image.Image:
    """One randomly parameterised copy of ``image`` made by augmentation ``name``: RGB, same size."""
    transform = _TRANSFORMS[canonical_name(name)]
    return transform(_as_rgb(image), rng)


def _check_seed_part(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 0:
        raise MLCParametersError(f"The augmentation {what} must be a non-negative integer, not {value!r}.")
    return int(value)


def copy_rng(seed: int, index: int, name: str) -> numpy.random.Generator:
    """The generator of the copy of image ``index`` made by augmentation ``name``: it depends
    on nothing else, so copies do not change with the other augmentations or processing order."""
    position = AUGMENTATIONS.index(canonical_name(name))
    return numpy.random.default_rng([_check_seed_part(seed, "seed"), _check_seed_part(index, "image index"), position])


def augmented_copies(image: Image.Image, names, seed: int, index: int) -> list[tuple[str, Image.Image]]:
    """The augmented copies of training image number ``index``: one ``(name, copy)`` per
    augmentation in ``names`` (parsed by :func:`parse_augmentations`, so in
    :data:`AUGMENTATIONS` order), each drawn from :func:`copy_rng` of (seed, index, name)."""
    rgb = _as_rgb(image)
    return [(name, _TRANSFORMS[name](rgb, copy_rng(seed, index, name))) for name in parse_augmentations(names)]


def copy_key(name: str, seed: int) -> str:
    """A short stable string naming the transform of one copy, for a feature-cache key (which
    adds the image itself): the augmentation, :data:`AUGMENT_VERSION` and, for random
    augmentations, the seed; e.g. ``"rotate.v1.s42"`` or ``"flip.v1"``."""
    name = canonical_name(name)
    key = f"{name}.v{AUGMENT_VERSION}"
    return key if name in _DETERMINISTIC else f"{key}.s{_check_seed_part(seed, 'seed')}"
