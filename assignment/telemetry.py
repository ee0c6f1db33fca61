"""Prometheus metrics of the service, on a registry of its own per app (so several apps in one
process, as in tests, do not collide), and the middleware that times every request.

With several worker processes (`abmesh serve --workers N` sets PROMETHEUS_MULTIPROC_DIR) each
worker writes its values to files there and /metrics merges them, so a scrape sees the sum over
workers whichever worker answers.  The config age is then exported as the time of the last
refresh (`time() - abmesh_config_refreshed_timestamp_seconds` in PromQL), since a gauge computed
at scrape time cannot be merged across processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Telemetry:
    def __init__(self, config_age: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.assignments = Counter(
            "abmesh_assignments",
            "Assignments answered, by experiment and variant.",
            ["experiment", "variant"],
            registry=r,
        )
        self.latency = Histogram(
            "abmesh_http_request_duration_seconds",
            "HTTP request latency, by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "abmesh_store_errors",
            "Store calls that failed, by operation.",
            ["operation"],
            registry=r,
        )
        self.exposures_flushed = Counter(
            "abmesh_exposures_flushed", "Exposures written to the store.", registry=r
        )
        self.exposures_dropped = Counter(
            "abmesh_exposures_dropped",
            "Exposures dropped because the buffer was full.",
            registry=r,
        )
        self.events = Counter(
            "abmesh_events",
            "Events received, by outcome (accepted, duplicate, rejected) and rejection reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.exposures_reported = Counter(
            "abmesh_exposures_reported",
            "Exposures reported by local evaluation (POST /v1/exposures), by outcome (accepted,"
            " rejected) and rejection reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.extauthz_errors = Counter(
            "abmesh_extauthz_errors",
            "ext_authz checks answered without a header after an internal error.",
            registry=r,
        )
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.config_refreshed = Gauge(
            "abmesh_config_refreshed_timestamp_seconds",
            "Unix time the configs were last confirmed current.",
            multiprocess_mode="max",
            registry=r,
        )
        if not self.multiprocess:
            age = Gauge(
                "abmesh_config_age_seconds",
                "Seconds since the configs were last confirmed current.",
                registry=r,
            )
            age.set_function(config_age)

    def exposition(self) -> bytes:
        """The text /metrics serves: this process's registry, or every worker's files."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class LatencyMiddleware:
    """Times each HTTP request by its route template (not the raw path: bounded label values)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(route, scope["method"]).observe(time.perf_counter() - start)
