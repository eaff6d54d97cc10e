"""Evaluation metrics of a classifier, like Create ML's ``MLClassifierMetrics``: accuracy
(``classificationError``), per-label precision and recall (``precisionRecall``), the confusion
matrix (``confusion``) and the misclassified examples."""

from __future__ import annotations

import dataclasses
import math

import numpy

from mlc._errors import MLCParametersError

LABEL_WIDTH = 24  # longest label shown in full in table()
CONFUSION_COLUMN_WIDTH = 10  # longest label shown in full as a confusion-matrix column header


@dataclasses.dataclass(frozen=True)
class Misclassification:
    """One example whose predicted label differs from its true label."""

    path: str | None  # where the example came from, if known
    label: str  # the true label
    predicted: str
    confidence: float  # the probability of the predicted label; NaN when not given


def _plain(value):
    """A numpy scalar as the Python value it holds (so labels print and serialise plainly)."""
    return value.item() if isinstance(value, numpy.generic) else value


def _as_list(values, what: str) -> list:
    if values is None or isinstance(values, (str, bytes)):
        raise MLCParametersError(f"{what} must be a sequence of values, not {values!r}.")
    try:
        return [_plain(value) for value in values]
    except TypeError:
        raise MLCParametersError(f"{what} must be a sequence of values, not {type(values).__name__}.") from None


def _as_floats(confidences) -> list[float]:
    try:
        return [float(value) for value in _as_list(confidences, "confidences")]
    except (TypeError, ValueError):
        raise MLCParametersError(f"confidences must be numbers (probabilities), not {confidences!r}.") from None


def _check_length(values: list | None, count: int, what: str) -> None:
    if values is not None and len(values) != count:
        raise MLCParametersError(f"{what} has {len(values)} entries but there are {count} true labels.")


def _default_labels(true: list, predicted: list) -> list:
    try:
        return sorted(set(true) | set(predicted))
    except TypeError:
        raise MLCParametersError(
            "The labels mix types that cannot be sorted (e.g. str and int); pass labels= to set their order.") from None


def _check_labels(labels: list, true: list, predicted: list) -> None:
    if len(set(labels)) != len(labels):
        raise MLCParametersError(f"labels has duplicates: {labels!r}.")
    known = set(labels)
    for what, values in (("true label", true), ("predicted label", predicted)):
        unknown = [value for value in values if value not in known]
        if unknown:
            raise MLCParametersError(f"The {what} {unknown[0]!r} is not one of labels {labels!r}.")


def _nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def _fraction(value: float) -> str:
    """A precision, recall or accuracy as table() shows it: three decimals, or "n/a" for NaN."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by replacing its middle with "..", so that labels
    sharing a prefix or a suffix (``n01440764_tench``) stay told apart."""
    if len(text) <= width:
        return text
    if width < 5:
        return text[:width]
    tail = (width - 2) // 2
    return text[:width - 2 - tail] + ".." + text[len(text) - tail:]


@dataclasses.dataclass(eq=False)
class ClassifierMetrics:
    """How well a classifier's predictions match the true labels.

    Like Create ML's ``MLClassifierMetrics``: ``classification_error`` is 1 - ``accuracy``,
    ``precision`` and ``recall`` are per label, and ``confusion`` counts examples with rows for
    the true label and columns for the predicted one, both in the order of ``labels``. Compared by
    identity (``eq=False``), since ``confusion`` is an array.
    """

    labels: list[str]
    confusion: numpy.ndarray
    misclassified: list[Misclassification] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.labels = [_plain(label) for label in self.labels]
        self.confusion = numpy.asarray(self.confusion, dtype=numpy.int64)
        count = len(self.labels)
        if self.confusion.shape != (count, count):
            raise MLCParametersError(
                f"The confusion matrix has shape {self.confusion.shape}, but there are {count} labels.")

    @classmethod
    def from_predictions(cls, true, predicted, *, labels=None, paths=None, confidences=None) -> ClassifierMetrics:
        """The metrics of ``predicted`` labels against ``true`` ones (equal-length sequences).

        ``labels`` sets the order of the confusion matrix and may hold labels that never occur;
        by default it is the sorted union of the true and predicted labels. ``paths`` and
        ``confidences`` (the probability of each predicted label), when given, one per example,
        are copied into :attr:`misclassified`, which keeps the input order.
        """
        true, predicted = _as_list(true, "true"), _as_list(predicted, "predicted")
        _check_length(predicted, len(true), "predicted")
        paths = None if paths is None else [None if path is None else str(path) for path in _as_list(paths, "paths")]
        confidences = None if confidences is None else _as_floats(confidences)
        _check_length(paths, len(true), "paths")
        _check_length(confidences, len(true), "confidences")
        if not true:
            raise MLCParametersError("There are no predictions to evaluate (the inputs are empty).")
        labels = _default_labels(true, predicted) if labels is None else _as_list(labels, "labels")
        _check_labels(labels, true, predicted)

        position = {label: row for row, label in enumerate(labels)}
        confusion = numpy.zeros((len(labels), len(labels)), dtype=numpy.int64)
        numpy.add.at(confusion, ([position[label] for label in true], [position[label] for label in predicted]), 1)
        misclassified = [
            Misclassification(
                path=None if paths is None else paths[i],
                label=true[i],
                predicted=predicted[i],
                confidence=math.nan if confidences is None else confidences[i],
            )
            for i in range(len(true)) if true[i] != predicted[i]
        ]
        return cls(labels=labels, confusion=confusion, misclassified=misclassified)

    @property
    def count(self) -> int:
        """The number of examples evaluated."""
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        """The fraction of examples whose predicted label is the true one."""
        return _ratio(int(numpy.trace(self.confusion)), self.count)

    @property
    def classification_error(self) -> float:
        """Create ML's ``classificationError``: 1 - accuracy."""
        return 1.0 - self.accuracy

    @property
    def support(self) -> dict[str, int]:
        """How many examples have each true label."""
        return {label: int(total) for label, total in zip(self.labels, self.confusion.sum(axis=1))}

    @property
    def precision(self) -> dict[str, float]:
        """Per label, true positives / (true positives + false positives): of the examples predicted
        as the label, the fraction that have it. NaN for a label that was never predicted."""
        predicted_totals = self.confusion.sum(axis=0)
        return {label: _ratio(self.confusion[k, k], predicted_totals[k]) for k, label in enumerate(self.labels)}

    @property
    def recall(self) -> dict[str, float]:
        """Per label, true positives / (true positives + false negatives): of the examples that have
        the label, the fraction predicted as it. NaN for a label that never occurs."""
        true_totals = self.confusion.sum(axis=1)
        return {label: _ratio(self.confusion[k, k], true_totals[k]) for k, label in enumerate(self.labels)}

    def _label_rows(self) -> list[str]:
        names = [_truncate(str(label), LABEL_WIDTH) for label in self.labels]
        width = max(len("label"), *(len(name) for name in names))
        precision, recall, support = self.precision, self.recall, self.support
        lines = [f"{'label':<{width}}  {'count':>7}  {'precision':>9}  {'recall':>7}"]
        for name, label in zip(names, self.labels):
            lines.append(f"{name:<{width}}  {support[label]:>7}  {_fraction(precision[label]):>9}  "
                         f"{_fraction(recall[label]):>7}")
        correct = int(numpy.trace(self.confusion))
        lines.append(f"accuracy: {_fraction(self.accuracy)} ({correct}/{self.count} correct)")
        return lines

    def _confusion_rows(self) -> list[str]:
        row_names = [_truncate(str(label), LABEL_WIDTH) for label in self.labels]
        header = "true \\ predicted"
        row_width = max(len(header), *(len(name) for name in row_names))
        column_names = [_truncate(str(label), CONFUSION_COLUMN_WIDTH) for label in self.labels]
        digits = len(str(int(self.confusion.max(initial=0))))
        widths = [max(digits, len(name)) for name in column_names]
        lines = [f"{header:<{row_width}}" + "".join(f"  {name:>{w}}" for name, w in zip(column_names, widths))]
        for name, row in zip(row_names, self.confusion):
            lines.append(f"{name:<{row_width}}" + "".join(f"  {int(value):>{w}}" for value, w in zip(row, widths)))
        return lines

    def table(self) -> str:
        """A fixed-width text report: one row per label (label, count of examples with that true
        label, precision, recall, with three decimals, "n/a" for NaN), the accuracy, then the
        confusion matrix (rows true, columns predicted). Labels longer than
        :data:`LABEL_WIDTH` (rows) or :data:`CONFUSION_COLUMN_WIDTH` (columns) lose their middle."""
        lines = self._label_rows() + ["", "confusion matrix (rows: true label, columns: predicted label)"]
        return "\n".join(lines + self._confusion_rows())

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """The metrics as JSON-serialisable values (NaN becomes None): labels, count, accuracy,
        classification_error, precision/recall/support keyed by label, the confusion matrix as
        nested lists, and the misclassified examples as dicts."""
        return {
            "labels": list(self.labels),
            "count": self.count,
            "accuracy": _nan_to_none(self.accuracy),
            "classification_error": _nan_to_none(self.classification_error),
            "precision": {label: _nan_to_none(value) for label, value in self.precision.items()},
            "recall": {label: _nan_to_none(value) for label, value in self.recall.items()},
            "support": self.support,
            "confusion": self.confusion.tolist(),
            "misclassified": [
                {"path": item.path, "label": item.label, "predicted": item.predicted,
                 "confidence": _nan_to_none(item.confidence)}
                for item in self.misclassified
            ],
        }
