"""``ImageClassifier``: Create ML's ``MLImageClassifier``, on any machine.

Training follows Create ML's recipe: every image goes through a pretrained feature extractor
(``mlc.createml.extractor``; Create ML's is its "scene print"), the training images' augmented
copies too (``mlc.createml.augment``), and a multinomial logistic regression is fitted on the
features for ``max_iterations`` solver iterations (``mlc.createml.logistic``), scored on a
validation set after each. Features are cached (``mlc.createml.cache``), so training again on
the same images with other parameters does not extract them again.

    classifier = ImageClassifier("Animals/train", augmentations="flip,rotate")
    print(classifier.evaluation(on="Animals/test"))
    classifier.write("AnimalClassifier.mlpackage", author="me")
"""

from __future__ import annotations

import getpass
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlc._errors import MLCDataWarning, MLCIOError, MLCParametersError
from mlc._version import __version__
from mlc.createml import augment as A
from mlc.createml import export as E
from mlc.createml.cache import FeatureCache, file_digest
from mlc.createml.data import ImageDataset, LabeledImage, image_source, load_image
from mlc.createml.extractor import FeatureExtractor
from mlc.createml.logistic import IterationStats, SoftmaxRegression, fit_softmax_regression
from mlc.createml.metrics import ClassifierMetrics
from mlc.io.atomic import atomic_write
from mlc.train.task import show_progress_default

AUTO_VALIDATION_FRACTION = 0.1
AUTO_VALIDATION_MIN_IMAGES = 50  # below this, automatic validation keeps every image for training
_CHUNK_BATCHES = 4  # images decoded and augmented ahead of the extractor, in extractor batches


def _validation_choice(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise MLCParametersError(f"validation must be 'auto', None, a fraction in (0, 1) or a data source, got {value!r}")
    if isinstance(value, (int, float)):
        if not 0.0 < float(value) < 1.0:
            raise MLCParametersError(f"a validation fraction must lie strictly between 0 and 1, got {value!r}")
        return float(value)
    return value  # a data source: checked by image_source


class ImageClassifier:
    """Train an image classifier from labelled images (Create ML's ``MLImageClassifier``).

    ``training_data``: a folder of label subfolders, or a dict label -> image files (or a
    folder), as ``mlc.createml.data.image_source`` reads them.

    Parameters, named as Create ML's ``ModelParameters``:

    - ``max_iterations`` (25): iterations of the solver (L-BFGS by default).
    - ``augmentations``: any of ``noise, blur, crop, exposure, flip, rotate`` (a list or a
      comma-separated string); each adds one transformed copy of every training image.
    - ``validation``: ``"auto"`` (10% of each label held out when there are at least 50
      training images, else none), a fraction, a separate data source, or ``None``.
    - ``seed`` (0): the validation split and the augmentations' randomness.
    - ``feature_extractor``: a Core ML model (path or ``mlc.Model``) with one image input, and
      ``feature_output``, the name of its feature output; default EfficientNet-Lite0.
    - ``device``: where features are extracted (``"cpu"``, ``"gpu"``, ...), ``batch_size`` images at a time.
    - ``l2`` (1e-3): the L2 penalty on the weights; ``solver``: ``"lbfgs"`` (default) or ``"adam"``.
    - ``cache_dir``: the feature cache's root (default ``mlc.createml.cache.user_cache_dir()``;
      ``False``: memory only). ``show_progress``: progress bars (default: on a terminal).
    """

    def __init__(
        self,
        training_data: Any,
        *,
        max_iterations: int = 25,
        augmentations: Any = None,
        validation: Any = "auto",
        seed: int = 0,
        feature_extractor: Any = None,
        feature_output: str | None = None,
        device: Any = None,
        batch_size: int = 16,
        cache_dir: Any = None,
        l2: float = 1e-3,
        solver: str = "lbfgs",
        show_progress: bool | None = None,
    ):
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
            raise MLCParametersError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise MLCParametersError(f"seed must be an integer, got {seed!r}")
        self.max_iterations = int(max_iterations)
        self.augmentations = A.parse_augmentations(augmentations)
        self.seed = int(seed)
        self.show_progress = show_progress_default() if show_progress is None else bool(show_progress)
        validation = _validation_choice(validation)
        self.extractor = (
            feature_extractor
            if isinstance(feature_extractor, FeatureExtractor)
            else FeatureExtractor(feature_extractor, feature_output, device=device, batch_size=batch_size)
        )
        self.cache = FeatureCache(self.extractor.fingerprint, cache_dir)
        data = image_source(training_data, what="training data")
        self.training_data, self.validation_data = self._split(data, validation)
        # a split keeps the source's skipped files with its first part; a separate source has its own
        self.skipped_files = list(data.skipped) + (list(self.validation_data.skipped) if self.validation_data else [])
        self.labels: list[str] = list(self.training_data.labels)
        self._fit(l2, solver)

    # -- data ---------------------------------------------------------------------------------
    def _split(self, data: ImageDataset, validation: Any) -> tuple[ImageDataset, ImageDataset | None]:
        if validation is None:
            return data, None
        if validation == "auto":
            if len(data) < AUTO_VALIDATION_MIN_IMAGES:
                return data, None
            validation = AUTO_VALIDATION_FRACTION
        if isinstance(validation, float):
            train, held_out = data.split(validation, self.seed)
            return train, (held_out if len(held_out) else None)
        return data, image_source(validation, what="validation data", min_classes=1, check_balance=False)

    def _index(self, labels: list[str], where: str) -> np.ndarray:
        position = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted(set(labels) - set(position))
        if unknown:
            warnings.warn(f"{where}: label(s) {unknown} do not occur in the training data; their images count as errors", MLCDataWarning, stacklevel=3)
        return np.asarray([position.get(label, -1) for label in labels], np.int32)

    # -- features -----------------------------------------------------------------------------
    def _progress(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="image", disable=not self.show_progress or total == 0, leave=False)

    def _prepare(self, path: str, digest: str, names: list[str | None]) -> list:
        """The fitted original (``None`` in ``names``) and augmented copies of one image file."""
        fitted = self.extractor.fit(load_image(path))
        copies = dict(A.augmented_copies(fitted, [n for n in names if n is not None], self.seed, int(digest[:12], 16)))
        return [fitted if name is None else copies[name] for name in names]

    def _key(self, digest: str, name: str | None) -> str:
        return digest if name is None else f"{digest}-{A.copy_key(name, self.seed)}"

    def features(self, paths: list[str], augmentations: tuple[str, ...] = ()) -> np.ndarray:
        """Features of the images at ``paths`` (rows in order), then of each augmentation's copies
        (one block of ``len(paths)`` rows per name in ``augmentations``), from the cache or extracted."""
        names: list[str | None] = [None, *augmentations]
        with ThreadPoolExecutor() as pool:
            digests = list(pool.map(file_digest, paths))
        rows: dict[tuple[int, str | None], np.ndarray] = {}
        missing: dict[int, list[str | None]] = {}
        for i, digest in enumerate(digests):
            for name in names:
                cached = self.cache.get(self._key(digest, name))
                if cached is None:
                    missing.setdefault(i, []).append(name)
                else:
                    rows[i, name] = cached
        self._extract_missing(paths, digests, missing, rows)
        return np.stack([rows[i, name] for name in names for i in range(len(paths))]) if paths else np.zeros((0, 0), np.float32)

    def _extract_missing(self, paths, digests, missing: dict[int, list], rows: dict) -> None:
        todo = list(missing.items())
        chunk = max(1, self.extractor.batch_size * _CHUNK_BATCHES // (1 + len(self.augmentations)))
        with self._progress(sum(len(n) for _, n in todo), "Extracting features") as bar, ThreadPoolExecutor() as pool:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                prepared = list(pool.map(lambda item: self._prepare(paths[item[0]], digests[item[0]], item[1]), part))
                images = [im for group in prepared for im in group]
                features = self.extractor.extract(images, on_batch=bar.update)
                k = 0
                for i, names in part:
                    for name in names:
                        rows[i, name] = features[k]
                        self.cache.put(self._key(digests[i], name), features[k])
                        k += 1

    # -- training -----------------------------------------------------------------------------
    def _fit(self, l2: float, solver: str) -> None:
        train = self.training_data
        x = self.features(train.paths, self.augmentations)
        y = np.tile(self._index(train.targets, "training data"), 1 + len(self.augmentations))
        validation = None
        if self.validation_data is not None:
            xv = self.features(self.validation_data.paths)
            validation = (xv, self._index(self.validation_data.targets, "validation data"))
        bar = self._iteration_bar()
        try:
            self.model, self.history = fit_softmax_regression(
                x, y, len(self.labels), max_iterations=self.max_iterations, l2=l2, solver=solver,
                validation=validation, on_iteration=bar,
            )
        finally:
            bar.close()
        originals = x[: len(train)]
        self.training_metrics = self._metrics(train, originals)
        self.validation_metrics = None if validation is None else self._metrics(self.validation_data, validation[0])

    def _iteration_bar(self):
        from tqdm import tqdm

        bar = tqdm(total=self.max_iterations, desc="Training", unit="iteration", disable=not self.show_progress, leave=False)

        def on_iteration(stats: IterationStats) -> None:
            shown = {"loss": f"{stats.loss:.4f}", "train": f"{stats.training_accuracy:.1%}"}
            if stats.validation_accuracy is not None:
                shown["validation"] = f"{stats.validation_accuracy:.1%}"
            bar.set_postfix(shown, refresh=False)
            bar.update(1)

        on_iteration.close = bar.close
        return on_iteration

    # -- predictions --------------------------------------------------------------------------
    def _metrics(self, data: ImageDataset, x: np.ndarray) -> ClassifierMetrics:
        p = self.model.probabilities(x)
        best = p.argmax(axis=1)
        return ClassifierMetrics.from_predictions(
            data.targets,
            [self.labels[i] for i in best],
            labels=sorted(set(self.labels) | set(data.labels)),
            paths=data.paths,
            confidences=p[np.arange(len(best)), best].tolist(),
        )

    def _features_of(self, images: Any) -> np.ndarray:
        """Features of paths (through the cache) and PIL images (extracted in one batch), in order."""
        from PIL import Image

        paths, pictures = [], []
        for i, item in enumerate(images):
            if isinstance(item, Image.Image):
                pictures.append((i, self.extractor.fit(item.convert("RGB"))))
            elif isinstance(item, (str, os.PathLike)):
                paths.append((i, os.fspath(item)))
            else:
                raise MLCParametersError(f"an image to classify is a path or a PIL image, got {type(item).__name__}")
        rows: list = [None] * len(images)
        for (i, _), row in zip(paths, self.features([p for _, p in paths]) if paths else []):
            rows[i] = row
        for (i, _), row in zip(pictures, self.extractor.extract([p for _, p in pictures]) if pictures else []):
            rows[i] = row
        return np.stack(rows)

    def predict_probabilities(self, images: Any) -> list[dict[str, float]] | dict[str, float]:
        """Label -> probability for an image (a path or a PIL image) or a list of them."""
        single = not isinstance(images, (list, tuple))
        p = self.model.probabilities(self._features_of([images] if single else list(images)))
        out = [{label: float(v) for label, v in zip(self.labels, row)} for row in p]
        return out[0] if single else out

    def predict(self, images: Any) -> list[str] | str:
        """The predicted label of an image (a path or a PIL image) or of each in a list."""
        single = not isinstance(images, (list, tuple))
        p = self.model.probabilities(self._features_of([images] if single else list(images)))
        labels = [self.labels[i] for i in p.argmax(axis=1)]
        return labels[0] if single else labels

    def evaluation(self, on: Any) -> ClassifierMetrics:
        """Metrics on a testing data source (a folder of label subfolders or a dict), like
        Create ML's ``evaluation(on:)``: accuracy, per-label precision and recall, the confusion
        matrix and the misclassified files. Unreadable files are skipped with a warning."""
        data = image_source(on, what="testing data", min_classes=1, check_balance=False)
        self._index(data.targets, "testing data")
        return self._metrics(data, self.features(data.paths))

    # -- export -------------------------------------------------------------------------------
    def _user_defined(self) -> dict[str, str]:
        info = {
            "mlc.version": __version__,
            "mlc.createml.feature_extractor": os.path.basename(self.extractor.model.name),
            "mlc.createml.max_iterations": str(self.max_iterations),
            "mlc.createml.augmentations": ",".join(self.augmentations) or "none",
            "mlc.createml.training_images": str(len(self.training_data)),
            "mlc.createml.training_accuracy": f"{self.training_metrics.accuracy:.4f}",
        }
        if self.validation_metrics is not None:
            info["mlc.createml.validation_accuracy"] = f"{self.validation_metrics.accuracy:.4f}"
        return info

    def spec(self, *, author: str | None = None, description: str | None = None, version: str = "1.0",
             license: str | None = None, updatable: bool = False):
        """The Core ML ``Model`` proto ``write`` saves (``mlc.createml.export``), and the weight
        file of an ML Program extractor (or None)."""
        w, b = self.model.folded()
        metadata = {
            "author": author if author is not None else _user_name(),
            "description": description if description is not None else self._default_description(),
            "version": version,
            "license": license or "",
        }
        return E.pipeline_spec(self.extractor, w, b, self.labels, updatable=updatable, metadata=metadata,
                               user_defined=self._user_defined(), seed=self.seed)

    def _default_description(self) -> str:
        shown = ", ".join(self.labels[:6]) + (", ..." if len(self.labels) > 6 else "")
        return f"Image classifier of {len(self.labels)} labels ({shown}), trained with mlc.createml"

    def write(self, path: str | os.PathLike, *, author: str | None = None, description: str | None = None,
              version: str = "1.0", license: str | None = None, updatable: bool = False) -> str:
        """Write the classifier as a Core ML model (``.mlpackage`` or ``.mlmodel``): an image
        input, ``classLabel`` and ``classLabelProbs`` outputs, the metadata given (author
        defaults to the user's name). ``updatable=True`` makes the classifier head an
        updatable NeuralNetwork stage, for ``mlc.update`` or Core ML's ``MLUpdateTask``."""
        spec, blob = self.spec(author=author, description=description, version=version, license=license, updatable=updatable)
        return E.write_classifier(path, spec, blob)

    # -- reporting ----------------------------------------------------------------------------
    def plot_training(self, path: str | os.PathLike) -> str:
        """Write the training (and validation) accuracy per iteration as a PNG at ``path``."""
        try:
            from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's) is left alone
        except ImportError as e:  # pragma: no cover - matplotlib is a dependency
            raise MLCParametersError("plot_training needs matplotlib (pip install matplotlib)") from e
        path = os.fspath(path)
        if not path.lower().endswith(".png"):
            raise MLCIOError(f"plot_training writes a PNG; {path!r} does not end in .png")
        iterations = [s.iteration for s in self.history]
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(iterations, [s.training_accuracy for s in self.history], marker="o", label="training")
        if self.history and self.history[0].validation_accuracy is not None:
            ax.plot(iterations, [s.validation_accuracy for s in self.history], marker="o", label="validation")
        ax.set_xlabel("iteration")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"{len(self.labels)} labels, {len(self.training_data)} training images")
        fig.tight_layout()
        try:
            with atomic_write(path) as tmp:
                fig.savefig(tmp, format="png")
        except OSError as e:
            raise MLCIOError(f"cannot write {path!r}: {e.strerror or e}") from e
        return path

    def __repr__(self) -> str:
        val = "" if self.validation_metrics is None else f", validation accuracy {self.validation_metrics.accuracy:.1%}"
        return (
            f"mlc.createml.ImageClassifier({len(self.labels)} labels, {len(self.training_data)} training images, "
            f"{self.max_iterations} iterations, training accuracy {self.training_metrics.accuracy:.1%}{val})"
        )


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


__all__ = ["ImageClassifier", "ImageDataset", "LabeledImage", "SoftmaxRegression"]
