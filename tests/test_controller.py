"""The controller's failure paths, fast: a real store (SQLite, and Redis where it matters), a
fake router and a fake metrics provider, and a clock the test moves.

Router error after persist, compare-and-set conflict, crash between persist and apply, delete
and re-create, unchanged re-apply, spec changes mid-rollout, two experiments on one target,
a concluded experiment, lease takeover, the progress deadline, metrics and health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.controller import Controller
from controlplane.lifecycle import Action, apply_spec, change_state
from controlplane.targets import Routers
from experiments.errors import ConflictError
from experiments.loader import load_spec
from experiments.status import Outcome, State
from experiments.store import open_store
from tests.controller_rig import Rig, spec_of
from tests.servers import wait_until


def test_a_canary_walks_its_steps_with_status_not_spec(rig: Rig) -> None:
    spec = rig.start(spec_of())
    c = rig.controller()
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert rig.share() == 10
    assert rig.router().weights == {"stable": 90, "candidate": 10}
    assert record.spec == spec  # the controller never writes the spec
    assert record.generation == 1
    assert record.status.observed_generation == 1
    ready = record.status.condition("RouteTargetReady")
    assert ready is not None
    assert ready.status == "True"
    c.tick()
    assert rig.share() == 50
    c.tick()  # canary done: the A/B phase gets its own sample, planned at 50/50
    record = rig.store.get_experiment("ranker")
    assert record.phase == "ab-1"
    planned = record.status.phase_record()
    assert planned is not None
    assert planned.weights == {"stable": 50.0, "candidate": 50.0}
    assert rig.actions() == ["start", "step", "phase"]


def test_a_router_error_after_persist_loses_no_audit_entry(rig: Rig) -> None:
    rig.start(spec_of())
    c = rig.controller()
    c.tick()
    rig.router().fail = 1
    c.tick()  # decides 50 %, persists it with its entry, then the router fails
    record = rig.store.get_experiment("ranker")
    assert rig.share() == 50
    assert rig.router().weights == {"stable": 90, "candidate": 10}
    ready = record.status.condition("RouteTargetReady")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "RouterError")
    rig.provider.values["p99_latency_ms"] = None  # hold the canary where it is
    c.tick()  # repaired: the stored state is applied, nothing decided twice
    assert rig.router().weights == {"stable": 50, "candidate": 50}
    assert rig.actions() == ["start", "step"]
    assert (
        c.telemetry.exposition().count(
            b'abmesh_controller_router_errors_total{router="manifests"} 1.0'
        )
        == 1
    )


def test_a_crash_between_persist_and_apply_is_repaired_by_the_next_tick(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.start(spec_of())
    c = rig.controller()
    c.tick()

    def crash(*args: Any) -> None:
        raise SystemExit("killed after the write")

    monkeypatch.setattr(c, "_apply", crash)
    with pytest.raises(SystemExit):
        c.tick()
    assert rig.share() == 50
    assert rig.router().weights["candidate"] == 10
    rig.provider.values["error_ratio"] = None  # no further step: only the repair
    restarted = rig.controller()  # the same owner id, as after a restart
    restarted.tick()
    assert rig.router().weights["candidate"] == 50
    assert rig.actions() == ["start", "step"]


def test_a_compare_and_set_conflict_writes_nothing_and_the_next_tick_redoes_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.start(spec_of(steps=(10,)))
    c = rig.controller()
    c.tick()
    before = rig.store.get_experiment("ranker")
    real = rig.store.commit_status
    store = c.store

    def interfere(name: str, status: Any, **kwargs: Any) -> Any:
        # Someone else writes first: this tick's write (the A/B phase switch) must not land.
        monkeypatch.setattr(store, "commit_status", real.__func__.__get__(store))  # type: ignore[attr-defined]
        current = rig.store.get_experiment(name).status
        real(name, current, expected_version=current.version)
        return store.commit_status(name, status, **kwargs)

    monkeypatch.setattr(store, "commit_status", interfere)
    c.tick()  # would enter the A/B phase
    after = rig.store.get_experiment("ranker")
    assert after.phase == before.phase == "main"  # no half-switched phase
    assert after.status.rollout is not None
    assert after.status.rollout["phase"] == 0
    assert rig.actions() == ["start"]
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.phase == "ab-1"
    assert record.status.rollout["phase"] == 1
    assert rig.actions() == ["start", "phase"]


def test_an_unchanged_reapply_mid_canary_changes_nothing(rig: Rig) -> None:
    spec = rig.start(spec_of())
    c = rig.controller()
    c.tick()
    before = rig.store.get_experiment("ranker")
    for _ in range(3):  # a GitOps tool syncing
        result = apply_spec(rig.store, spec)
        assert not result.changed
    after = rig.store.get_experiment("ranker")
    assert (after.generation, after.status, rig.share()) == (1, before.status, 10)


def test_changed_variants_mid_rollout_restart_it_at_the_first_step(rig: Rig) -> None:
    rig.start(spec_of())
    c = rig.controller()
    c.tick()
    c.tick()
    assert rig.share() == 50
    doc = spec_of()
    doc["variants"][1]["destination"]["subset"] = "v3"  # a new candidate model
    apply_spec(rig.store, load_spec(doc))
    assert rig.share() == 50  # nothing moves before the controller observes it
    rig.provider.values["p99_latency_ms"] = None
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert rig.share() == 10
    assert record.status.observed_generation == 2
    assert record.phase == "canary-1"  # a fresh sample for the new arm
    assert rig.actions() == ["start", "step", "restart"]
    assert "generation 2 changed the arms" in rig.store.audit(record.uid)[-1]["what"]


def test_changed_steps_take_effect_at_the_next_step(rig: Rig) -> None:
    rig.start(spec_of(steps=(10, 50)))
    c = rig.controller()
    c.tick()
    apply_spec(rig.store, load_spec(spec_of(steps=(10, 20, 30))))
    rig.provider.values["error_ratio"] = None
    c.tick()  # observed: no jump, the share stays
    assert rig.share() == 10
    assert rig.actions()[-1] == "replan"
    rig.provider.values["error_ratio"] = 0.0
    c.tick()
    assert rig.share() == 20  # the new plan's next step, not 50


def test_two_experiments_on_one_target_the_second_waits(rig: Rig) -> None:
    rig.start(spec_of("first"))
    second = spec_of("second")
    second["rollout"]["target"] = {"path": "first.yaml"}  # the same manifest
    rig.start(second)
    c = rig.controller()
    for _ in range(3):
        c.tick()
    blocked = rig.store.get_experiment("second")
    ready = blocked.status.condition("RouteTargetReady")
    assert ready is not None
    assert ready.reason == "TargetClaimed"
    assert "'first'" in ready.message
    assert blocked.status.rollout is None
    assert rig.share("second") == 0
    assert {p.experiment for p in rig.router("first").plans} == {"first"}  # never a flip-flop
    rig.store.get_experiment("first")
    change_state(rig.store, "first", Action.STOP)
    c.tick()  # first rolls back and is confirmed: the target is free
    c.tick()
    assert rig.store.get_experiment("second").status.rollout is not None
    assert rig.router("first").plans[-1].experiment == "second"


def test_two_experiments_on_their_own_targets_move_side_by_side(rig: Rig) -> None:
    rig.start(spec_of("one"))
    rig.start(spec_of("two"))
    c = rig.controller()
    c.tick()
    c.tick()
    assert rig.share("one") == rig.share("two") == 50
    assert rig.router("one").plans[-1].experiment == "one"
    assert rig.router("two").plans[-1].experiment == "two"


def promoted(rig: Rig) -> tuple[dict[str, Any], Controller]:
    """A one-step canary walked to its promotion."""
    doc = spec_of(steps=(10,))
    doc["rollout"]["phases"] = [doc["rollout"]["phases"][0], {"kind": "promote"}]
    rig.start(doc)
    c = rig.controller()
    for _ in range(3):
        c.tick()
    return doc, c


def test_delete_and_recreate_starts_from_the_first_step(rig: Rig) -> None:
    doc, c = promoted(rig)
    old = rig.store.get_experiment("ranker")
    assert old.status.outcome is Outcome.PROMOTED
    assert rig.router().weights == {"candidate": 100}
    rig.store.delete_experiment("ranker")
    rig.start(doc)
    c.tick()
    new = rig.store.get_experiment("ranker")
    assert new.uid != old.uid
    assert rig.share() == 10
    assert rig.router().weights == {"stable": 90, "candidate": 10}
    assert rig.actions() == ["start"]  # nothing of the old one's history


def test_a_concluded_experiment_is_final(rig: Rig) -> None:
    _, c = promoted(rig)
    record = rig.store.get_experiment("ranker")
    assert (record.state, record.status.outcome) == (State.CONCLUDED, Outcome.PROMOTED)
    main = record.status.phase_record("main")
    assert main is not None
    assert main.ended_at is not None
    with pytest.raises(ConflictError, match="final"):
        change_state(rig.store, "ranker", Action.START)
    writes = len(rig.router().plans)
    version = record.status.version
    c.tick()  # settled: no lease, no write, the target is left to others
    assert len(rig.router().plans) == writes
    assert rig.store.get_experiment("ranker").status.version == version
    assert c.held == set()


def test_stop_rolls_a_running_rollout_back_and_keeps_the_outcome(rig: Rig) -> None:
    rig.start(spec_of())
    c = rig.controller()
    c.tick()
    change_state(rig.store, "ranker", Action.STOP)
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.STOPPED
    assert rig.router().weights == {"stable": 100}
    whats = [e["what"] for e in rig.store.audit(record.uid)]
    assert whats[-2] == "stop: now concluded"
    assert rig.actions() == ["start", "rollback"]


def test_no_guardrail_data_past_the_deadline_rolls_back(rig: Rig) -> None:
    rig.start(spec_of(progress_deadline_s=60))
    c = rig.controller()
    c.tick()
    rig.provider.values["p99_latency_ms"] = None
    rig.clock.now += 30
    c.tick()
    assert rig.share() == 10
    rig.clock.now += 31
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    last = rig.store.audit(record.uid)[-1]
    assert last["action"] == "rollback"
    assert "no guardrail data for 61 s" in last["what"]


def test_on_no_data_hold_keeps_the_step_and_says_so_once(rig: Rig) -> None:
    rig.start(spec_of(progress_deadline_s=60, on_no_data="hold"))
    c = rig.controller()
    c.tick()
    rig.provider.values["p99_latency_ms"] = None
    for _ in range(4):
        rig.clock.now += 40
        c.tick()
    record = rig.store.get_experiment("ranker")
    progressing = record.status.condition("Progressing")
    assert progressing is not None
    assert (progressing.status, progressing.reason) == (
        "False",
        "NoData",
    )
    assert rig.share() == 10
    assert rig.actions() == ["start", "hold"]
    rig.provider.values["p99_latency_ms"] = 20.0
    c.tick()
    assert rig.share() == 50  # data is back: the rollout goes on


def test_a_canary_step_that_never_completes_hits_the_deadline(rig: Rig) -> None:
    doc = spec_of(progress_deadline_s=60)
    doc["rollout"]["phases"][0]["min_units"] = 1000  # never reached: no traffic
    rig.start(doc)
    c = rig.controller()
    c.tick()
    rig.clock.now += 61
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    assert "canary step 1 has not completed in 60 s" in rig.store.audit(record.uid)[-1]["what"]


def test_a_failing_guardrail_rolls_back_at_once(rig: Rig) -> None:
    rig.start(spec_of())
    c = rig.controller()
    c.tick()
    rig.provider.values["error_ratio"] = 0.05
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    assert rig.share() == 0
    healthy = record.status.condition("GuardrailsHealthy")
    assert healthy is not None
    assert healthy.status == "False"
    assert rig.router().weights == {"stable": 100}


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_leases_split_experiments_and_a_dead_controller_is_replaced(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    rig = Rig(request.getfixturevalue(f"{backend}_store_url"), tmp_path)
    names = ("a", "b", "c", "d")
    for name in names:
        rig.start(spec_of(name))
    one, two = rig.controller("one", lease_s=2.0), rig.controller("two", lease_s=2.0)
    one.tick()
    assert len(one.held) == 4  # alone: it takes them all
    two.tick()  # a second one announces itself; `one` gives up what is beyond its share
    one.tick()
    two.tick()
    assert len(one.held) == len(two.held) == 2
    assert not one.held & two.held
    for name in names:  # each experiment driven by exactly one controller
        uid = rig.store.get_experiment(name).uid
        movers = {e["by"] for e in rig.store.audit(uid) if e["action"] != "lifecycle"}
        assert len(movers) == 1 or uid in two.held, (name, movers)
    # `two` dies without releasing anything: once its leases lapse, `one` drives all four.
    wait_until(lambda: one.tick() or len(one.held) == 4, "takeover", timeout=10)
    two.tick()  # back from the dead: it must not act on what `one` holds now
    assert len(two.held) < 4
    assert not one.held & two.held
    # A controller started again under the same id resumes its leases at once.
    again = rig.controller("one", lease_s=2.0)
    again.tick()  # (its share is 2 again: `two` announced itself)
    assert len(again.held) == 2
    assert again.held <= one.held
    again.release_leases()
    one.release_leases()
    two.tick()
    two.tick()
    assert len(two.held) >= 2  # released: taken up on the next ticks
    rig.store.close()


def test_manual_commands_go_through_the_status(rig: Rig) -> None:
    from typer.testing import CliRunner

    from experiments.cli import app

    rig.start(spec_of())
    c = rig.controller()
    c.tick()
    result = CliRunner().invoke(app, ["promote", "ranker", "--store", rig.url])
    assert result.exit_code == 0, result.output
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.PROMOTED
    assert rig.router().weights == {"candidate": 100}
    assert rig.actions() == ["start", "promote"]


def test_the_controller_reports_its_decisions_and_positions(rig: Rig) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    rig.start(spec_of())
    c = rig.controller()
    c.tick()
    c.tick()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(c.telemetry.exposition().decode())
        for s in family.samples
    }
    assert samples[("abmesh_controller_decisions_total", (("action", "step"),))] == 1
    assert samples[("abmesh_controller_candidate_weight", (("experiment", "ranker"),))] == 50
    assert samples[("abmesh_controller_leases_held", ())] == 1
    assert samples[("abmesh_controller_ticks_total", (("result", "ok"),))] == 2


def test_after_a_promotion_decide_answers_the_ab_verdict_and_nothing_more_enters(
    rig: Rig,
) -> None:

    from typer.testing import CliRunner

    from assignment.collector import ingest, parse_events
    from experiments.cli import app

    doc = spec_of()
    doc["rollout"]["phases"] = [{"kind": "ab", "split": 50}, {"kind": "promote"}]
    spec = rig.start(doc)
    c = rig.controller()
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.phase == "ab-1"
    assert rig.share() == 50
    plan = rig.feed_clicks(spec, "ab-1", {"stable": 0.10, "candidate": 0.30})
    for _ in range(3):
        c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.PROMOTED
    assert rig.router().weights == {"candidate": 100}
    assert record.phase == "ab-1"  # the analysed phase stays the one the verdict came from
    result = CliRunner().invoke(app, ["decide", "ranker", "--store", rig.url, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert '"status": "winner"' in result.output
    assert "invalid" not in result.output
    # Concluded means concluded: later events are refused, assignment exposes nobody.
    records = {"ranker": record}
    parsed = parse_events(
        [{"event_id": "late", "experiment": "ranker", "unit": "u1", "metric": "click"}],
        records, {"ranker": plan},
    )  # fmt: skip
    assert [r.reason for _, r in parsed.rejected] == ["concluded"]
    assert ingest(rig.store, parsed, records, {"ranker": plan}).accepted == 0
    from assignment import assign

    a = assign(record.effective_spec, "someone-new", active=False)
    assert (a.variant, a.in_experiment) == ("candidate", False)


def test_the_manifests_router_writes_one_file_per_experiment(rig: Rig, tmp_path: Path) -> None:
    import yaml

    one = spec_of("one")
    one["rollout"]["target"] = {"path": "models/one.yaml", "gateways": ["istio-system/edge",
                                                                         "mesh"]}  # fmt: skip
    rig.start(one)
    rig.start(spec_of("two"))
    c = Controller(
        open_store(rig.url), Routers(rig.defaults), rig.provider, owner="c1", interval=1.0,
        clock=rig.clock,
    )  # fmt: skip
    c.tick()
    c.tick()
    files = {p.relative_to(tmp_path).as_posix(): p for p in tmp_path.rglob("*.yaml")}
    assert set(files) == {"models/one.yaml", "two.yaml"}
    texts = {name: p.read_text() for name, p in files.items()}
    vs = next(yaml.safe_load_all(texts["models/one.yaml"]))
    assert vs["kind"] == "VirtualService"
    assert vs["spec"]["gateways"] == ["istio-system/edge", "mesh"]
    weights = {r["destination"]["subset"]: r["weight"] for r in vs["spec"]["http"][-1]["route"]}
    assert weights == {"v1": 50, "v2": 50}
    rig.provider.values["p99_latency_ms"] = None
    c.tick()  # nothing moved: no file is rewritten
    assert {name: p.read_text() for name, p in files.items()} == texts


def test_a_target_the_controller_cannot_build_is_a_condition(rig: Rig) -> None:
    doc = spec_of()
    doc["rollout"]["target"] = {"router": "envoy"}  # but this controller has no RDS file
    rig.start(doc)
    c = rig.controller()
    c.tick()
    record = rig.store.get_experiment("ranker")
    ready = record.status.condition("RouteTargetReady")
    assert ready is not None
    assert ready.reason == "NoTarget"
    assert "--envoy-routes" in ready.message
    assert record.status.rollout is None
    assert rig.share() == 0
    version = record.status.version
    c.tick()  # the same condition: no new write
    assert rig.store.get_experiment("ranker").status.version == version


def test_a_long_pause_is_not_a_missed_deadline(rig: Rig) -> None:
    rig.start(spec_of(progress_deadline_s=60))
    c = rig.controller()
    c.tick()
    change_state(rig.store, "ranker", Action.PAUSE)
    c.tick()
    progressing = rig.store.get_experiment("ranker").status.condition("Progressing")
    assert progressing is not None
    assert (progressing.status, progressing.reason) == ("False", "ExperimentPaused")
    rig.clock.now += 3600
    c.tick()
    change_state(rig.store, "ranker", Action.START)
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is None
    assert rig.share() == 50  # it goes on where it was


def test_an_experiment_left_by_a_limited_controller_is_picked_up(rig: Rig) -> None:
    rig.start(spec_of("a"))
    rig.start(spec_of("b"))
    broad = rig.controller("broad", lease_s=2.0)
    limited = rig.controller("limited", lease_s=2.0, experiments=("a",))
    broad.tick()  # alone: it takes both
    limited.tick()  # announces itself; `a` is held by `broad`
    broad.tick()  # a share of one now: it keeps `a` and gives `b` up, which `limited` skips
    uid_b = rig.store.get_experiment("b").uid
    assert uid_b not in broad.held
    rig.provider.values["p99_latency_ms"] = None  # no moves: only who drives counts here
    # `b` is held by nobody for a lease period: `broad` takes it, whatever its share.
    # (Both keep ticking, as live controllers do: each stays a member.)
    wait_until(lambda: limited.tick() or broad.tick() or uid_b in broad.held, "b", timeout=10)
    assert broad._adopted == {uid_b}
    for _ in range(3):  # and keeps it
        broad.tick()
        limited.tick()
        assert len(broad.held) == 2
