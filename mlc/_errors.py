"""Errors raised by mlc, with codes that mirror Core ML's ``MLModelError.Code``."""

from __future__ import annotations

import functools


class MLCError(Exception):
    """Base class of every error mlc raises on purpose.

    ``code`` mirrors Core ML's ``MLModelError.Code`` so users can branch on it:
    ``io`` (the file), ``featureType`` (an input or output), ``parameters`` (a value in the
    model), ``unsupported`` (valid Core ML that mlc cannot run yet), ``update`` (training).
    """

    code = "generic"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MLCIOError(MLCError):
    """The file or package cannot be read: missing, corrupt, or escaping its folder."""

    code = "io"


class MLCFeatureTypeError(MLCError, ValueError):
    """An input or output does not match the model's description."""

    code = "featureType"


class MLCParametersError(MLCError):
    """A value inside the model (a weight, an attribute, a shape) is invalid."""

    code = "parameters"


class MLCUnsupportedError(MLCError, NotImplementedError):
    """The model is valid Core ML, but uses something mlc does not run yet."""

    code = "unsupported"


class MLCPredictionError(MLCError, RuntimeError):
    """The model is valid but refused these input values when it ran (Core ML's run-time
    errors, such as out-of-bounds indices under ``validate_indices``)."""

    code = "generic"


class DataDependentShapeError(MLCUnsupportedError):
    """An op needs, at compile time, a value that is computed from the model's inputs (its output
    shape depends on data). ``Model.predict`` then runs the program op by op; under ``jit`` or
    ``vmap`` of the pure function it is an error."""


class MLCUpdateError(MLCError):
    """Training or updating a model failed."""

    code = "update"


class MLCDataWarning(UserWarning):
    """Training or evaluation data that mlc can use but that is probably not what was meant:
    unreadable files left out, files outside any label folder, labels with few images, an
    unbalanced set. Filter it with ``warnings.simplefilter("ignore", mlc.MLCDataWarning)``."""


def raised_as(error: MLCError, base: type[Exception]) -> MLCError:
    """``error`` as an instance of a class that is both its own and ``base``, with the same
    message, ``code`` and attributes: for an API that promises ``base``, as coremltools'
    ``MLModel.predict`` does ``RuntimeError`` for a prediction Core ML refuses
    (``mlc.deploy.coremltools_backend``). ``error`` itself when it is a ``base`` already."""
    if isinstance(error, base):
        return error
    converted = _joined(type(error), base)(error.message)
    converted.__dict__.update(error.__dict__)
    return converted


@functools.cache
def _joined(cls: type[MLCError], base: type[Exception]) -> type[MLCError]:
    """The subclass of ``cls`` and ``base`` (one per pair), named as ``cls``."""
    return type(
        cls.__name__,
        (cls, base),
        {
            "__module__": cls.__module__,
            "__doc__": f"{cls.__name__} raised where the API promises {base.__name__}.",
            "__reduce__": lambda self: (_rebuilt, (cls, base, self.message, dict(self.__dict__))),
        },
    )


def _rebuilt(cls: type[MLCError], base: type[Exception], message: str, state: dict) -> MLCError:
    """Unpickles a ``raised_as`` error (its class is made at run time, so pickle cannot name it)."""
    error = cls(message)
    error.__dict__.update(state)
    return raised_as(error, base)
