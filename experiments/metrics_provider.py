"""Operational metrics for the guardrails, from Prometheus over its HTTP API.

Named query templates per mesh: `envoy` (a plain Envoy's cluster stats, label
`envoy_cluster_name`) and `istio` (Istio's standard metrics by destination service and
version).  `$target` is the variant's cluster (envoy) or `$host`/`$subset` its destination
(istio); `$window` the rate window.  An empty result or NaN (no traffic: 0/0) is no data —
None — never a pass.
"""

from __future__ import annotations

import math
from string import Template
from typing import Protocol

import httpx

from experiments.errors import InvalidInputError

TEMPLATES: dict[str, dict[str, str]] = {
    "envoy": {
        "p99_latency_ms": "histogram_quantile(0.99, sum by (le) (rate("
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="$target"}[$window])))',
        "error_ratio": "(sum(rate(envoy_cluster_upstream_rq_xx{"
        'envoy_cluster_name="$target",envoy_response_code_class="5"}[$window])) or vector(0))'
        ' / sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="$target"}[$window]))',
        "request_rate": "sum(rate(envoy_cluster_upstream_rq_total{"
        'envoy_cluster_name="$target"}[$window]))',
    },
    "istio": {
        "p99_latency_ms": "histogram_quantile(0.99, sum by (le) (rate("
        'istio_request_duration_milliseconds_bucket{$service_label="$host",'
        'destination_version="$subset",reporter="destination"}[$window])))',
        "error_ratio": '(sum(rate(istio_requests_total{$service_label="$host",'
        'destination_version="$subset",reporter="destination",response_code=~"5.."}[$window]))'
        ' or vector(0)) / sum(rate(istio_requests_total{$service_label="$host",'
        'destination_version="$subset",reporter="destination"}[$window]))',
        "request_rate": 'sum(rate(istio_requests_total{$service_label="$host",'
        'destination_version="$subset",reporter="destination"}[$window]))',
    },
}


def query_labels(host: str, subset: str | None, target: str) -> dict[str, str]:
    """The template labels for one variant.  Istio labels a short service name
    `destination_service_name` and the full one `destination_service`; a workload without a
    `version` label is reported as version "unknown"."""
    return {
        "target": target,
        "host": host,
        "service_label": "destination_service" if "." in host else "destination_service_name",
        "subset": subset or "unknown",
    }


class MetricsProvider(Protocol):
    def query(self, promql: str) -> float | None: ...

    def value(self, template: str, **labels: str) -> float | None: ...

    def is_online(self) -> bool: ...


class PrometheusProvider:
    def __init__(self, url: str, mesh: str = "envoy", window: str = "30s", timeout: float = 5.0):
        if mesh not in TEMPLATES:
            raise InvalidInputError(
                f"unknown mesh {mesh!r} for queries; known: {sorted(TEMPLATES)}"
            )
        self.url, self.mesh, self.window, self.timeout = url.rstrip("/"), mesh, window, timeout

    def query(self, promql: str) -> float | None:
        """The instant value of a query that returns one series; None for no data."""
        reply = httpx.get(
            f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
        )
        reply.raise_for_status()
        result = reply.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None

    def value(self, template: str, **labels: str) -> float | None:
        try:
            text = TEMPLATES[self.mesh][template]
        except KeyError:
            raise InvalidInputError(
                f"no query template {template!r} for {self.mesh}; known:"
                f" {sorted(TEMPLATES[self.mesh])}"
            ) from None
        return self.query(Template(text).substitute(window=self.window, **labels))

    def is_online(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False
