"""End to end with real parts: Envoy in front of two model servers, Prometheus scraping Envoy,
abmesh's controller (a separate process, `envoy` router) and simulated traffic.

(a) a healthy candidate walks the canary steps and is promoted, the observed split at each
step within binomial bounds of the plan; (b) a slow or failing candidate is rolled back and all
traffic returns to v1; (c) a controller killed mid-rollout resumes at the same step; (d) of two
controllers only one acts; (e) an A/B phase ends with the sequential test's winner promoted.
Timings are printed, not asserted."""

from __future__ import annotations

import math
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assignment import assign_many
from experiments.folding import Event, FoldPlan
from experiments.localstack import RolloutStack, start_rollout_stack
from experiments.spec_rollout import default_guardrails
from experiments.store import Store, open_store
from tests.rollout_support import (
    RouteWatch,
    Traffic,
    cli,
    controller,
    moves,
    routes_live,
    spec_doc,
    start,
    wait_for,
)
from tests.servers import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RolloutStack]:
    s = start_rollout_stack(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    yield url, store
    store.close()


CANARY = [{"kind": "canary", "steps": [5, 20, 50], "checks": 2}, {"kind": "promote"}]


def within_binomial(k: int, n: int, percent: int) -> bool:
    p = percent / 100
    return abs(k - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1


def test_a_healthy_candidate_walks_the_canary_and_is_promoted(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = db
    start(store, spec_doc(CANARY))
    traffic, watch = Traffic(stack.front), RouteWatch(url)
    ctl = controller(url, stack, tmp_path)
    try:
        done = wait_for(store, "promote")
        routes_live(store, done["at"])
        time.sleep(1.5)
    finally:
        ctl.stop()
        traffic.stop()
        watch.stop()
    entries = moves(store)
    assert [(e["action"], e["weights"].get("treatment")) for e in entries] == [
        ("start", 5),
        ("step", 20),
        ("step", 50),
        ("promote", 100),
    ]
    ends = [e["at"] for e in entries[1:]] + [time.time()]
    for entry, end in zip(entries, ends, strict=True):
        k, n = traffic.share("v2", watch.live_after(entry["at"]), end)
        planned = entry["weights"].get("treatment", 0)
        print(
            f"{entry['action']:>8}: planned {planned:>3} %, observed {k}/{n} = {k / max(n, 1):.1%}"
        )
        assert n > 50
        assert within_binomial(k, n, planned) if planned < 100 else k == n
    assert done["status"] == "promoted"
    record = store.get_experiment("ranker-v2")
    assert record.effective_spec.variant("treatment").weight == 100
    assert record.spec.variant("treatment").weight == 0  # the spec stays its owner's


@pytest.mark.parametrize(
    "regression", [{"delay_ms": 200}, {"error_rate": 0.05}], ids=["200ms", "5xx"]
)
def test_a_regressing_candidate_is_rolled_back_to_stable(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path, regression: dict[str, float]
) -> None:
    url, store = db
    doc = spec_doc([{"kind": "canary", "steps": [20, 50], "checks": 1000}])
    # The default plan, and a custom relative guardrail on PromQL counters of its own.
    custom = {"name": "custom_5xx", "kind": "relative",
              "promql": 'sum(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{target}",'
                        'envoy_response_code_class="5"}) or vector(0)',
              "requests_promql": 'sum(envoy_cluster_upstream_rq_total{'
                                 'envoy_cluster_name="{target}"})'}  # fmt: skip
    defaults = [g.model_dump(mode="json", exclude_defaults=True) for g in default_guardrails()]
    doc["rollout"]["guardrails"] = [*defaults, custom]
    start(store, doc)
    traffic = Traffic(stack.front)
    ctl = controller(url, stack, tmp_path)
    try:
        first = wait_for(store, "start")
        wait_until(lambda: traffic.share("v2", first["at"], time.time())[0] > 50, "v2 traffic")
        time.sleep(2)  # healthy checks first: nothing happens
        assert [e["action"] for e in moves(store)] == ["start"]
        stack.set_model("v2", **regression)
        broke = time.time()
        back = wait_for(store, "rollback", timeout=60)
        wait_until(lambda: traffic.share("v1", time.time() - 0.5, time.time())[0] > 20, "v1 only")
        live_at = routes_live(store, back["at"])
        time.sleep(1)
    finally:
        ctl.stop()
        traffic.stop()
    last_v2 = max(t for t, m in traffic.seen if m == "v2")
    record = store.get_experiment("ranker-v2")
    live = record.status.routes["applied_at"] - back["at"]  # type: ignore[index]
    print(
        f"regression {regression}: rollback decided {back['at'] - broke:.2f} s after it began;"
        f" last request sent to v2 {last_v2 - broke:.2f} s after; routes live in Envoy"
        f" {live * 1000:.0f} ms after the decision"
    )
    assert live >= 0  # the rollback's routes were confirmed live, after the decision
    k, n = traffic.share("v2", live_at, time.time())
    assert k == 0
    assert n > 20
    assert back["weights"] == {"control": 100}
    failed = [g for g in back["guardrails"] if g["status"] == "fail"]
    assert failed
    # The comparisons with stable catch it (the preset or the custom counters of the same 5xx,
    # whichever has the evidence first); the ceilings (p99 1 s, 5xx 5 %) need not.
    names = {g["name"] for g in failed}
    if "delay_ms" in regression:
        assert names == {"latency_vs_stable"}
    else:
        assert names <= {"errors_vs_stable", "custom_5xx"}  # (failed is not empty: above)
    assert all(g["pvalue"] < g["alpha"] for g in failed)
    assert not [g for g in back["guardrails"] if g["status"] == "error"]  # every source answers
    assert record.status.rollout["status"] == "rolled_back"  # type: ignore[index]
    assert record.status.outcome is not None
    assert record.status.outcome.value == "rolled_back"


# The default plan at α = 0.001 per guardrail: at the default 0.01 the ten canaries' forty
# tests may together roll one healthy canary back now and then (seen once, p = 0.007), which is
# the guarantee working, not a defect, but would make this test flaky.
STRICT = [g.model_dump(mode="json", exclude_defaults=True) | {"alpha": 0.001}
          for g in default_guardrails()]  # fmt: skip


def test_ten_healthy_canaries_in_a_row_are_all_promoted(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path
) -> None:
    """The default guardrails (relative to stable, and ceilings) on this busy machine: ten
    canaries of a candidate as healthy as stable, one after the other, each judged every
    second from Prometheus; none is rolled back.  Both models answer 1 % 5xx and stall 5 % of
    requests by 120 ms, as a loaded host does to both: the old single-threshold defaults (p99
    150 ms, 0.1 % 5xx) fail such a reading at once.  (The issue's report: 2 of 8 healthy
    canaries rolled back by one p99 reading.)"""
    url, store = db
    for model in ("v1", "v2"):
        stack.set_model(model, error_rate=0.01, stall_share=0.05, stall_ms=120)
    traffic = [Traffic(stack.front) for _ in range(2)]
    ctl = controller(url, stack, tmp_path)
    outcomes, took = [], []
    try:
        for i in range(10):
            name = f"ranker-{i}"
            began = time.time()
            doc = spec_doc([{"kind": "canary", "steps": [20], "checks": 3},
                            {"kind": "promote"}], name=name)  # fmt: skip
            doc["rollout"]["guardrails"] = STRICT
            start(store, doc)
            wait_until(lambda n=name: store.get_experiment(n).status.outcome, f"{name} done",
                       timeout=120)  # fmt: skip
            record = store.get_experiment(name)
            outcomes.append(record.status.outcome.value if record.status.outcome else None)
            took.append(time.time() - began)
    finally:
        ctl.stop()
        for t in traffic:
            t.stop()
    worst = []
    for i in range(10):
        entries = moves(store, f"ranker-{i}")
        readings = [g for e in entries for g in e["guardrails"] if g.get("pvalue") is not None]
        worst.append(min((g["pvalue"] for g in readings), default=1.0))
    print(f"outcomes {outcomes}; seconds each {[round(t) for t in took]}; smallest p per"
          f" canary {[f'{p:.2g}' for p in worst]}")  # fmt: skip
    assert outcomes == ["promoted"] * 10


def test_a_restarted_controller_resumes_at_the_same_step(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = db
    steps = [5, 10, 20, 30, 50]
    start(store, spec_doc([{"kind": "canary", "steps": steps, "checks": 2}, {"kind": "promote"}]))
    traffic = Traffic(stack.front)
    ctl = controller(url, stack, tmp_path, "first")
    try:
        wait_for(store, "step")
        ctl.stop(signal.SIGKILL)
        killed_at = store.get_experiment("ranker-v2").status.rollout["step"]  # type: ignore[index]
        time.sleep(2)
        ctl = controller(url, stack, tmp_path, "second")
        wait_for(store, "promote")
    finally:
        ctl.stop()
        traffic.stop()
    entries = moves(store)
    shares = [e["weights"].get("treatment") for e in entries]
    assert shares == [5, 10, 20, 30, 50, 100]  # no step repeated, none skipped
    owners = [e["by"] for e in entries]
    assert len(set(owners)) == 2
    assert killed_at >= 1


def test_of_two_controllers_only_one_acts(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = db
    start(store, spec_doc(CANARY))
    traffic = Traffic(stack.front)
    ctls = [controller(url, stack, tmp_path, f"ctl{i}") for i in range(2)]
    try:
        wait_for(store, "promote")
    finally:
        for c in ctls:
            c.stop()
        traffic.stop()
    entries = moves(store)
    assert [e["weights"].get("treatment") for e in entries] == [5, 20, 50, 100]
    assert len({e["by"] for e in entries}) == 1


def test_an_ab_phase_promotes_the_sequential_tests_winner(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = db
    doc = spec_doc([{"kind": "ab", "split": 50}, {"kind": "promote"}])
    doc["analysis"] = {"n_star": 4000}
    start(store, doc)
    traffic = Traffic(stack.front)
    ctl = controller(url, stack, tmp_path)
    try:
        wait_for(store, "start")
        spec = store.get_experiment("ranker-v2").effective_spec
        assert spec.variant("treatment").weight == 50  # assignment follows the split
        plan = FoldPlan.from_spec(spec)
        phase = store.get_experiment("ranker-v2").phase
        units = [f"user-{i}" for i in range(4000)]
        arms = {u: a.variant for u, a in zip(units, assign_many(spec, units), strict=True)}
        now, rng = time.time(), random.Random(7)
        for i in range(0, len(units), 500):
            batch = units[i : i + 500]
            store.record_exposures("ranker-v2", phase, plan, {u: (arms[u], now) for u in batch})
            rate = {"control": 0.10, "treatment": 0.16}
            events = [
                Event(f"e-{u}", u, "click", 1.0, now) for u in batch if rng.random() < rate[arms[u]]
            ]
            store.ingest_events("ranker-v2", phase, plan, events)
        done = wait_for(store, "promote", timeout=60)
    finally:
        ctl.stop()
        traffic.stop()
    assert done["weights"] == {"treatment": 100}
    state = store.get_experiment("ranker-v2").status.rollout
    assert state is not None
    assert state["winner"] == "treatment"
    print("A/B decided:", done["what"][:300])
    # After the promotion, decide answers the A/B phase's verdict with the split it ran with.
    decided = cli(url, "decide", "ranker-v2", "-o", "json")
    assert '"status": "winner"' in decided.stdout, decided.stdout + decided.stderr


def test_manual_pause_resume_promote_and_the_history(
    stack: RolloutStack, db: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = db
    assert "does not exist" in cli(url, "pause", "ranker-v2").stderr
    start(store, spec_doc([{"kind": "canary", "steps": [10, 50], "checks": 1000}]))
    assert "no rollout in progress" in cli(url, "pause", "ranker-v2").stderr
    traffic = Traffic(stack.front)
    ctl = controller(url, stack, tmp_path)
    try:
        wait_for(store, "start")
        assert "pause requested" in cli(url, "pause", "ranker-v2").stdout
        wait_for(store, "pause")
        assert store.get_experiment("ranker-v2").status.rollout["status"] == "paused"  # type: ignore[index]
        cli(url, "resume", "ranker-v2")
        wait_for(store, "resume")
        cli(url, "promote", "ranker-v2")
        done = wait_for(store, "promote")
        live_at = routes_live(store, done["at"])
        time.sleep(1)
    finally:
        ctl.stop()
        traffic.stop()
    assert done["weights"] == {"treatment": 100}
    k, n = traffic.share("v2", live_at, time.time())
    assert k == n > 10
    history = cli(url, "history", "ranker-v2").stdout
    assert [line.split()[1] for line in history.splitlines()] == [
        "lifecycle",
        "start",
        "pause",
        "resume",
        "promote",
    ]
    assert "control=90 treatment=10" in history
