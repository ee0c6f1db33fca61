"""Relative guardrails end to end below the mesh: the reader's increments (first reading,
counter resets, a changed definition, provider errors), the Prometheus provider's counters
against a Prometheus query API on loopback, and the controller rolling back a candidate with
more 5xx than stable while a healthy one walks on — with the test kept across restarts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from controlplane.metrics import Counts, Phase
from controlplane.metrics.prometheus import PrometheusProvider
from controlplane.metrics.sequential import read_sequential
from experiments import SpecError, load_spec
from experiments.spec_rollout import OperationalGuardrail
from experiments.status import Outcome
from tests.controller_rig import Rig, spec_of
from tests.json_server import GrowingEnvoy, JsonServer

ERRORS = OperationalGuardrail(name="errors", kind="relative", query="error_ratio")
CANDIDATE, STABLE = {"variant": "candidate", "target": "v2"}, {"variant": "stable", "target": "v1"}
AT = 1795838730.125


class Scripted:
    """Counters from a list of answers per arm, one per read."""

    def __init__(self, answers: dict[str, list[Counts]]) -> None:
        self.answers = answers

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        return self.answers[variables["variant"]].pop(0)


def ok(requests: float, errors: float) -> Counts:
    return Counts(Phase.OK, requests, {"errors": errors})


def read_all(answers: dict[str, list[Counts]], g: OperationalGuardrail = ERRORS) -> list[Any]:
    provider, saved, out = Scripted(answers), None, []
    while answers["candidate"]:
        reading, saved = read_sequential(g, provider, CANDIDATE, STABLE, saved)  # type: ignore[arg-type]
        out.append((reading, saved))
    return out


def test_the_first_reading_starts_the_count_and_increments_feed_the_test() -> None:
    (first, s1), (second, s2), (third, s3) = read_all({
        "candidate": [ok(5000, 40), ok(5050, 40), ok(5300, 41)],
        "stable": [ok(90000, 700), ok(92000, 702), ok(94000, 704)],
    })  # fmt: skip
    assert (first.status, first.message) == (
        "not_enough_data", "first reading: the count starts here")  # fmt: skip
    assert "test" not in s1  # what came before the rollout is not evidence
    assert second.status == "not_enough_data"  # 50 candidate requests: 100 per arm needed
    assert "50 requests in an arm, 100 needed" in second.message
    assert s2["test"]["candidate"] == {"requests": 50.0, "events": {"errors": 0.0}}
    assert third.status == "pass"
    assert s3["test"]["candidate"]["requests"] == 300.0
    assert s3["test"]["stable"] == {"requests": 4000.0, "events": {"errors": 4.0}}
    assert third.to_dict()["kind"] == "relative"
    assert third.message.startswith("5xx answers: 1 of 300 candidate requests vs 4 of 4000")


def test_a_reset_counter_counts_from_zero_and_errors_leave_the_test_alone() -> None:
    readings = read_all({
        "candidate": [ok(5000, 40), ok(100, 1), Counts.error("prometheus: ConnectError"),
                      ok(300, 2)],
        "stable": [ok(90000, 700), ok(92000, 702), ok(0, 0), ok(94000, 704)],
    })  # fmt: skip
    (_, _), (_, s2), (failed, s3), (_, s4) = readings
    assert s2["test"]["candidate"]["requests"] == 100.0  # Envoy restarted: 100 new requests
    assert (failed.status, failed.message) == ("error", "candidate arm: prometheus: ConnectError")
    assert s3 == s2  # the test is as it was
    assert s4["test"]["candidate"]["requests"] == 300.0


def test_a_changed_definition_starts_a_new_test() -> None:
    provider = Scripted({"candidate": [ok(10, 0), ok(500, 0), ok(900, 0)],
                         "stable": [ok(10, 0), ok(500, 0), ok(900, 0)]})  # fmt: skip
    _, saved = read_sequential(ERRORS, provider, CANDIDATE, STABLE, None)  # type: ignore[arg-type]
    _, saved = read_sequential(ERRORS, provider, CANDIDATE, STABLE, saved)  # type: ignore[arg-type]
    looser = ERRORS.model_copy(update={"tolerance": 0.5})
    reading, saved = read_sequential(looser, provider, CANDIDATE, STABLE, saved)  # type: ignore[arg-type]
    assert reading.message == "first reading: the count starts here"
    assert saved is not None
    assert "test" not in saved


@pytest.fixture
def prometheus() -> Iterator[tuple[JsonServer, GrowingEnvoy]]:
    server, envoy = JsonServer().start(), GrowingEnvoy(per_read=1000)
    server.answer_for = envoy
    yield server, envoy
    server.stop()


def test_the_prometheus_counters_read_errors_and_histogram_buckets(
    prometheus: tuple[JsonServer, GrowingEnvoy],
) -> None:
    server, envoy = prometheus
    provider = PrometheusProvider(server.url, "envoy")
    envoy.errors["v2"], envoy.slow["v2"] = 0.05, 0.25
    errors = provider.counters(ERRORS, CANDIDATE, AT)
    assert (errors.phase, errors.requests, dict(errors.events)) == (
        Phase.OK, 1000.0, {"errors": 50.0})  # fmt: skip
    latency = OperationalGuardrail(name="slow", kind="relative", query="p99_latency_ms",
                                   above_ms=[100, 250])  # fmt: skip
    slow = provider.counters(latency, CANDIDATE, AT)
    assert (slow.requests, dict(slow.events)) == (1000.0, {"gt_100": 250.0, "gt_250": 0.0})
    # Every query at the instant asked: both arms' increments then cover one interval.
    assert {q.query["time"][0] for q in server.seen} == {"1795838730.125"}
    odd = latency.model_copy(update={"above_ms": (150.0,)})
    refused = provider.counters(odd, CANDIDATE, AT)
    assert refused.phase is Phase.ERROR
    assert refused.message == ("prometheus: no bucket le=150 in the histogram (its bounds: 25,"
                               " 50, 100, 250, 500, 1000, inf)")  # fmt: skip
    custom = OperationalGuardrail(
        name="timeouts", kind="relative",
        promql='sum(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{target}"})',
        requests_promql='sum(envoy_cluster_upstream_rq_total{envoy_cluster_name="{target}"})',
    )  # fmt: skip
    mine = provider.counters(custom, CANDIDATE, AT)  # (the fake serves requests as they are read)
    assert (mine.phase, mine.requests, dict(mine.events)) == (
        Phase.OK, 2000.0, {"events": 50.0})  # fmt: skip


@pytest.mark.parametrize(
    ("guardrail", "message"),
    [
        ({"kind": "relative", "query": "error_ratio", "limit": 0.01}, "not a limit"),
        ({"kind": "relative", "query": "error_ratio", "bound": "min"}, "only bound max"),
        ({"kind": "ceiling", "query": "error_ratio"}, "needs a limit over 0"),
        ({"kind": "ceiling", "query": "error_ratio", "limit": 5}, "under 1, not 5"),
        ({"kind": "ceiling", "query": "p99_latency_ms", "limit": 1000, "tolerance": 0.1},
         "tolerance: only for kind relative"),
        ({"query": "error_ratio", "limit": 1, "alpha": 0.05},
         "alpha: only for kind relative or ceiling"),
        ({"kind": "relative", "url": "http://m/", "json_path": "a"}, "needs counters"),
        ({"kind": "relative", "query": "request_rate"}, "error_ratio or p99_latency_ms"),
        ({"kind": "relative", "promql": "x_total"}, "promql .events. and requests_promql go"),
        ({"kind": "relative", "query": "error_ratio", "above_ms": [100]}, "above_ms goes with"),
        ({"query": "error_ratio", "limit": 1, "tolerance": 0.5}, "tolerance: only for kind rel"),
        ({"query": "error_ratio"}, "a threshold guardrail needs a limit"),
        ({"query": "error_ratio", "limit": 1, "provider": "datadog"},
         "unknown metrics provider 'datadog'; known: prometheus, web"),
    ],
)  # fmt: skip
def test_sequential_fields_are_validated_at_load(guardrail: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(spec_of(guardrails=[{"name": "g", **guardrail}]))


def test_the_controller_rolls_back_more_errors_than_stable_and_keeps_the_test(rig: Rig) -> None:
    """Default guardrails (relative + ceilings); the candidate answers 5 % errors against
    stable's 0.1 %, under the 5 % ceiling: the comparison alone rolls it back."""
    doc = spec_of(steps=(10, 50))
    del doc["rollout"]["guardrails"]
    rig.start(doc)
    rig.provider.requests = 1000.0
    rig.provider.errors = {"candidate": 1.0, "stable": 1.0}
    for _ in range(3):
        rig.controller().tick()
    assert rig.share() == 50  # healthy: the first reading counts from there, then steps
    rig.provider.errors["candidate"] = 50.0
    ticks = 0
    while rig.store.get_experiment("ranker").status.outcome is None and ticks < 20:
        rig.controller().tick()  # a new controller each tick: the test lives in the status
        ticks += 1
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    last = rig.store.audit(record.uid)[-1]
    assert last["action"] == "rollback"
    assert "guardrail errors_vs_stable: worse than stable beyond its tolerance" in last["what"]
    failed = {g["name"]: g for g in last["guardrails"] if g["status"] == "fail"}
    assert list(failed) == ["errors_vs_stable"]
    assert failed["errors_vs_stable"]["pvalue"] < 0.01
    print(f"rolled back after {ticks} ticks: {last['what']}")
    assert ticks <= 5


def test_a_relative_reading_reaches_decide_as_its_p_against_alpha() -> None:
    """In an A/B phase the readings go to analysis.decide: a relative one as its always-valid
    p with α as a lower limit, so a pass stays a pass whatever the noisy ratio."""
    provider = Scripted({"candidate": [ok(0, 0), ok(1000, 3)], "stable": [ok(0, 0), ok(1000, 2)]})
    _, saved = read_sequential(ERRORS, provider, CANDIDATE, STABLE, None)  # type: ignore[arg-type]
    reading, _ = read_sequential(ERRORS, provider, CANDIDATE, STABLE, saved)  # type: ignore[arg-type]
    assert (reading.status, reading.value) == ("pass", 1.5)  # over 1.2×, but no evidence
    check = reading.threshold("candidate").check()
    assert (check.status, check.value, check.limit, check.bound) == (
        "pass", reading.pvalue, 0.01, "min")  # fmt: skip


def test_a_ceiling_reads_the_candidate_alone_and_fails_over_its_share() -> None:
    """p99 ≤ 1 s as a ceiling: at most 1 % of requests over 1000 ms, counted at the bucket."""
    g = OperationalGuardrail(name="p99", kind="ceiling", query="p99_latency_ms", limit=1000)
    assert (g.cuts_ms, g.ceiling_share) == ((1000.0,), 0.01)

    def slow(requests: float, over: float) -> Counts:
        return Counts(Phase.OK, requests, {"gt_1000": over})

    provider = Scripted({"candidate": [slow(0, 0), slow(500, 2), slow(1000, 60)], "stable": []})
    readings, saved = [], None
    for _ in range(3):
        reading, saved = read_sequential(g, provider, CANDIDATE, STABLE, saved)  # type: ignore[arg-type]
        readings.append(reading)
    assert [r.status for r in readings] == ["not_enough_data", "pass", "fail"]
    assert readings[2].message.startswith("requests over 1000 ms: 60 of 1000 candidate requests"
                                          " (6.000%); always-valid p")  # fmt: skip
    assert (readings[2].value, readings[2].limit, readings[2].kind) == (0.06, 0.01, "ceiling")
    assert "guardrail p99: over its ceiling" in readings[2].describe()
