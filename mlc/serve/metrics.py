"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own.

- ``mlc_requests_total{model, version, protocol, status}``: requests answered, by HTTP status
  (gRPC answers count under the HTTP status their code corresponds to);
- ``mlc_queue_depth{model, version}``: requests accepted and not yet answered;
- ``mlc_batch_size{model, version}``: how many requests each model call computed together;
- ``mlc_request_{queue,compute,total}_seconds{model, version}``: time waiting in the queue
  (and for the earlier requests of its batch that ran alone), the model call that computed it
  (the whole batch's call), and from arrival to answer.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter("mlc_requests", "Inference requests answered", (*labels, "protocol", "status"), registry=self.registry)
        self.queue_depth = Gauge("mlc_queue_depth", "Requests accepted and not yet answered", labels, registry=self.registry)
        self.batch_size = Histogram("mlc_batch_size", "Requests computed by one model call", labels, buckets=_BATCH_BUCKETS, registry=self.registry)
        self.queue_seconds = Histogram("mlc_request_queue_seconds", "Time a request waited for a worker", labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.compute_seconds = Histogram("mlc_request_compute_seconds", "Time of the model call that computed a request", labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.total_seconds = Histogram("mlc_request_total_seconds", "Time from a request's arrival to its answer", labels, buckets=_LATENCY_BUCKETS, registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
