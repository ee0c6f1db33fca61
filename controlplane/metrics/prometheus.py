"""Guardrail readings from Prometheus over its HTTP API: a preset by name, or any PromQL.

Presets per mesh, as Flagger keeps its observers' queries: `envoy` (a plain Envoy's cluster
stats, label `envoy_cluster_name`) and `istio` (Istio's standard metrics by destination
service and version).  `{target}` is the variant's cluster (envoy), `{host}`, `{subset}` and
`{service_label}` its destination (istio), `{window}` the rate window.  `SAMPLES` counts the
candidate's requests in the window, read only for a guardrail with `min_requests`.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from controlplane.metrics.protocol import Counts, Measurement, Phase, render
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


# A relative guardrail's cumulative counters (controlplane.metrics.sequential takes the
# increments): requests, 5xx answers, and the latency histogram's buckets by `le`.
COUNTERS: dict[str, dict[str, str]] = {
    "envoy": {
        "requests": 'sum(envoy_cluster_upstream_rq_total{envoy_cluster_name="{target}"})',
        "errors": 'sum(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{target}",'
        'envoy_response_code_class="5"}) or vector(0)',
        "buckets": "sum by (le) (envoy_cluster_upstream_rq_time_bucket{"
        'envoy_cluster_name="{target}"})',
    },
    "istio": {
        "requests": 'sum(istio_requests_total{{service_label}="{host}",'
        'destination_version="{subset}",reporter="destination"})',
        "errors": 'sum(istio_requests_total{{service_label}="{host}",destination_version='
        '"{subset}",reporter="destination",response_code=~"5.."}) or vector(0)',
        "buckets": "sum by (le) (istio_request_duration_milliseconds_bucket{"
        '{service_label}="{host}",destination_version="{subset}",reporter="destination"})',
    },
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


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every query: httpx makes a new one per call otherwise, loading the
    CA bundle each time (about 50 ms a query, most of a controller tick's guardrail reads)."""
    return httpx.create_ssl_context()


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

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        """One arm's cumulative counters, every query at the instant `at` (the caller reads
        both arms at one instant: increments over different intervals would bias the test)."""
        values, instant = {"window": self.window, **variables}, f"{at:.3f}"
        presets = COUNTERS[self.mesh]
        if guardrail.promql is not None and guardrail.requests_promql is not None:
            events = self.instant(render(guardrail.promql, values), instant)
            requests = self.instant(render(guardrail.requests_promql, values), instant)
            return _counts(requests, {"events": events})
        if guardrail.query == "p99_latency_ms":
            return self._slower(render(presets["buckets"], values), guardrail.cuts_ms, instant)
        requests = self.instant(render(presets["requests"], values), instant)
        errors = self.instant(render(presets["errors"], values), instant)
        return _counts(requests, {"errors": errors})

    def _slower(self, promql: str, cuts: tuple[float, ...], at: str) -> Counts:
        """Requests slower than each cut, from the cumulative histogram's buckets."""
        series = self._vector(promql, at)
        if isinstance(series, Measurement):
            return Counts(series.phase, message=series.message)
        try:
            buckets = {float(s["metric"]["le"]): float(s["value"][1]) for s in series}
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return Counts.error(f"prometheus: a bucket without le or value ({type(exc).__name__})")
        total = buckets.get(math.inf)
        missing = [f"{c:g}" for c in cuts if c not in buckets]
        if total is None or missing:
            known = ", ".join(f"{b:g}" for b in sorted(buckets))
            what = f"no bucket le={', '.join(missing)}" if missing else "no +Inf bucket"
            return Counts.error(f"prometheus: {what} in the histogram (its bounds: {known})")
        return Counts(Phase.OK, total, {f"gt_{c:g}": total - buckets[c] for c in cuts})

    def instant(self, promql: str, at: str | None = None) -> Measurement:
        """The instant value of a query that returns one series."""
        series = self._vector(promql, at)
        if isinstance(series, Measurement):
            return series
        try:
            return Measurement.of(series[0]["value"][1], where=" from prometheus")
        except (KeyError, IndexError, TypeError) as exc:
            return Measurement.error(f"prometheus: unexpected answer ({type(exc).__name__})")

    def _vector(self, promql: str, at: str | None) -> list[Any] | Measurement:
        """The series of an instant query, or the measurement that says why there are none."""
        params = {"query": promql, **({"time": at} if at else {})}
        try:
            reply = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout,
                              verify=_tls())  # fmt: skip
        except httpx.HTTPError as exc:
            return Measurement.error(f"prometheus: {type(exc).__name__}: {exc}")
        if reply.status_code != 200:
            return Measurement.error(f"prometheus answered {reply.status_code}: {reply.text[:200]}")
        try:
            result = reply.json()["data"]["result"]
        except (ValueError, KeyError, TypeError) as exc:
            return Measurement.error(f"prometheus: unexpected answer ({type(exc).__name__})")
        if not isinstance(result, list) or not result:
            return Measurement(Phase.NO_DATA, message="prometheus: empty result")
        return result

    def is_online(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False


def _counts(requests: Measurement, events: Mapping[str, Measurement]) -> Counts:
    """Counters from single readings: any error or missing reading makes the whole an error
    or no data, since an increment needs every counter of the tick."""
    for m in (requests, *events.values()):
        if m.phase is not Phase.OK or m.value is None:
            return Counts(m.phase, message=m.message)
    return Counts(Phase.OK, requests.value or 0.0, {k: m.value or 0.0 for k, m in events.items()})
