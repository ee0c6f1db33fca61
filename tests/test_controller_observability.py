"""The controller's metrics, probes and liveness rule: metrics read back through Prometheus'
own text parser, the probes through a real HTTP server on an ephemeral loopback port.  A fixed
clock stands in for time, so no assertion depends on how long anything takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from controlplane.observability import ControllerTelemetry, HealthServer, liveness

Check = Callable[[], tuple[bool, str]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: bytes) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def series(found: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for sample, labels in found if sample == name}


def ok() -> tuple[bool, str]:
    return True, ""


@pytest.fixture
def serve() -> Iterator[Callable[..., HealthServer]]:
    started: list[HealthServer] = []

    def start(healthy: Check = ok, ready: Check = ok, port: int = 0) -> HealthServer:
        server = HealthServer(ControllerTelemetry(), healthy=healthy, ready=ready, port=port)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_metrics_count_what_the_controller_reports() -> None:
    telemetry = ControllerTelemetry(clock=lambda: 1_700_000_000.0)
    assert telemetry.last_tick_at is None
    for seconds, ok_ in ((0.2, True), (1.5, False), (0.01, True)):
        telemetry.tick_done(seconds, ok_)
    for action in ("step", "step", "rollback"):
        telemetry.decision(action)
    telemetry.router_error("istio")
    telemetry.leases(1)
    telemetry.experiment("ranker-v2", 2, "canary", 10.0)

    found = samples(telemetry.exposition())
    assert value(found, "abmesh_controller_ticks_total", result="ok") == 2
    assert value(found, "abmesh_controller_ticks_total", result="error") == 1
    assert value(found, "abmesh_controller_tick_seconds_count") == 3
    assert value(found, "abmesh_controller_tick_seconds_sum") == pytest.approx(1.71)
    assert value(found, "abmesh_controller_tick_seconds_bucket", le="0.25") == 2
    assert value(found, "abmesh_controller_tick_seconds_bucket", le="30.0") == 3
    assert value(found, "abmesh_controller_decisions_total", action="step") == 2
    assert value(found, "abmesh_controller_decisions_total", action="rollback") == 1
    assert value(found, "abmesh_controller_router_errors_total", router="istio") == 1
    assert value(found, "abmesh_controller_leases_held") == 1
    assert (
        value(found, "abmesh_controller_experiment_phase", experiment="ranker-v2", kind="canary")
        == 2
    )
    assert value(found, "abmesh_controller_candidate_weight", experiment="ranker-v2") == 10
    assert value(found, "abmesh_controller_last_tick_timestamp_seconds") == 1_700_000_000
    assert telemetry.last_tick_at == 1_700_000_000


def test_each_experiment_keeps_one_phase_series_until_forgotten() -> None:
    telemetry = ControllerTelemetry()
    telemetry.experiment("a", 0, "canary", 5.0)
    telemetry.experiment("b", 1, "ab", 50.0)
    telemetry.experiment("a", 1, "ab", 50.0)  # canary done: the canary series must go
    found = samples(telemetry.exposition())
    assert series(found, "abmesh_controller_experiment_phase") == {
        frozenset({("experiment", "a"), ("kind", "ab")}),
        frozenset({("experiment", "b"), ("kind", "ab")}),
    }
    assert value(found, "abmesh_controller_experiment_phase", experiment="a", kind="ab") == 1

    telemetry.forget("a")
    telemetry.forget("never-seen")  # nothing to drop is not an error
    found = samples(telemetry.exposition())
    assert series(found, "abmesh_controller_experiment_phase") == {
        frozenset({("experiment", "b"), ("kind", "ab")})
    }
    assert series(found, "abmesh_controller_candidate_weight") == {frozenset({("experiment", "b")})}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.experiment("a", 0, "canary", 100.5), "candidate_weight"),
        (lambda t: t.experiment("a", 0, "canary", -1.0), "candidate_weight"),
        (lambda t: t.experiment("a", -1, "canary", 5.0), "phase_index"),
        (lambda t: t.tick_done(-0.1, True), "seconds"),
        (lambda t: t.leases(-1), "held"),
    ],
)
def test_impossible_values_are_refused_by_name(
    call: Callable[[ControllerTelemetry], None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(ControllerTelemetry())


def test_two_controllers_in_one_process_keep_their_own_metrics() -> None:
    first, second = ControllerTelemetry(), ControllerTelemetry()
    first.decision("promote")
    second.leases(3)
    one, two = samples(first.exposition()), samples(second.exposition())
    assert value(one, "abmesh_controller_decisions_total", action="promote") == 1
    assert value(two, "abmesh_controller_decisions_total", action="promote") is None
    assert (
        value(one, "abmesh_controller_leases_held"),
        value(two, "abmesh_controller_leases_held"),
    ) == (0, 3)


def test_metrics_are_served_in_the_prometheus_text_format(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve()
    assert server.url == f"http://127.0.0.1:{server.port}"
    server.telemetry.tick_done(0.05, ok=True)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        got = client.get("/metrics")
        head = client.head("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"] == CONTENT_TYPE_LATEST
    assert value(samples(got.content), "abmesh_controller_ticks_total", result="ok") == 1
    assert (head.status_code, head.content) == (200, b"")


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        ((True, ""), 200, "ok\n"),
        ((True, "leader, 3 experiments"), 200, "leader, 3 experiments\n"),
        ((False, "no tick for 200.0 s"), 503, "no tick for 200.0 s\n"),
        ((False, ""), 503, "unavailable\n"),
    ],
)
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_as_their_check_says(
    serve: Callable[..., HealthServer],
    path: str,
    answer: tuple[bool, str],
    status: int,
    body: str,
) -> None:
    checks = {path: lambda: answer}
    server = serve(healthy=checks.get("/healthz", ok), ready=checks.get("/readyz", ok))
    other = "/readyz" if path == "/healthz" else "/healthz"
    with httpx.Client(base_url=server.url, timeout=5) as client:
        got = client.get(path, params={"verbose": "1"})  # a query string does not matter
        assert (got.status_code, got.text) == (status, body)
        assert client.get(other).status_code == 200  # each path asks its own check


def test_a_check_that_raises_is_a_failing_probe_not_a_dead_server(
    serve: Callable[..., HealthServer],
) -> None:
    def broken() -> tuple[bool, str]:
        raise ConnectionError("store unreachable")

    server = serve(ready=broken)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        got = client.get("/readyz")
        assert (got.status_code, got.text) == (503, "ConnectionError: store unreachable\n")
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_unknown_paths_and_other_methods_are_refused(serve: Callable[..., HealthServer]) -> None:
    server = serve()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/").status_code == 404
        assert client.get("/metrics/extra").status_code == 404
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            got = client.request(method, "/healthz")
            assert got.status_code == 405, method
            assert got.headers["allow"] == "GET, HEAD"


def test_stop_frees_the_port(serve: Callable[..., HealthServer]) -> None:
    server = serve()
    port = server.port
    with pytest.raises(OSError, match="in use"):
        HealthServer(ControllerTelemetry(), healthy=ok, ready=ok, port=port)
    server.stop()
    server.stop()  # a second stop is harmless
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=5) as client:
        client.get(f"{server.url}/healthz")
    again = serve(port=port)
    assert again.port == port
    with httpx.Client(base_url=again.url, timeout=5) as client:
        assert client.get("/healthz").status_code == 200


def test_the_server_works_as_a_context_manager() -> None:
    with HealthServer(ControllerTelemetry(), healthy=ok, ready=ok) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("last_tick_at", "now", "grace", "alive", "quoted"),
    [
        (None, 1120.0, 3.0, True, "no tick yet, started 120.0 s ago"),  # limit 3 × 30 + 30
        (None, 1120.5, 3.0, False, "no tick yet, started 120.5 s ago"),
        (2000.0, 2120.0, 3.0, True, "last tick 120.0 s ago"),
        (2000.0, 2120.1, 3.0, False, "last tick 120.1 s ago"),
        (2000.0, 2060.0, 1.0, True, "last tick 60.0 s ago"),  # limit 1 × 30 + 30
        (2000.0, 2060.1, 1.0, False, "last tick 60.1 s ago"),
        (2000.0, 1990.0, 3.0, True, "last tick 0.0 s ago"),  # the clock stepped back
    ],
)
def test_liveness_at_its_boundaries(
    last_tick_at: float | None, now: float, grace: float, alive: bool, quoted: str
) -> None:
    result, message = liveness(last_tick_at, 1000.0, 30.0, now, grace=grace)
    assert result is alive
    assert message.startswith(quoted)


def test_liveness_refuses_a_meaningless_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        liveness(None, 0.0, 0.0, 1.0)
