"""Image data for Create ML-style training: reading any image as RGB, and labelled image sets.

Sources follow Create ML's ``MLImageClassifier.DataSource``:

- ``labeledDirectories``: a folder whose subfolders are the labels; every file under a label
  subfolder (at any depth) is an image of that label. Files directly in the folder belong to no
  label and are ignored (with a warning); hidden files and folders (a name starting with ``.``,
  such as ``.DS_Store`` or macOS' ``._photo.jpg``) are ignored silently.
- ``filesByLabel``: a dict label -> list of image paths; here a label may also map to a folder,
  read like a label subfolder above.

Every file is decoded once, up front, to find the unreadable ones: they are left out, listed in
``ImageDataset.skipped`` and reported in one :class:`MLCDataWarning`, never raised, so one corrupt
download does not stop a training run.

Thresholds (warnings only, see :func:`image_source`): a label with fewer than
:data:`MIN_IMAGES_PER_LABEL` images (Apple's guidance for Create ML is "at least 10 images per
label"), and a set whose largest label has more than :data:`MAX_IMBALANCE_RATIO` times the images
of its smallest.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import stat
import sys
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlc._errors import MLCDataWarning, MLCIOError, MLCParametersError, MLCUpdateError

__all__ = [
    "ALPHA_BACKGROUND",
    "MAX_IMBALANCE_RATIO",
    "MIN_IMAGES_PER_LABEL",
    "ImageDataset",
    "LabeledImage",
    "MLCDataWarning",
    "image_source",
    "load_image",
]

ALPHA_BACKGROUND = (255, 255, 255)
"""Transparent images are composited over this colour (white, as a viewer shows them)."""

MIN_IMAGES_PER_LABEL = 10
"""Fewer images than this in a label gives a warning (Apple: "at least 10 images per label")."""

MAX_IMBALANCE_RATIO = 4
"""A largest label with more than this many times the images of the smallest gives a warning."""

MAX_LISTED = 20
"""How many files a warning lists by name before it says "and N more"."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


# --------------------------------------------------------------------------------------------
# One image


class _Unreadable(Exception):
    """Why a file cannot be read as an image (internal; becomes MLCIOError or a skipped entry)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_image(path) -> Image.Image:
    """Read one image file as an RGB ``PIL.Image.Image`` of the size it is displayed at.

    Any format Pillow opens (PNG, JPEG, BMP, GIF and animated WebP/PNG: the first frame, TIFF,
    WebP, PPM, ICO: its largest icon, ...). The EXIF orientation is applied, as a photo viewer and
    Create ML do, so a portrait photo stored sideways comes back upright (a broken EXIF block is
    ignored: the pixels are still good). Colour modes:

    - ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``: Pillow's conversion to RGB; ``LAB``: through
      Pillow's colour management (CIE L*a*b* to sRGB).
    - any transparency (``RGBA``, ``LA``, ``PA``, a ``P``/``L``/``RGB`` image with a transparent
      colour): composited over :data:`ALPHA_BACKGROUND` (white). Dropping alpha instead would show
      whatever colour the file keeps under transparent pixels, often black or garbage.
    - ``I;16`` (16-bit): scaled to 8 bits, ``v / 257`` rounded (65535 -> 255), never clipped.
      ``I`` (32-bit integer) is read the same way when its values fit 16 bits; otherwise its range
      is stretched linearly onto 0..255.
    - ``F`` (float): values within [0, 1] are multiplied by 255, values within [0, 255] are used as
      they are, other ranges are stretched onto 0..255; NaN and infinities count as 0.

    Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) stays in force.

    Raises ``MLCIOError`` naming the path and the reason when the file is missing, a folder,
    empty, not an image, truncated or corrupt, or over the decompression-bomb limit.
    """
    path = _as_path(path, "image path")
    try:
        return _read_rgb(path)
    except _Unreadable as e:
        raise MLCIOError(f"cannot read image {path!r}: {e.reason}") from e


def _as_path(path, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise MLCParametersError(f"{what}: expected a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise MLCParametersError(f"{what}: expected a str path, got {type(path).__name__}")
    return path


def _read_rgb(path: str) -> Image.Image:
    _check_regular_nonempty_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            upright = _exif_upright(image)
            return _to_rgb(upright)
    except _Unreadable:
        raise
    except Image.DecompressionBombError as e:
        raise _Unreadable(f"over Pillow's decompression-bomb limit ({e})") from e
    except UnidentifiedImageError as e:
        raise _Unreadable("not an image (Pillow does not recognise its format)") from e
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise _Unreadable(f"corrupt or truncated image data ({type(e).__name__}: {e})") from e


def _check_regular_nonempty_file(path: str) -> None:
    """Give a plain reason for the common cases before Pillow sees the file (and never open a
    FIFO or device, which could block)."""
    try:
        info = os.stat(path)
    except FileNotFoundError as e:
        raise _Unreadable("no such file") from e
    except OSError as e:
        raise _Unreadable(f"cannot access the file ({e.strerror or e})") from e
    if stat.S_ISDIR(info.st_mode):
        raise _Unreadable("a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise _Unreadable("not a regular file")
    if info.st_size == 0:
        raise _Unreadable("empty file (0 bytes)")


def _exif_upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF Orientation tag says (a copy when there is none)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: the pixels are fine, keep them as stored
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _gray_to_rgb(_integer_to_8bit(np.asarray(image), sixteen_bit=mode != "I"))
    if mode == "F":
        return _gray_to_rgb(_float_to_8bit(np.asarray(image)))
    if mode == "LAB":
        return _lab_to_rgb(image)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _over_background(image.convert("RGBA"))
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise _Unreadable(f"colour mode {mode} cannot be converted to RGB ({e})") from e


def _integer_to_8bit(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    values = values.astype(np.int64)
    if sixteen_bit or (values.min(initial=0) >= 0 and values.max(initial=0) <= 65535):
        return np.rint(values / 257.0).astype(np.uint8)
    return _stretch_to_8bit(values.astype(np.float64))


def _float_to_8bit(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = values.min(initial=0.0), values.max(initial=0.0)
    if low >= 0.0 and high <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(values).astype(np.uint8)
    return _stretch_to_8bit(values)


def _stretch_to_8bit(values: np.ndarray) -> np.ndarray:
    """Map the image's own range linearly onto 0..255 (a flat image becomes black)."""
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).convert("RGB")


def _over_background(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    try:
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(image, transform)
    except Exception as e:  # Pillow built without littlecms
        raise _Unreadable(f"a CIE L*a*b* image, and Pillow's colour management is unavailable ({e})") from e


def _unreadable_reason(path: str) -> str | None:
    """None if ``path`` decodes as an image, else why not."""
    try:
        _read_rgb(path)
    except _Unreadable as e:
        return e.reason
    return None


# --------------------------------------------------------------------------------------------
# Labelled sets


@dataclasses.dataclass(frozen=True)
class LabeledImage:
    """One image file and its label."""

    path: str
    label: str


@dataclasses.dataclass
class ImageDataset:
    """Readable labelled images, ordered by label then path, and the files left out.

    ``items`` is sorted on construction, so two datasets with the same files compare equal and
    iterate in the same order whatever order the files were listed in.
    """

    items: list[LabeledImage]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.items = sorted(self.items, key=lambda item: (item.label, item.path))
        self.skipped = list(self.skipped)

    @property
    def labels(self) -> list[str]:
        """The labels that have at least one image, sorted."""
        return sorted({item.label for item in self.items})

    @property
    def paths(self) -> list[str]:
        return [item.path for item in self.items]

    @property
    def targets(self) -> list[str]:
        return [item.label for item in self.items]

    def counts(self) -> dict[str, int]:
        """Images per label, in label order."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.label] = counts.get(item.label, 0) + 1
        return dict(sorted(counts.items()))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[LabeledImage]:
        return iter(self.items)

    def __repr__(self) -> str:
        counts = ", ".join(f"{label!r}: {n}" for label, n in self.counts().items())
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"ImageDataset({len(self.items)} images; {counts}{skipped})"

    def split(self, fraction: float, seed: int) -> tuple["ImageDataset", "ImageDataset"]:
        """Split into (first, second), stratified by label, ``fraction`` of each label in second.

        For each label in sorted order, one ``numpy.random.default_rng(seed)`` draws a permutation
        of that label's images (in their path order); the first ``round(fraction * n)`` of it go
        to the second part, clamped so that a label with 2 or more images keeps at least one image
        on each side. A label with a single image stays in the first part. Both parts keep the
        label-then-path order; ``skipped`` stays with the first part. ``0 < fraction < 1``.
        """
        _check_fraction(fraction)
        rng = np.random.default_rng(seed)
        in_second: set[int] = set()
        for indices in _indices_by_label(self.items).values():
            size = _second_part_size(len(indices), fraction)
            in_second.update(indices[j] for j in rng.permutation(len(indices))[:size])
        first = [item for i, item in enumerate(self.items) if i not in in_second]
        second = [item for i, item in enumerate(self.items) if i in in_second]
        return ImageDataset(first, list(self.skipped)), ImageDataset(second, [])


def _check_fraction(fraction) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise MLCParametersError(f"split fraction must be a number between 0 and 1 (exclusive), got {fraction!r}")
    if not 0.0 < float(fraction) < 1.0:
        raise MLCParametersError(f"split fraction must be between 0 and 1 (exclusive), got {fraction!r}")


def _indices_by_label(items: list[LabeledImage]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.label, []).append(i)
    return dict(sorted(groups.items()))


def _second_part_size(n: int, fraction: float) -> int:
    if n < 2:
        return 0
    return min(max(round(fraction * n), 1), n - 1)


# --------------------------------------------------------------------------------------------
# Sources


def image_source(source, *, what: str = "training data", min_classes: int = 2, check_balance: bool = True) -> ImageDataset:
    """Read a labelled image source (Create ML's ``labeledDirectories`` or ``filesByLabel``).

    ``source`` is a folder of label subfolders (str or os.PathLike), a dict label -> list of image
    paths or label -> folder, or an :class:`ImageDataset` (returned as it is, unchecked). Every
    file is decoded once to check it; unreadable files go to ``skipped`` and one
    :class:`MLCDataWarning` lists them with their reasons.

    Errors name ``what`` (e.g. "training data", "validation data") and the path:
    ``MLCIOError`` for a missing folder or a file given as the folder; ``MLCParametersError`` for
    a malformed source (no label subfolders, an empty dict, a label that is not a non-empty str,
    a dict value that is neither a list of paths nor a folder, an unknown source type);
    ``MLCUpdateError`` for data that cannot train (no readable image, fewer than ``min_classes``
    labels with images).

    With ``check_balance``, an :class:`MLCDataWarning` names the labels with fewer than
    :data:`MIN_IMAGES_PER_LABEL` images (a label whose images are all unreadable is listed with 0),
    and another names the labels when the largest has more than :data:`MAX_IMBALANCE_RATIO` times
    the images of the smallest.
    """
    if isinstance(source, ImageDataset):
        return source
    if isinstance(source, Mapping):
        files_by_label = _files_by_label(source, what)
    elif isinstance(source, (str, os.PathLike)):
        files_by_label = _labeled_directories(_as_path(source, what), what)
    else:
        raise MLCParametersError(
            f"{what}: expected a folder of label subfolders, a dict label -> image paths (or folder), "
            f"or an ImageDataset; got {type(source).__name__}"
        )
    where = f" in {os.fspath(source)!r}" if isinstance(source, (str, os.PathLike)) else ""
    dataset = _checked_dataset(files_by_label)
    if dataset.skipped:
        _warn_skipped(dataset.skipped, where, what)
    _require_trainable(dataset, files_by_label, where, what, min_classes)
    if check_balance:
        _warn_about_balance(dataset, files_by_label, what)
    return dataset


def _labeled_directories(root: str, what: str) -> dict[str, list[str]]:
    """Create ML's labeledDirectories: label subfolder name -> the non-hidden files under it."""
    _require_folder(root, what)
    label_folders, root_files = _scan_root(root)
    if root_files:
        _warn_root_files(root, root_files, what)
    if not label_folders:
        raise MLCParametersError(
            f"{what}: {root!r} has no label subfolders; put each label's images in a subfolder named "
            f"after the label (e.g. {os.path.join(root, 'cat', 'photo.jpg')!r})"
        )
    return {label: _files_under(folder) for label, folder in label_folders.items()}


def _require_folder(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise MLCIOError(f"{what}: the folder {path!r} does not exist")
    if not os.path.isdir(path):
        raise MLCIOError(f"{what}: {path!r} is a file, not a folder of label subfolders")


def _scan_root(root: str) -> tuple[dict[str, str], list[str]]:
    """(label -> subfolder, files directly in root), hidden entries left out, both sorted."""
    label_folders: dict[str, str] = {}
    root_files: list[str] = []
    with os.scandir(root) as entries:
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if entry.is_dir():  # follows symlinks: a linked label folder counts
                label_folders[entry.name] = entry.path
            else:
                root_files.append(entry.path)
    return dict(sorted(label_folders.items())), sorted(root_files)


def _files_under(folder: str) -> list[str]:
    """Every non-hidden file under ``folder``, at any depth (symlinked folders followed once)."""
    files: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        files.extend(os.path.join(dirpath, f) for f in filenames if not _is_hidden(f))
    return sorted(files)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _files_by_label(mapping: Mapping, what: str) -> dict[str, list[str]]:
    """Create ML's filesByLabel: label -> list of paths, or label -> folder of images."""
    if not mapping:
        raise MLCParametersError(f"{what}: the dict of label -> images is empty")
    files_by_label: dict[str, list[str]] = {}
    for label, value in mapping.items():
        if not isinstance(label, str) or not label:
            raise MLCParametersError(f"{what}: every label must be a non-empty str, got {label!r} ({type(label).__name__})")
        files_by_label[label] = _label_files(label, value, what)
    return dict(sorted(files_by_label.items()))


def _label_files(label: str, value, what: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return _label_folder_files(label, _as_path(value, f"{what}: label {label!r}"), what)
    if isinstance(value, (list, tuple)):
        return sorted(_listed_path(label, path, what) for path in value)
    raise MLCParametersError(f"{what}: label {label!r} maps to a {type(value).__name__}; give a list of image paths or a folder")


def _label_folder_files(label: str, folder: str, what: str) -> list[str]:
    if not os.path.exists(folder):
        raise MLCIOError(f"{what}: the folder {folder!r} of label {label!r} does not exist")
    if not os.path.isdir(folder):
        raise MLCParametersError(
            f"{what}: label {label!r} maps to {folder!r}, a file; give a list of image paths (e.g. [{folder!r}]) or a folder"
        )
    return _files_under(folder)


def _listed_path(label: str, path, what: str) -> str:
    if isinstance(path, (str, os.PathLike)) and isinstance(os.fspath(path), str):
        return os.fspath(path)
    raise MLCParametersError(f"{what}: label {label!r} lists {path!r} ({type(path).__name__}), not a path")


def _checked_dataset(files_by_label: dict[str, list[str]]) -> ImageDataset:
    """Decode every file once (in threads: Pillow's decoders release the GIL) and keep the
    readable ones; the others become ``skipped`` entries and one warning."""
    unique_paths = list(dict.fromkeys(p for paths in files_by_label.values() for p in paths))
    reasons = dict(zip(unique_paths, _map_in_threads(_unreadable_reason, unique_paths)))
    items = [LabeledImage(p, label) for label, paths in files_by_label.items() for p in paths if reasons[p] is None]
    skipped = sorted((p, r) for p, r in reasons.items() if r is not None)
    return ImageDataset(items, skipped)


def _map_in_threads(function, values: list) -> list:
    workers = min(8, os.cpu_count() or 1, max(1, len(values)))
    if workers == 1:
        return [function(v) for v in values]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, values))


def _require_trainable(dataset: ImageDataset, files_by_label, where: str, what: str, min_classes: int) -> None:
    if not dataset.items:
        n_files = sum(len(paths) for paths in files_by_label.values())
        found = f"none of its {n_files} file(s) could be read" if n_files else "its label folders hold no files"
        raise MLCUpdateError(f"{what}: no readable image{where}: {found}")
    labels = dataset.labels
    if len(labels) < min_classes:
        raise MLCUpdateError(
            f"{what}{where}: an image classifier needs at least {min_classes} labels with images; "
            f"found {len(labels)}: {', '.join(map(repr, labels))}"
        )


def _warn_skipped(skipped: list[tuple[str, str]], where: str, what: str) -> None:
    _warn(
        f"{what}: {len(skipped)} file(s){where} could not be read as images and are left out:\n"
        + _listing([f"{path}: {reason}" for path, reason in skipped], " (the dataset's .skipped lists them all)")
    )


def _warn_root_files(root: str, root_files: list[str], what: str) -> None:
    names = [os.path.basename(p) for p in root_files]
    _warn(
        f"{what}: {len(names)} file(s) directly in {root!r} are ignored: an image's label is the name of "
        f"the subfolder it is in, and these are in no subfolder:\n" + _listing(names)
    )


def _warn_about_balance(dataset: ImageDataset, files_by_label: dict[str, list[str]], what: str) -> None:
    counts = {label: 0 for label in files_by_label} | dataset.counts()
    small = {label: n for label, n in sorted(counts.items()) if n < MIN_IMAGES_PER_LABEL}
    if small:
        listed = ", ".join(f"{label!r} ({n}{': no readable image, left out' if n == 0 else ''})" for label, n in small.items())
        _warn(
            f"{what}: label(s) with fewer than {MIN_IMAGES_PER_LABEL} images: {listed}. "
            f"Use at least {MIN_IMAGES_PER_LABEL} images per label (more is better)."
        )
    present = dataset.counts()
    largest, smallest = max(present.values()), min(present.values())
    if largest > MAX_IMBALANCE_RATIO * smallest:
        big = [label for label, n in present.items() if n == largest]
        few = {label: n for label, n in present.items() if n * MAX_IMBALANCE_RATIO < largest}
        _warn(
            f"{what} is unbalanced: {', '.join(map(repr, big))} {'has' if len(big) == 1 else 'each have'} {largest} images, more than "
            f"{MAX_IMBALANCE_RATIO} times as many as "
            + ", ".join(f"{label!r} ({n})" for label, n in few.items())
            + "; a classifier trained on it favours the large labels. Balance the number of images per label."
        )


def _listing(lines: list[str], where_all: str = "") -> str:
    """One indented line each, the first MAX_LISTED of them."""
    shown = [f"  {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  ... and {len(lines) - MAX_LISTED} more{where_all}")
    return "\n".join(shown)


def _warn(message: str) -> None:
    warnings.warn(message, MLCDataWarning, stacklevel=_first_frame_outside_mlc())


def _first_frame_outside_mlc() -> int:
    """The stacklevel, counted from ``_warn``, of the first caller outside the mlc package, so a
    warning points at the user's line whichever mlc function read the data."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
