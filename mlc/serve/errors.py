"""The errors a served request can get, each with the HTTP status and gRPC status it answers with.

Every error the server returns is an ``mlc.MLCError``: its ``code`` and message go into the
protocol's error body (``{"error": message, "code": code}`` over HTTP; the status details over
gRPC). Errors that mlc raises while converting or running a request (``MLCFeatureTypeError`` for
a wrong shape, ``MLCPredictionError`` for values the model refuses) answer 400 with their own code.
"""

from __future__ import annotations

from mlc._errors import MLCError, MLCFeatureTypeError, MLCParametersError, MLCPredictionError


class ServeError(MLCError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    code = "featureType"
    status = 400
    grpc_status = "INVALID_ARGUMENT"


class BadRequest(ServeError):
    """Malformed or mistyped request: not JSON, a wrong datatype or shape, an unknown input."""


class NotFound(ServeError):
    """An unknown model or version."""

    code = "notFound"
    status = 404
    grpc_status = "NOT_FOUND"


class PayloadTooLarge(ServeError):
    """A request body over the server's ``--max-body-bytes``."""

    code = "io"
    status = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """The model is not ready (loading, failed to load), its queue is full, or the server is
    shutting down: try again later (503)."""

    code = "unavailable"
    status = 503
    grpc_status = "UNAVAILABLE"


# mlc errors raised while a request's inputs are converted or its prediction runs: the request's fault.
_CLIENT_ERRORS = (MLCFeatureTypeError, MLCParametersError, MLCPredictionError)


def status_of(error: BaseException) -> tuple[int, str, str]:
    """``(HTTP status, gRPC status name, mlc code)`` for an error raised while serving."""
    if isinstance(error, ServeError):
        return error.status, error.grpc_status, error.code
    if isinstance(error, _CLIENT_ERRORS):
        return 400, "INVALID_ARGUMENT", error.code
    if isinstance(error, MLCError):
        return 500, "INTERNAL", error.code
    return 500, "INTERNAL", "generic"


def message_of(error: BaseException) -> str:
    if isinstance(error, MLCError):
        return error.message
    return f"internal error: {type(error).__name__}: {error}"
