"""Every look is history (experiments.looks_log): the thinning, the controller's looks in an A/B
phase (gating) and in a canary (observational), the verdict endpoint's and `abmesh decide`'s,
each checked by replaying the recorded inputs through `analysis.decide` independently; a look
that cannot be recorded leaves the decision as it was."""

from __future__ import annotations

import itertools
import logging
import math
import sqlite3
from typing import Any

import pytest
from typer.testing import CliRunner

from analysis import DecisionState, ExperimentStats, Threshold, decide
from experiments.cli import app
from experiments.looks_log import CAP, EVERY, keeps, observe, record_look
from experiments.reporting import analysed_spec, phase_report
from experiments.status import Outcome
from experiments.store import open_store
from experiments.verdict import current_verdict
from tests.controller_rig import Rig, spec_of

AB = [{"kind": "ab", "split": 50}, {"kind": "promote"}]
NUMBERS = ("effect", "low", "high", "pvalue")


def arms_of(exposed: int, clicks: int) -> dict[str, Any]:
    arm = {"exposures": exposed, "metrics": {"click": {"n": exposed, "sum": clicks}}}
    return {"stable": arm, "candidate": arm}


def test_the_thinning_keeps_every_look_to_100_then_a_log_number_of_them() -> None:
    n = 1_000_000
    kept = [k for k in range(1, n + 1) if keeps(k)]
    assert kept[:EVERY] == list(range(1, EVERY + 1))
    doublings = math.log2(n / EVERY)
    # 50 looks kept per doubling of the look count past 100: O(100 · log n).
    assert EVERY + 50 * math.floor(doublings) <= len(kept) <= EVERY + 50 * math.ceil(doublings)
    assert len(kept) < CAP
    # the resolution stays relative: a gap is never more than 2 % of the looks taken so far
    assert all(b - a <= max(1, a / 50) for a, b in itertools.pairwise(kept))


def test_a_long_phase_stores_the_thinned_looks_and_always_the_acting_one(rig: Rig) -> None:
    for k in range(1, 3201):
        look = {"phase": "ab-1", "look": k, "by": "c", "status": "continue",
                "arms": arms_of(10 * k, k)}  # fmt: skip
        record_look(rig.store, "uid", look)
    final = {"phase": "ab-1", "look": 3201, "by": "c", "status": "winner",
             "arms": arms_of(32_010, 3201)}  # fmt: skip
    assert not keeps(3201)
    assert record_look(rig.store, "uid", final)
    stored = [x["look"] for x in rig.store.looks("uid", "ab-1")]
    assert stored == [k for k in range(1, 3201) if keeps(k)] + [3201]
    assert len(stored) == EVERY + 50 * 5 + 1  # 3200 looks: five doublings past 100


def test_a_store_that_is_down_records_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    down = open_store("redis://127.0.0.1:1/0")  # nothing listens on port 1
    look = {"phase": "main", "look": 1, "by": "c", "status": "harm", "arms": arms_of(1, 1)}
    with caplog.at_level(logging.WARNING, "abmesh.looks"):
        assert not record_look(down, "uid", look)
    assert "look 1 of uid (phase main, by c) not recorded" in caplog.text
    down.close()


def ab_rollout(rig: Rig) -> Any:
    doc = spec_of()
    doc["rollout"]["phases"] = AB
    spec = rig.start(doc)
    c = rig.controller()
    c.tick()  # started: the A/B phase ab-1 at 50/50
    return spec, c


def test_the_controller_records_each_ab_look_with_the_inputs_it_decided_on(rig: Rig) -> None:
    spec, c = ab_rollout(rig)
    ticks = rig.tick_with_data(spec, c, "ab-1", 20, {"stable": 0.10, "candidate": 0.16})
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.PROMOTED
    looks = rig.store.looks(record.uid, "ab-1")
    assert len(looks) == ticks >= 3  # one per tick that saw new data
    assert rig.store.looks(record.uid) == looks
    assert [x["at"] for x in looks] == sorted(x["at"] for x in looks)
    assert {x["by"] for x in looks} == {"c1"}
    assert [x["look"] for x in looks] == list(range(1, len(looks) + 1))
    assert looks[-1]["arms"] == phase_report(rig.store, record, "ab-1")["arms"]
    assert [x["status"] for x in looks][-1] == "winner"
    assert not any(x["observational"] for x in looks)
    # Replayed through decide with the phase's planned split, the same numbers come out.
    state: DecisionState | None = None
    for x in looks:
        guards = [Threshold(g["name"], g["value"], g["limit"]) for g in x["guardrails"]]
        again = decide(analysed_spec(record, "ab-1"), ExperimentStats.from_report(x["arms"]),
                       guards, state)  # fmt: skip
        state = again.state
        assert (x["status"], x["winner"], x["srm_pvalue"]) == (
            again.status.value, again.winner, again.srm_pvalue)  # fmt: skip
        (primary,) = x["comparisons"]
        c_ = again.comparisons[0]
        assert [primary[k] for k in NUMBERS] == [c_.estimate, c_.ci_low, c_.ci_high, c_.pvalue]
    assert rig.actions()[-1] == "promote"


def test_a_canary_records_an_observational_look_each_tick_its_data_changed(rig: Rig) -> None:
    spec = rig.start(spec_of(steps=(10, 50)))
    c = rig.controller()
    c.tick()  # canary step 1; its data land in the first phase, "main"
    rig.provider.values["p99_latency_ms"] = None  # no guardrail data: the canary holds
    for batch in range(4):
        rig.feed_clicks(spec, "main", {"stable": 0.10, "candidate": 0.12}, units=400,
                        prefix=f"b{batch}-", seed=batch)  # fmt: skip
        c.tick()
        c.tick()  # the same data again: not recorded twice
    record = rig.store.get_experiment("ranker")
    assert rig.share() == 10
    looks = rig.store.looks(record.uid, "main")
    assert [x["look"] for x in looks] == [1, 3, 5, 7]
    assert all(x["observational"] and x["srm_pvalue"] is None for x in looks)
    assert {x["status"] for x in looks} <= {"continue", "winner", "harm", "no_difference"}
    state: DecisionState | None = None
    for x in looks:
        again = observe(record, x["arms"], state)
        # the unrecorded repeat of each look changed nothing of the running state but its count
        again = observe(record, x["arms"], again.state)
        state = again.state
        got = [(k["variant"], *(k[n] for n in NUMBERS)) for k in x["comparisons"]]
        assert got == [(k.variant, k.estimate, k.ci_low, k.ci_high, k.pvalue)
                       for k in again.comparisons]  # fmt: skip
    assert looks[-1]["comparisons"][0]["effect"] is not None
    # A failing guardrail rolls the canary back; the look that saw it is the last one.
    rig.provider.values.update(p99_latency_ms=20.0, error_ratio=0.05)
    rig.feed_clicks(spec, "main", {"stable": 0.10, "candidate": 0.12}, units=400, prefix="x-")
    c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.ROLLED_BACK
    last = rig.store.looks(record.uid, "main")[-1]
    assert last["look"] == 9
    assert {g["name"]: g["status"] for g in last["guardrails"]}["error_ratio"] == "fail"


def test_a_look_that_cannot_be_recorded_changes_no_decision(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    spec, c = ab_rollout(rig)
    rig.feed_clicks(spec, "ab-1", {"stable": 0.10, "candidate": 0.30})
    db = sqlite3.connect(rig.url.removeprefix("sqlite:///"))
    db.execute("DROP TABLE looks")  # the store fails every look from now on
    db.close()
    with caplog.at_level(logging.WARNING, "abmesh.looks"):
        c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is Outcome.PROMOTED
    assert rig.router().weights == {"candidate": 100}
    assert "not recorded" in caplog.text
    assert "no such table: looks" in caplog.text


def test_a_verdict_asked_500_times_on_the_same_data_is_one_look(rig: Rig) -> None:
    spec, _ = ab_rollout(rig)
    rig.feed_clicks(spec, "ab-1", {"stable": 0.10, "candidate": 0.11}, units=1000)
    uid = rig.store.get_experiment("ranker").uid
    answers = {current_verdict(rig.store, "ranker", None)["status"] for _ in range(500)}
    assert answers == {"continue"}
    (look,) = rig.store.looks(uid, "ab-1")
    assert (look["by"], look["look"]) == ("verdict", 1)
    doc, _ = rig.store.get_control(f"{uid}#verdict#ab-1")
    assert doc is not None
    assert doc["looks"] == 500  # the looks were taken, and one was recorded
    rig.feed_clicks(spec, "ab-1", {"stable": 0.10, "candidate": 0.11}, units=10, prefix="new-")
    for _ in range(4):
        current_verdict(rig.store, "ranker", None)
    # New data is kept at the next look the thinning keeps: past 400, every 8th.
    assert [x["look"] for x in rig.store.looks(uid, "ab-1")] == [1, 504]


def test_decide_records_its_look_and_a_repeat_is_not_recorded(rig: Rig, tmp_path: Any) -> None:
    spec, _ = ab_rollout(rig)
    rig.feed_clicks(spec, "ab-1", {"stable": 0.10, "candidate": 0.11}, units=1000)
    state = tmp_path / "state.json"
    for _ in range(3):
        args = ["decide", "ranker", "--store", rig.url, "--state", str(state), "-o", "json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    record = rig.store.get_experiment("ranker")
    (look,) = rig.store.looks(record.uid)
    assert (look["by"], look["look"], look["phase"]) == ("decide", 1, "ab-1")
    assert look["arms"] == phase_report(rig.store, record)["arms"]
