"""``mlc serve``: the HTTP and gRPC servers, the models, and their lifecycle.

Start: the ports are bound first (``--port 0`` / ``--grpc-port 0`` pick free ones) and one line
``mlc serve: listening http=HOST:PORT grpc=HOST:PORT`` goes to stdout; then the models load and
warm up, one after another, while ``/v2/health/live`` already answers (``/ready`` once loaded).

Stop (SIGTERM or SIGINT): readiness turns false, both servers stop accepting connections and
wait up to ``drain_timeout`` seconds for the requests in flight, every request the models
accepted is answered, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import sys

import uvicorn

from mlc._errors import MLCParametersError
from mlc.serve.grpc_service import create_server
from mlc.serve.http_app import create_app
from mlc.serve.repository import find_models
from mlc.serve.service import InferenceService

log = logging.getLogger("mlc.serve")


@dataclasses.dataclass
class ServeConfig:
    source: str
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001  # None: no gRPC
    devices: tuple = (None,)  # mlc.load's device argument, one worker each
    max_batch_size: int = 64
    max_queue_delay_ms: float = 5.0
    max_queue: int = 1024
    max_body_bytes: int = 64 << 20
    warmup: bool = True
    drain_timeout: float = 30.0


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``serve`` owns SIGTERM/SIGINT."""

    def capture_signals(self):
        import contextlib

        return contextlib.nullcontext()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (0: a free port), for uvicorn to serve on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they are
    # TCP, and uvicorn writes a response's head and body apart; with Nagle on, every response
    # on a kept-alive connection after the first waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MLCParametersError(f"cannot listen on {host}:{port} for HTTP: {e.strerror or e}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_async(config: ServeConfig) -> None:
    sources = find_models(config.source)
    service = InferenceService(
        sources, devices=list(config.devices), max_batch_size=config.max_batch_size,
        max_delay=config.max_queue_delay_ms / 1e3, max_queue=config.max_queue, warmup=config.warmup,
    )
    http_socket = listening_socket(config.host, config.port)
    app = create_app(service, max_body_bytes=config.max_body_bytes)
    http = _Uvicorn(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                   timeout_graceful_shutdown=int(config.drain_timeout)))
    grpc_server = None
    listening = f"http={config.host}:{http_socket.getsockname()[1]}"
    if config.grpc_port is not None:
        try:
            grpc_server, grpc_port = create_server(service, host=config.host, port=config.grpc_port, max_body_bytes=config.max_body_bytes)
        except (OSError, RuntimeError) as e:
            http_socket.close()
            raise MLCParametersError(f"cannot listen on {config.host}:{config.grpc_port} for gRPC: {e}") from None
        await grpc_server.start()
        listening += f" grpc={config.host}:{grpc_port}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    print(f"mlc serve: listening {listening}", flush=True)
    load_task = asyncio.create_task(service.load_all())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, http_task}, return_when=asyncio.FIRST_COMPLETED)

    log.info("mlc serve: stopping; draining requests in flight")
    service.draining = True
    http.should_exit = True
    if grpc_server is not None:
        await grpc_server.stop(config.drain_timeout)
    await http_task
    if not load_task.done():
        load_task.cancel()
    await asyncio.gather(load_task, return_exceptions=True)
    await service.close()
    log.info("mlc serve: stopped")


def serve(config: ServeConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("mlc.serve",):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    asyncio.run(serve_async(config))
