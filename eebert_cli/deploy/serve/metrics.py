"""Prometheus metrics of one server process (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: what a request can fail with, each counted (and listed at 0) in eebert_errors_total{kind}
ERROR_KINDS = ("invalid", "too_large", "queue_full", "unauthorized", "not_ready", "not_found", "internal")
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .075, .1, .25, .5, 1, 2.5, 5, 10)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int, exit_layers: list[int]):
        r = self.registry = CollectorRegistry()
        self.latency = Histogram("eebert_request_seconds", "Latency of answered /v1/predict requests",
                                 registry=r, buckets=LATENCY_BUCKETS)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch})
        self.batch_size = Histogram("eebert_batch_size", "Rows per model batch", registry=r,
                                    buckets=[s for s in sizes if s <= max_batch])
        self.batch_seconds = Histogram("eebert_batch_seconds", "Model time per batch (tokenising included)",
                                       registry=r, buckets=LATENCY_BUCKETS)
        self.rows = Counter("eebert_rows", "Texts answered", registry=r)
        self.exits = Counter("eebert_exit_layer", "Texts answered per exit layer (1-based)", ["layer"], registry=r)
        self.queue_depth = Gauge("eebert_queue_depth", "Texts waiting for the model", registry=r)
        self.errors = Counter("eebert_errors", "Refused or failed requests by kind", ["kind"], registry=r)
        for layer in exit_layers:
            self.exits.labels(str(layer))
        for kind in ERROR_KINDS:
            self.errors.labels(kind)

    def answered(self, seconds: float, exit_layers: list[int]) -> None:
        self.latency.observe(seconds)
        self.rows.inc(len(exit_layers))
        for layer in exit_layers:
            self.exits.labels(str(layer)).inc()

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def value(self, name: str, labels: dict | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
