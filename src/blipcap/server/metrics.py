"""Prometheus metrics for the service (text exposition format at GET /metrics).

Each app gets its own registry, so several apps in one process (tests) do not
collide. Request metrics are labelled by route, never by raw path, so a
scanner probing random URLs cannot blow up the number of series.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._optional import require

# Request latency buckets: captioning on a CPU takes seconds, on a GPU milliseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        prom = require("prometheus_client", "server", "the /metrics endpoint")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "blipcap_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = prom.Histogram(
            "blipcap_request_duration_seconds",
            "Time from request to response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = prom.Histogram(
            "blipcap_batch_size", "Images per model batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = prom.Histogram(
            "blipcap_batch_duration_seconds",
            "Model time per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = prom.Counter(
            "blipcap_images_captioned", "Images captioned by the model", registry=r
        )
        self.rejected = prom.Counter(
            "blipcap_rejected",
            "Requests refused before the model: queue_full, client_limit, deadline, draining, "
            "not_ready, body_too_large, slow_body, uploads_full",
            ["reason"],
            registry=r,
        )
        self.queue_depth = prom.Gauge(
            "blipcap_queue_depth", "Images waiting for a model batch", registry=r
        )
        self.images_per_second = prom.Gauge(
            "blipcap_images_per_second",
            "Model throughput over the last minute of batches (images per busy second)",
            registry=r,
        )
        self.uploads = prom.Gauge(
            "blipcap_uploads_in_progress",
            "Request bodies still being received (not yet counted as requests in progress)",
            registry=r,
        )
        self.ready = prom.Gauge("blipcap_ready", "1 when the model is loaded and warm", registry=r)

    def bind(
        self,
        queue_depth: Callable[[], float],
        uploads: Callable[[], float],
        images_per_second: Callable[[], float],
        ready: Callable[[], bool],
    ) -> None:
        """Gauges read live values at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.uploads.set_function(uploads)
        self.images_per_second.set_function(images_per_second)
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.images.inc(size)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting requests and timing them, labelled by known route."""

    def __init__(self, app: Any, metrics: Metrics, routes: Callable[[], set[str]]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in self.routes() else "other"
        status = 500
        started = time.perf_counter()

        async def tracking_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
