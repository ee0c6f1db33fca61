"""Guardrail readings from Prometheus over its HTTP API: a preset by name, or any PromQL.

Presets per mesh, as Flagger keeps its observers' queries: `envoy` (a plain Envoy's cluster
stats, label `envoy_cluster_name`) and `istio` (Istio's standard metrics by destination
service and version).  `{target}` is the variant's cluster (envoy), `{host}`, `{subset}` and
`{service_label}` its destination (istio), `{window}` the rate window.  `SAMPLES` counts the
candidate's requests in the window, read only for a guardrail with `min_requests`.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from controlplane.metrics.protocol import Measurement, Phase, render
from experiments.errors import InvalidInputError
from experiments.spec_rollout import OperationalGuardrail

TEMPLATES: dict[str, dict[str, str]] = {
    "envoy": {
        "p99_latency_ms": "histogram_quantile(0.99, sum by (le) (rate("
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="{target}"}[{window}])))',
        "error_ratio": "(sum(rate(envoy_cluster_upstream_rq_xx{"
        'envoy_cluster_name="{target}",envoy_response_code_class="5"}[{window}])) or vector(0))'
        ' / sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="{target}"}[{window}]))',
        "request_rate": "sum(rate(envoy_cluster_upstream_rq_total{"
        'envoy_cluster_name="{target}"}[{window}]))',
    },
    "istio": {
        "p99_latency_ms": "histogram_quantile(0.99, sum by (le) (rate("
        'istio_request_duration_milliseconds_bucket{{service_label}="{host}",'
        'destination_version="{subset}",reporter="destination"}[{window}])))',
        "error_ratio": '(sum(rate(istio_requests_total{{service_label}="{host}",'
        'destination_version="{subset}",reporter="destination",response_code=~"5.."}[{window}]))'
        ' or vector(0)) / sum(rate(istio_requests_total{{service_label}="{host}",'
        'destination_version="{subset}",reporter="destination"}[{window}]))',
        "request_rate": 'sum(rate(istio_requests_total{{service_label}="{host}",'
        'destination_version="{subset}",reporter="destination"}[{window}]))',
    },
}
SAMPLES: dict[str, str] = {
    "envoy": 'sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="{target}"}'
    "[{window}]))",
    "istio": 'sum(increase(istio_requests_total{{service_label}="{host}",'
    'destination_version="{subset}",reporter="destination"}[{window}]))',
}


def query_labels(host: str, subset: str | None, target: str) -> dict[str, str]:
    """The preset labels for one variant.  Istio labels a short service name
    `destination_service_name` and the full one `destination_service`; a workload without a
    `version` label is reported as version "unknown"."""
    return {
        "target": target,
        "host": host,
        "service_label": "destination_service" if "." in host else "destination_service_name",
        "subset": subset or "unknown",
    }


class PrometheusProvider:
    def __init__(self, url: str, mesh: str = "envoy", window: str = "30s", timeout: float = 5.0):
        if mesh not in TEMPLATES:
            raise InvalidInputError(
                f"unknown mesh {mesh!r} for queries; known: {sorted(TEMPLATES)}"
            )
        self.url, self.mesh, self.window, self.timeout = url.rstrip("/"), mesh, window, timeout

    def query(self, guardrail: OperationalGuardrail, variables: Mapping[str, str]) -> Measurement:
        values = {"window": self.window, **variables}
        text = TEMPLATES[self.mesh][guardrail.query] if guardrail.query else guardrail.promql
        if text is None:
            return Measurement.error("the prometheus provider needs a query or promql")
        reading = self.instant(render(text, values))
        if reading.phase is not Phase.OK or not guardrail.min_requests:
            return reading
        sample = self.instant(render(SAMPLES[self.mesh], values))
        if sample.phase is Phase.ERROR:
            return Measurement.error(f"sample size: {sample.message}")
        return Measurement(Phase.OK, reading.value, sample.value or 0.0)

    def instant(self, promql: str) -> Measurement:
        """The instant value of a query that returns one series."""
        try:
            reply = httpx.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            return Measurement.error(f"prometheus: {type(exc).__name__}: {exc}")
        if reply.status_code != 200:
            return Measurement.error(f"prometheus answered {reply.status_code}: {reply.text[:200]}")
        try:
            result = reply.json()["data"]["result"]
            if not result:
                return Measurement(Phase.NO_DATA, message="prometheus: empty result")
            return Measurement.of(result[0]["value"][1], where=" from prometheus")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return Measurement.error(f"prometheus: unexpected answer ({type(exc).__name__})")

    def is_online(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False
