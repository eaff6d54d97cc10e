"""Training data as mlc takes it: a list of feature dicts (one per example, like Core ML's
``MLArrayBatchProvider``) or a dict of stacked values (one entry per feature, examples along
the first axis; an ``.npz`` file loads as one). Both become columns: name -> numpy array
(or list, for images and strings), all of one length.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from mlc import features as F
from mlc._errors import MLCFeatureTypeError, MLCUpdateError


def as_columns(data: Any, where: str) -> tuple[dict[str, Any], int]:
    """``(columns, n)`` from a list of feature dicts or a dict of stacked values."""
    if isinstance(data, Mapping) or hasattr(data, "files"):  # dict, or numpy's NpzFile
        columns = {str(k): data[k] for k in (data.files if hasattr(data, "files") else data)}
    elif isinstance(data, (list, tuple)):
        columns = _rows_to_columns(data, where)
    else:
        raise MLCUpdateError(
            f"{where}: training data must be a list of feature dicts or a dict of stacked arrays, got {type(data).__name__}"
        )
    lengths = {name: _length(value, name, where) for name, value in columns.items()}
    if not columns or not any(lengths.values()):
        raise MLCUpdateError(f"{where}: the training data is empty (no examples)")
    if len(set(lengths.values())) > 1:
        raise MLCUpdateError(f"{where}: the training features have different numbers of examples: {lengths}")
    return columns, next(iter(lengths.values()))


def _rows_to_columns(rows, where: str) -> dict[str, Any]:
    if not rows:
        raise MLCUpdateError(f"{where}: the training data is empty (no examples)")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise MLCUpdateError(f"{where}: training example {i} is a {type(row).__name__}, not a dict of features")
    names = list(rows[0])
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise MLCUpdateError(f"{where}: training example {i} has no feature {missing[0]!r} (example 0 has it)")
    columns = {}
    for name in names:
        values = [row[name] for row in rows]
        columns[name] = values if _keep_as_list(values) else np.stack([np.asarray(v) for v in values])
    return columns


def _keep_as_list(values: list) -> bool:
    first = values[0]
    return isinstance(first, str) or (hasattr(first, "mode") and hasattr(first, "size"))  # strings, PIL images


def _length(value: Any, name: str, where: str) -> int:
    if isinstance(value, (list, tuple)):
        return len(value)
    arr = np.asarray(value)
    if arr.ndim == 0:
        raise MLCUpdateError(f"{where}: training feature {name!r} is a scalar; stack one value per example along the first axis")
    return arr.shape[0]


def require(columns: dict, names: list[str], where: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise MLCUpdateError(
            f"{where}: the training data has no {missing[0]!r}; the model's training inputs are {names} "
            f"(the data has {sorted(columns)})"
        )


def take(column: Any, indices: np.ndarray) -> Any:
    if isinstance(column, (list, tuple)):
        return [column[int(i)] for i in indices]
    return np.asarray(column)[indices]


def model_input_batch(model, columns: dict, where: str) -> dict[str, np.ndarray]:
    """The model's prediction inputs among ``columns``, as the stacked program-level arrays
    ``predict_batch`` would feed (images decoded, dtypes as the program computes them)."""
    return input_batch(model.input_description, model.runner.program_input, columns, where)


def input_batch(features: F.FeatureDescriptions, program_input: Callable[[str, Any], Any], columns: dict, where: str) -> dict[str, Any]:
    """The inputs ``features`` declares among ``columns``, stacked as ``predict_batch`` takes
    them (``mlc.features.batch_input``), then as ``program_input(name, array)`` makes them."""
    out = {}
    for name, feature in features.items():
        if name not in columns:
            continue
        value = columns[name]
        what = f"{where}: training input {name!r}"
        try:
            arr = F.batch_input(feature, value, what)
        except MLCFeatureTypeError as e:
            raise MLCUpdateError(e.message) from e
        out[name] = program_input(name, arr)
    return out
