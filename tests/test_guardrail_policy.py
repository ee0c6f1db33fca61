"""Operational guardrails judged on evidence: the spec's guardrail fields, and the
controller's failure policy (failure_limit, consecutive_error_limit, min_requests) with the
counts kept in the rollout state.  Real store, fake router and provider (tests.controller_rig)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.metrics import Measurement, Phase
from experiments import SpecError, load_spec
from experiments.status import Outcome
from tests.controller_rig import Rig, spec_of


@pytest.fixture
def rig(sqlite_store_url: str, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(sqlite_store_url, tmp_path)
    yield r
    r.store.close()


def guarded(*guardrails: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    return spec_of(steps=(10, 20, 50), guardrails=list(guardrails), **rollout)


P99 = {"name": "p99_latency_ms", "query": "p99_latency_ms", "limit": 150}


@pytest.mark.parametrize(
    ("guardrail", "message"),
    [
        ({"name": "x", "promql": "rate(x{job=\"{job}\"}[{window}])", "limit": 1},
         r"guardrail x: promql: unknown placeholder \{job\}; known: \['service'"),
        ({"name": "x", "url": "http://m/{tenant}", "json_path": "a", "limit": 1},
         r"guardrail x: url: unknown placeholder \{tenant\}"),
        ({"name": "x", "query": "error_ratio", "promql": "up", "limit": 1},
         "exactly one of query, promql or url, not \\['query', 'promql'\\]"),
        ({"name": "x", "limit": 1}, "exactly one of query, promql or url, not none"),
        ({"name": "x", "url": "http://m/", "limit": 1}, "url needs a json_path"),
        ({"name": "x", "url": "http://m/", "json_path": "a..b", "limit": 1}, "json_path"),
        ({"name": "x", "url": "http://m/", "json_path": "a", "limit": 1, "min_requests": 5},
         "min_requests needs a Prometheus query"),
        ({"name": "x", "query": "error_ratio", "json_path": "a", "limit": 1},
         "json_path and headers go with a url"),
        ({"name": "x", "url": "http://m/", "json_path": "a", "limit": 1,
          "headers": {"Authorization": "Bearer $TOKEN"}}, r"only as \$\{NAME\}"),
        ({**P99, "failure_limit": 0}, "failure_limit"),
        ({**P99, "consecutive_error_limit": -1}, "consecutive_error_limit"),
    ],
)  # fmt: skip
def test_guardrail_fields_are_validated_at_load(guardrail: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(guarded(guardrail))


def test_a_canary_without_guardrails_is_refused() -> None:
    doc = guarded(P99)
    doc["rollout"]["guardrails"] = []
    doc["rollout"]["phases"] = [{"kind": "canary", "steps": [5, 50]}, {"kind": "promote"}]
    with pytest.raises(SpecError, match="a 'canary' phase needs at least one operational guard"):
        load_spec(doc)
    doc["rollout"]["phases"] = [{"kind": "ab"}]  # judged by the sequential test: allowed
    assert load_spec(doc).rollout is not None


def test_guardrail_fields_and_their_defaults() -> None:
    spec = load_spec(guarded(
        P99,
        {"name": "slow", "promql": 'sum(rate(x{svc="{service}",ns="{namespace}"}[{window}]))',
         "limit": 0.1, "min_requests": 100, "failure_limit": 3, "consecutive_error_limit": 2},
        {"name": "drift", "url": "http://scores/{variant}", "json_path": "data.0.score",
         "limit": 0.2, "headers": {"Authorization": "Bearer ${SCORE_TOKEN}"}},
    ))  # fmt: skip
    assert spec.rollout is not None
    p99, slow, drift = spec.rollout.guardrails
    assert (p99.provider, p99.failure_limit, p99.consecutive_error_limit) == ("prometheus", 1, None)
    assert (slow.provider, slow.min_requests, slow.failure_limit) == ("prometheus", 100, 3)
    assert drift.provider == "web"  # a url means the web provider unless another is named


def readings(rig: Rig) -> list[list[str]]:
    entries = rig.store.audit(rig.store.get_experiment("ranker").uid)
    return [[g["status"] for g in e["guardrails"]] for e in entries if e.get("guardrails")]


def test_failure_limit_counts_failing_readings_in_a_row_across_restarts(rig: Rig) -> None:
    rig.start(guarded({**P99, "failure_limit": 3}))
    rig.controller().tick()  # start: 10 %
    rig.provider.values["p99_latency_ms"] = 300.0
    rig.controller().tick()
    record = rig.store.get_experiment("ranker")
    healthy = record.status.condition("GuardrailsHealthy")
    assert healthy is not None
    assert (healthy.status, healthy.reason) == ("Unknown", "GuardrailFailing")
    assert "(1 in a row, failure_limit 3)" in healthy.message
    assert rig.share() == 10  # a failing reading is not a pass either: the step waits
    rig.provider.values["p99_latency_ms"] = 20.0
    rig.controller().tick()  # a pass resets the count (and completes the step)
    assert rig.share() == 20
    rig.provider.values["p99_latency_ms"] = 300.0
    rig.controller().tick()
    # a new controller (a restart) goes on counting from the stored rollout state
    rig.controller(owner="c1").tick()
    assert rig.store.get_experiment("ranker").status.rollout["guardrail_counts"] == {
        "p99_latency_ms": {"failures": 2, "errors": 0}}  # fmt: skip
    assert rig.share() == 20
    rig.controller(owner="c1").tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    last = rig.store.audit(record.uid)[-1]
    assert last["action"] == "rollback"
    assert "is 300, over its limit 150 (3 in a row, failure_limit 3)" in last["what"]
    assert last["guardrails"] == [
        {"name": "p99_latency_ms", "value": 300.0, "limit": 150.0, "status": "fail"}]  # fmt: skip


def test_provider_errors_fail_only_past_the_consecutive_error_limit(rig: Rig) -> None:
    rig.start(guarded({**P99, "consecutive_error_limit": 2}, progress_deadline_s=3600))
    c = rig.controller()
    c.tick()
    rig.provider.values["p99_latency_ms"] = Measurement.error("prometheus: ConnectError")
    c.tick()
    c.tick()
    assert rig.store.get_experiment("ranker").status.outcome is None  # 2 errors: tolerated
    healthy = rig.store.get_experiment("ranker").status.condition("GuardrailsHealthy")
    assert healthy is not None
    assert healthy.reason == "NoData"
    assert "provider error, which is not a pass (prometheus: ConnectError)" in healthy.message
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    last = rig.store.audit(record.uid)[-1]
    assert "3 errors in a row > consecutive_error_limit 2" in last["what"]
    assert readings(rig)[-1] == ["error"]
    assert last["guardrails"][0]["message"] == "prometheus: ConnectError"


def test_without_an_error_limit_errors_only_hold_until_the_deadline(rig: Rig) -> None:
    rig.start(guarded(P99, progress_deadline_s=60))
    c = rig.controller()
    c.tick()
    rig.provider.values["p99_latency_ms"] = Measurement.error("prometheus answered 503")
    for _ in range(5):
        rig.clock.now += 10
        c.tick()
    assert rig.store.get_experiment("ranker").status.outcome is None
    assert rig.share() == 10
    rig.clock.now += 20
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    assert "no guardrail data for 70 s" in rig.store.audit(record.uid)[-1]["what"]


def test_a_reading_below_min_requests_is_neither_a_pass_nor_a_fail(rig: Rig) -> None:
    slow = {"name": "slow", "promql": 'x{s="{service}",v="{variant}",ns="{namespace}"}',
            "limit": 0.1, "min_requests": 100}  # fmt: skip
    rig.start(guarded(slow, on_no_data="hold", progress_deadline_s=60))
    c = rig.controller()
    c.tick()
    # over the limit, on a sample too small to count: no rollback, no step
    rig.provider.values["slow"] = Measurement(Phase.OK, 0.5, sample=40)
    rig.clock.now += 70
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is None
    assert rig.share() == 10
    healthy = record.status.condition("GuardrailsHealthy")
    assert healthy is not None
    assert (healthy.reason, healthy.message) == ("NoData", "guardrail slow: not enough data,"
        " which is not a pass (40 requests in the window, 100 needed)")  # fmt: skip
    assert rig.actions() == ["start", "hold"]
    assert readings(rig)[-1] == ["not_enough_data"]
    rig.provider.values["slow"] = Measurement(Phase.OK, 0.05, sample=400)
    c.tick()
    assert rig.share() == 20
    assert readings(rig)[-1] == ["pass"]
    # the variables the template was filled with: the candidate's
    asked = rig.provider.asked[-1]
    assert (asked["service"], asked["variant"], asked["namespace"]) == (
        "ranker", "candidate", "default")  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "heading"),
    [("README.md", "Guardrails beyond the default plan"),
     ("docs/control-plane.md", "## Guardrails and metrics providers")],
)  # fmt: skip
def test_the_documented_guardrail_examples_load(doc: str, heading: str) -> None:
    """Every YAML block of the section loads; together they show both providers and all
    three kinds."""
    import yaml

    text = (Path(__file__).resolve().parent.parent / doc).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```yaml\n")[1:]]
    guardrails = []
    for block in blocks:
        spec = load_spec({**spec_of(), "rollout": yaml.safe_load(block)["rollout"]})
        assert spec.rollout is not None
        guardrails += spec.rollout.guardrails
    assert {g.provider for g in guardrails} == {"prometheus", "web"}
    kinds = {g.kind.value for g in guardrails}
    assert kinds == ({"threshold", "relative"} if doc == "README.md" else
                     {"threshold", "relative", "ceiling"})  # fmt: skip
