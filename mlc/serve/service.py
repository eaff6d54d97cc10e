"""The inference service both transports call: health, metadata, inference, with metrics and
one structured log line per inference request.

Requests name a model and optionally a version; without one the highest ready version answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from mlc._version import __version__
from mlc.serve.errors import NotFound, Unavailable, message_of, status_of
from mlc.serve.metrics import Metrics
from mlc.serve.protocol import InferRequest, InferResponse
from mlc.serve.repository import ModelSource
from mlc.serve.served import ServedModel

log = logging.getLogger("mlc.serve.requests")

EXTENSIONS = ["binary_tensor_data"]


class InferenceService:
    def __init__(self, sources: list[ModelSource], *, devices: list[Any], max_batch_size: int = 64, max_delay: float = 0.005,
                 max_queue: int = 1024, warmup: bool = True):
        self.metrics = Metrics()
        self.models: dict[tuple[str, str], ServedModel] = {
            (s.name, s.version): ServedModel(s, devices=devices, max_batch_size=max_batch_size, max_delay=max_delay,
                                             max_queue=max_queue, metrics=self.metrics)
            for s in sources
        }
        self.warmup = warmup
        self.started = False  # every model loaded (or failed) and started
        self.draining = False  # a stop was asked: not ready, still answering what arrives
        self.stopping = False  # the transports are closed: refuse anything else

    # -- lifecycle ---------------------------------------------------------------------------
    async def load_all(self) -> None:
        """Load and warm up every model (one after another, off the event loop), then serve."""
        loop = asyncio.get_running_loop()
        for served in self.models.values():
            await loop.run_in_executor(None, served.load, self.warmup)
            served.start()
        self.started = True

    async def close(self) -> None:
        """Answer every accepted request, then stop the models' workers."""
        self.stopping = True
        await asyncio.gather(*(m.close() for m in self.models.values()))

    # -- health and metadata -----------------------------------------------------------------
    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        """Loaded, not stopping, and at least one model ready (a failed model is reported by its own readiness)."""
        return self.started and not (self.draining or self.stopping) and any(m.ready for m in self.models.values())

    def server_metadata(self) -> dict:
        return {"name": "mlc", "version": __version__, "extensions": list(EXTENSIONS)}

    def find(self, name: str, version: str | None = None) -> ServedModel:
        """The model version a request names (``NotFound`` if there is none)."""
        if version:
            served = self.models.get((name, version))
            if served is None:
                known = sorted(v for n, v in self.models if n == name)
                raise NotFound(f"model {name!r} has no version {version!r}" + (f" (versions: {', '.join(known)})" if known else " (no such model)"))
            return served
        versions = [m for (n, _), m in self.models.items() if n == name]
        if not versions:
            names = sorted({n for n, _ in self.models})
            raise NotFound(f"no model {name!r}; the server serves {', '.join(names)}")
        ready = [m for m in versions if m.ready] or versions
        return max(ready, key=lambda m: int(m.version))

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        served = self.find(name, version)
        if not served.metadata:
            raise Unavailable(f"model {name!r} version {served.version} is not loaded" + (f": {served.error}" if served.error else ""))
        versions = sorted((v for n, v in self.models if n == name), key=int)
        return {**served.metadata, "versions": versions}

    # -- inference ---------------------------------------------------------------------------
    async def infer(self, name: str, version: str | None, request: InferRequest, protocol: str) -> InferResponse:
        """Run one request; count it and log it whatever its outcome."""
        arrived = time.perf_counter()
        labels = (name, version or "")
        timing: dict = {}
        status = 200
        try:
            if self.stopping:
                raise Unavailable("the server is shutting down")
            served = self.find(name, version)
            labels = (served.name, served.version)
            response, timing = await served.infer(request)
            return response
        except BaseException as e:
            status = status_of(e)[0] if isinstance(e, Exception) else 499
            self._log(labels, protocol, request.id, status, time.perf_counter() - arrived, timing, e)
            self.metrics.requests.labels(*labels, protocol, str(status)).inc()
            raise
        finally:
            if status == 200:
                total = time.perf_counter() - arrived
                m = self.metrics
                m.requests.labels(*labels, protocol, "200").inc()
                m.queue_seconds.labels(*labels).observe(timing["queue"])
                m.compute_seconds.labels(*labels).observe(timing["compute"])
                m.total_seconds.labels(*labels).observe(total)
                self._log(labels, protocol, request.id, 200, total, timing, None)

    @staticmethod
    def _log(labels, protocol, request_id, status, total, timing, error) -> None:
        record = {"event": "infer", "model": labels[0], "version": labels[1], "protocol": protocol, "id": request_id,
                  "status": status, "total_ms": round(total * 1e3, 3)}
        if timing:
            record.update(queue_ms=round(timing["queue"] * 1e3, 3), compute_ms=round(timing["compute"] * 1e3, 3),
                          batch=timing["batch"], device=timing["device"])
        if error is not None:
            record["error"] = message_of(error) if isinstance(error, Exception) else type(error).__name__
        log.info(json.dumps(record))
