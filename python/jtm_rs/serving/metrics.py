"""What ``GET /metrics`` exposes, in Prometheus' text format (``prometheus_client``), on a
registry of the application's own (two applications in one process do not mix counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_USERS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("jtm_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("jtm_errors", "requests refused or failed, by kind", ["kind"], registry=r)
        self.latency = Histogram("jtm_request_seconds", "time from a request's arrival to its answer",
                                 ["endpoint"], buckets=_LATENCY, registry=r)
        self.batch_users = Histogram("jtm_batch_users", "users per batched retrieval", buckets=_USERS, registry=r)
        self.batch_seconds = Histogram("jtm_batch_seconds", "seconds of one batched retrieval", buckets=_LATENCY,
                                       registry=r)
        self.queue_depth = Gauge("jtm_queue_depth", "requests waiting for a batch", registry=r)
        self.model = Gauge("jtm_model", "1 for the model being served", ["fingerprint"], registry=r)
        self.reloads = Counter("jtm_reloads", "model reloads, by outcome", ["outcome"], registry=r)

    def serving(self, fingerprint: str) -> None:
        self.model.clear()
        self.model.labels(fingerprint=fingerprint).set(1)

    def exposition(self) -> tuple:
        """``(body, content type)`` of the text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ServiceMetrics"]
