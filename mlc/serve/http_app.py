"""The Open Inference Protocol (KServe v2) over HTTP/REST, as a Starlette (ASGI) app.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{name}[/versions/{v}]`` (model metadata), ``GET .../ready``,
``POST .../infer``, and ``GET /metrics`` (Prometheus). Errors answer ``{"error": message,
"code": mlc code}`` with the status of ``mlc.serve.errors``; a body over ``max_body_bytes`` is
refused with 413 before it is read whole.
"""

from __future__ import annotations

import zlib

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlc.serve import http_codec
from mlc.serve.errors import BadRequest, PayloadTooLarge, message_of, status_of
from mlc.serve.metrics import CONTENT_TYPE
from mlc.serve.service import InferenceService


def error_response(error: BaseException) -> JSONResponse:
    status, _, code = status_of(error)
    return JSONResponse({"error": message_of(error), "code": code}, status_code=status)


def create_app(service: InferenceService, *, max_body_bytes: int) -> Starlette:
    async def live(request: Request) -> Response:
        return JSONResponse({"live": service.live}, status_code=200 if service.live else 503)

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(service.server_metadata())

    async def model_metadata(request: Request) -> Response:
        try:
            p = request.path_params
            return JSONResponse(service.model_metadata(p["name"], p.get("version")))
        except Exception as e:  # noqa: BLE001 - every error is answered
            return error_response(e)

    async def model_ready(request: Request) -> Response:
        try:
            p = request.path_params
            served = service.find(p["name"], p.get("version"))
        except Exception as e:  # noqa: BLE001
            return error_response(e)
        body = {"name": served.name, "version": served.version, "ready": served.ready}
        if served.error:
            body["error"] = served.error
        return JSONResponse(body, status_code=200 if served.ready else 503)

    async def infer(request: Request) -> Response:
        p = request.path_params
        try:
            body = await _read_body(request, max_body_bytes)
            parsed = http_codec.parse_request(body, request.headers.get(http_codec.HEADER_LENGTH))
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as e:  # noqa: BLE001
            service.metrics.requests.labels(p["name"], p.get("version", ""), "http", str(status_of(e)[0])).inc()
            return error_response(e)
        try:
            result = await service.infer(p["name"], p.get("version"), parsed, "http")
            content, headers = http_codec.encode_response(result, parsed)
        except Exception as e:  # noqa: BLE001 - counted and logged by the service
            return error_response(e)
        media = headers.pop("content-type")
        return Response(content, media_type=media, headers=headers)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    model = "/v2/models/{name}"
    version = model + "/versions/{version}"
    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(model, model_metadata),
        Route(version, model_metadata),
        Route(model + "/ready", model_ready),
        Route(version + "/ready", model_ready),
        Route(model + "/infer", infer, methods=["POST"]),
        Route(version + "/infer", infer, methods=["POST"]),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed (``Content-Encoding`` gzip or deflate), refused past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body has {int(declared)} bytes; the server takes at most {limit} (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r} (gzip, deflate)")
    try:
        out = _decompress(body, encoding, limit)
    except (OSError, zlib.error, EOFError) as e:
        raise BadRequest(f"the {encoding} body does not decompress: {e}") from None
    return out


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    out = d.decompress(body, limit + 1)
    if len(out) > limit:
        raise PayloadTooLarge(f"the decompressed request body exceeds {limit} bytes (--max-body-bytes)")
    if not d.eof:
        raise BadRequest(f"the {encoding} body is truncated")
    return out


