"""One served model version: its ``mlc.Model`` on each device, its batcher, its metadata.

A model that fails to load (or to warm up) is kept as not ready, with the error: the server
reports it so (``/v2/models/{name}/ready``, metadata, 503 on inference) and serves the others.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Hashable

import numpy as np

from mlc import features as F
from mlc._errors import MLCError, MLCUnsupportedError
from mlc.serve import coreml_io
from mlc.serve.batcher import DynamicBatcher, Worker, bucket
from mlc.serve.errors import BadRequest, Unavailable
from mlc.serve.metrics import Metrics
from mlc.serve.protocol import InferRequest, InferResponse
from mlc.serve.repository import ModelSource

log = logging.getLogger("mlc.serve")

LOADING, READY, FAILED = "loading", "ready", "failed"


class ServedModel:
    def __init__(self, source: ModelSource, *, devices: list[Any], max_batch_size: int, max_delay: float, max_queue: int, metrics: Metrics):
        self.source = source
        self.name, self.version = source.name, source.version
        self.devices = devices
        self.state = LOADING
        self.error: str | None = None
        self.models: list = []
        self.metadata: dict = {}
        self.batcher: DynamicBatcher | None = None
        self._batching: bool | None = None  # whether predict_batch runs it (None: not known until a batch)
        self._limits = dict(max_batch_size=max_batch_size, max_delay=max_delay, max_queue=max_queue)
        self._metrics = metrics
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"mlc-{self.name}-{i}") for i in range(len(devices))]

    @property
    def ready(self) -> bool:
        return self.state == READY

    # -- loading, in a worker thread ---------------------------------------------------------
    def load(self, warmup: bool = True) -> None:
        """Load the model on every device and warm it up (compile); on failure keep the error."""
        import mlc

        try:
            t0 = time.perf_counter()
            self.models = [mlc.load(self.source.path, device=d) for d in self.devices]
            self.metadata = _metadata(self.models[0], self.name, self.version)
            batching = self._warm_up() if warmup else None
            self._batching = batching
            log.info("loaded model %s version %s from %s in %.2f s", self.name, self.version, self.source.path, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - reported as the model's state, the server goes on
            self.state, self.error = FAILED, _message(e)
            log.error("model %s version %s failed to load: %s", self.name, self.version, self.error)

    def _warm_up(self) -> bool | None:
        """Compile what requests will run: ``predict`` at each declared input shape and, where the
        model batches, ``predict_batch`` at every padded batch size (``batcher.bucket``) of the
        default shape. Returns whether the model batches (None: not tried)."""
        model = self.models[0]
        examples = _examples(model)
        if examples is None:
            return None
        batching: bool | None = None
        for m in self.models:
            for example in examples:
                _predict_function(m)(example)
            if self._limits["max_batch_size"] > 1 and _batchable(model):
                try:
                    size = 2
                    while size <= self._limits["max_batch_size"]:
                        m.predict_batch(_stacked([examples[0]] * size))
                        size *= 2
                    batching = True
                except MLCUnsupportedError:
                    batching = False
            else:
                batching = False
        return batching

    def start(self) -> None:
        """Start serving (in the event loop), once loaded."""
        if self.state == FAILED:
            return
        workers = [Worker(_predict_function(m), self._batch_function(m), ex, str(m.device)) for m, ex in zip(self.models, self._executors)]
        batching = self._batching is not False
        self.batcher = DynamicBatcher(f"{self.name}/{self.version}", workers, batching=batching, **self._limits)
        labels = (self.name, self.version)
        self.batcher.on_batch = lambda size: self._metrics.batch_size.labels(*labels).observe(size)
        self.batcher.start()
        self.state = READY

    def _batch_function(self, model):
        largest = self._limits["max_batch_size"]

        def predict_rows(rows: list[dict]) -> list[dict]:
            n = len(rows)
            padded = rows + [rows[-1]] * (bucket(n, largest) - n)
            out = model.predict_batch(_stacked(padded))
            return [{name: value[i] for name, value in out.items()} for i in range(n)]

        return predict_rows

    # -- requests, in the event loop ----------------------------------------------------------
    async def infer(self, request: InferRequest) -> tuple[InferResponse, dict]:
        """The response, and the request's timings and batch size (for metrics and logs)."""
        if self.state != READY:
            why = "is loading" if self.state == LOADING else f"failed to load: {self.error}"
            raise Unavailable(f"model {self.name!r} version {self.version} {why}")
        model = self.models[0]
        inputs = coreml_io.predict_inputs(request.inputs, model.input_description, self.name)
        key = _batch_key(inputs, model.input_description, f"model {self.name!r}")
        wanted = _wanted_outputs(request, model.output_description, self.name)
        arrived = time.perf_counter()
        self._metrics.queue_depth.labels(self.name, self.version).inc()
        try:
            job = await self.batcher.submit(inputs, key)
        finally:
            self._metrics.queue_depth.labels(self.name, self.version).dec()
        outputs = job.future.result()
        tensors = [coreml_io.output_tensor(n, outputs[n], model.output_description.get(n)) for n in wanted]
        timing = {"queue": job.started - arrived, "compute": job.computed - job.started, "batch": job.batch_size, "device": job.device}
        return InferResponse(self.name, self.version, tensors, id=request.id), timing

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        for ex in self._executors:
            ex.shutdown(wait=False)


def _predict_function(model):
    """``predict`` for one request; a stateful model starts each request from a fresh state
    (the protocol is stateless: no request sees another's state)."""
    if not model.state_description:
        return model.predict
    return lambda inputs: model.predict(inputs, state=model.make_state())


def _message(e: BaseException) -> str:
    return e.message if isinstance(e, MLCError) else f"{type(e).__name__}: {e}"


def _metadata(model, name: str, version: str) -> dict:
    kind = (model.program.kind or "unknown").split(" ")[0]
    return {
        "name": name,
        "versions": [version],
        "platform": f"coreml_{kind}",
        "inputs": [coreml_io.tensor_metadata(f) for f in model.input_description.values()],
        "outputs": [coreml_io.tensor_metadata(f) for f in model.output_description.values()],
    }


def _examples(model) -> list[dict] | None:
    """An input of each declared shape (enumerated shapes each; else the default), or None for
    a model one cannot make inputs for (a multiarray without any shape)."""
    description = model.input_description
    base = {}
    for name, f in description.items():
        value = F.example_value(f)
        if value is None:
            return None
        base[name] = value
    examples = [base]
    for name, f in description.items():
        if f.kind == "multiArray" and f.enumerated_shapes:
            for shape in f.enumerated_shapes:
                if tuple(shape) != np.shape(base[name]):
                    examples.append({**base, name: np.zeros(shape, f.dtype or np.float32)})
    return examples


def _batchable(model) -> bool:
    """Whether ``predict_batch`` can take the model's inputs at all (multiarrays, images,
    numbers) and the model has no state."""
    return not model.state_description and all(f.kind in ("multiArray", "image", "int64", "double") for f in model.input_description.values())


def _batch_key(inputs: dict, description, where: str) -> Hashable | None:
    """Requests with equal keys can share a batch: the same inputs, each of the same shape and
    dtype (images: the same size and mode). None: this request runs alone. Multiarray shapes
    are checked against the description here, so a wrong shape is refused before it queues."""
    key = []
    for name in sorted(inputs):
        value, feature = inputs[name], description[name]
        if feature.kind == "multiArray":
            F.convert_input(feature, value, f"{where}: input {name!r}")
            key.append((name, np.shape(value), np.asarray(value).dtype.str))
        elif feature.kind == "image":
            key.append((name, value.size, value.mode))
        elif feature.kind in ("int64", "double"):
            key.append((name, feature.kind))
        else:
            return None
    return tuple(key)


def _stacked(rows: list[dict]) -> dict:
    """Requests' inputs as ``predict_batch``'s: arrays stacked, images and numbers listed."""
    out = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        out[name] = np.stack([np.asarray(v) for v in values]) if isinstance(values[0], np.ndarray) else (
            np.asarray(values) if isinstance(values[0], (int, float)) else list(values))
    return out


def _wanted_outputs(request: InferRequest, description, model: str) -> list[str]:
    names = list(description)
    if request.outputs is None:
        return names
    for out in request.outputs:
        if out.name not in description:
            raise BadRequest(f"model {model!r}: no output {out.name!r}; its outputs are {names}")
    return [o.name for o in request.outputs]
