"""The metrics providers against real HTTP servers on loopback: the `web` provider against a
JSON endpoint the test runs, the Prometheus provider against the same server speaking
Prometheus' query API (the real Prometheus is in test_integrations).  Every failure is a
measurement with a phase and a message, never an exception."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.metrics import (
    Measurement,
    Phase,
    ProviderConfig,
    Providers,
    make_provider,
    read_guardrails,
)
from controlplane.metrics.prometheus import PrometheusProvider
from controlplane.metrics.web import WebProvider
from experiments.errors import InvalidInputError
from experiments.spec_rollout import OperationalGuardrail
from tests.json_server import Answer, JsonServer, Seen, prometheus_answer

VARIABLES = {"service": "ranker", "variant": "candidate", "namespace": "models",
             "target": "v2", "host": "model", "subset": "v2",
             "service_label": "destination_service_name"}  # fmt: skip


@pytest.fixture
def server() -> Iterator[JsonServer]:
    s = JsonServer().start()
    yield s
    s.stop()


def web(json_path: str = "data.value", **extra: Any) -> OperationalGuardrail:
    url = "http://BASE/score?variant={variant}&w={window}"
    doc = {"name": "drift", "url": url, "json_path": json_path, "limit": 0.2, **extra}
    return OperationalGuardrail.model_validate(doc)


def read(server: JsonServer, guardrail: OperationalGuardrail, timeout: float = 5.0) -> Measurement:
    provider = WebProvider(window="1m", timeout=timeout)
    # The spec's placeholders do not name the server: its address is put in here.
    url = (guardrail.url or "").replace("http://BASE", server.url)
    g = guardrail.model_copy(update={"url": url})
    return provider.query(g, VARIABLES)


def test_the_registry_refuses_unknown_providers_and_names_the_known_ones() -> None:
    refused = "unknown metrics provider 'datadog'; known: prometheus, web"
    with pytest.raises(InvalidInputError, match=refused):
        make_provider("datadog", ProviderConfig())
    with pytest.raises(InvalidInputError, match="no Prometheus URL"):
        make_provider("prometheus", ProviderConfig())
    with pytest.raises(ValueError, match="unknown metrics provider 'datadog'; known: prometh"):
        OperationalGuardrail(name="x", query="error_ratio", limit=1, provider="datadog")
    g = OperationalGuardrail(name="x", query="error_ratio", limit=1)
    m = Providers(ProviderConfig()).query(g, VARIABLES)
    assert (m.phase, m.message[:18]) == (Phase.ERROR, "no Prometheus URL ")


def test_the_web_provider_reads_a_number_at_a_path(
    server: JsonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.answers["/score"] = Answer(body={"data": {"value": [1, "0.125"]}})
    monkeypatch.setenv("SCORE_TOKEN", "t0ken")
    m = read(server, web("data.value.1", headers={"Authorization": "Bearer ${SCORE_TOKEN}"}))
    assert (m.phase, m.value) == (Phase.OK, 0.125)
    seen = server.seen[-1]
    assert seen.query == {"variant": ["candidate"], "w": ["1m"]}
    assert seen.headers["Authorization"] == "Bearer t0ken"
    server.answers["/score"] = Answer(body={"data": {"value": 3}})
    assert read(server, web()).value == 3.0


@pytest.mark.parametrize(
    ("answer", "path", "phase", "message"),
    [
        (Answer(body="<html>oops</html>"), "data.value", Phase.ERROR, "did not answer JSON"),
        (Answer(body={"data": {}}), "data.value", Phase.NO_DATA, "no 'value' in the answer"),
        (Answer(body={"data": {"value": [1]}}), "data.value.3", Phase.NO_DATA, "no '3'"),
        (Answer(body={"data": {"value": None}}), "data.value", Phase.NO_DATA, "no value"),
        (Answer(body={"data": {"value": "high"}}), "data.value", Phase.ERROR, "not a number"),
        (Answer(body={"data": {"value": {"a": 1}}}), "data.value", Phase.ERROR, "a dict"),
        (Answer(body={"data": {"value": "NaN"}}), "data.value", Phase.NO_DATA, "nan"),
        (Answer(503, {"data": {"value": 1}}), "data.value", Phase.ERROR, "answered 503"),
    ],
)
def test_what_the_web_provider_cannot_use_is_a_measurement_with_a_message(
    server: JsonServer, answer: Answer, path: str, phase: Phase, message: str
) -> None:
    server.answers["/score"] = answer
    m = read(server, web(path))
    assert (m.phase, m.value) == (phase, None)
    assert message in m.message


def test_a_slow_or_absent_endpoint_is_an_error_and_secrets_stay_out_of_messages(
    server: JsonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCORE_TOKEN", "t0ken")
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    server.answers["/score"] = Answer(body={"data": {"value": 1}}, delay_s=30)
    slow = web(headers={"Authorization": "Bearer ${SCORE_TOKEN}"},
               url="http://BASE/score?token=t0ken")  # fmt: skip
    m = read(server, slow, timeout=0.3)
    assert (m.phase, m.message) == (Phase.ERROR, f"{server.url}/score: ReadTimeout")
    m = read(server, web(headers={"X-Key": "${NOT_SET_TOKEN}"}))
    assert (m.phase, m.message) == (Phase.ERROR, "environment variable not set: NOT_SET_TOKEN")
    server.stop()
    m = read(server, slow)
    assert m.phase is Phase.ERROR
    assert "t0ken" not in m.message
    assert "ConnectError" in m.message


def test_the_prometheus_provider_renders_promql_and_counts_the_sample(server: JsonServer) -> None:
    queries: list[str] = []

    def answer(seen: Seen) -> Answer:
        query = seen.query["query"][0]
        queries.append(query)
        return prometheus_answer("40" if query.startswith("sum(increase(") else "0.002")

    server.answer_for = answer
    provider = PrometheusProvider(server.url, mesh="envoy", window="1m")
    g = OperationalGuardrail.model_validate({
        "name": "slow_share", "limit": 0.01, "min_requests": 50,
        "promql": 'sum(rate(slow{service="{service}",ns="{namespace}",v="{variant}"}[{window}]))',
    })  # fmt: skip
    m = provider.query(g, VARIABLES)
    assert (m.phase, m.value, m.sample) == (Phase.OK, 0.002, 40.0)
    assert queries[0] == 'sum(rate(slow{service="ranker",ns="models",v="candidate"}[1m]))'
    sample = 'sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="v2"}[1m]))'
    assert queries[1] == sample
    # 40 requests, 50 needed: not enough data, neither a pass nor a fail
    (reading,) = read_guardrails((g,), provider, VARIABLES)
    assert (reading.status, reading.value) == ("not_enough_data", 0.002)
    assert reading.message == "40 requests in the window, 50 needed"
    assert reading.threshold("candidate").value is None


@pytest.mark.parametrize(
    ("answer", "phase", "message"),
    [
        (prometheus_answer(None), Phase.NO_DATA, "empty result"),
        (prometheus_answer("NaN"), Phase.NO_DATA, "nan"),
        (Answer(400, {"status": "error", "error": "parse error"}), Phase.ERROR, "answered 400"),
        (Answer(body={"status": "success"}), Phase.ERROR, "unexpected answer"),
    ],
)
def test_the_prometheus_provider_turns_bad_answers_into_measurements(
    server: JsonServer, answer: Answer, phase: Phase, message: str
) -> None:
    server.answers["/api/v1/query"] = answer
    provider = PrometheusProvider(server.url, mesh="istio")
    m = provider.query(OperationalGuardrail(name="p99", query="p99_latency_ms", limit=1), VARIABLES)
    assert m.phase is phase
    assert message in m.message
    assert 'destination_service_name="model"' in server.seen[-1].query["query"][0]


class Broken:
    def query(self, guardrail: OperationalGuardrail, variables: Any) -> Measurement:
        raise RuntimeError("a bug")


def test_a_provider_that_raises_is_an_error_reading_not_an_exception() -> None:
    g = OperationalGuardrail(name="p99", query="p99_latency_ms", limit=150)
    (reading,) = read_guardrails((g,), Broken(), VARIABLES)
    assert (reading.status, reading.message) == ("error", "RuntimeError in the provider")
    (reading,) = read_guardrails((g,), None, VARIABLES)
    assert (reading.status, reading.message) == ("error", "no metrics provider configured")
