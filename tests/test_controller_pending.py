"""The controller reads `winner_pending_guardrails` as "continue": a candidate that is better
on its primary metric but not yet shown within its guardrail's margin is neither promoted nor
finished, and the A/B phase keeps its split."""

from __future__ import annotations

from tests.controller_rig import Rig, spec_of


def test_a_winner_pending_its_guardrail_is_neither_promoted_nor_finished(rig: Rig) -> None:
    from analysis import ExperimentStats, Status, decide
    from experiments.reporting import analysed_spec, phase_report

    doc = spec_of()
    doc["rollout"]["phases"] = [{"kind": "ab", "split": 50}, {"kind": "promote"}]
    doc["metrics"]["guardrails"] = [{"name": "revenue", "kind": "sum", "margin": 0.01}]
    spec = rig.start(doc)
    c = rig.controller()
    c.tick()
    rig.feed_clicks(spec, "ab-1", {"stable": 0.10, "candidate": 0.30})  # no revenue: unproven
    record = rig.store.get_experiment("ranker")
    report = phase_report(rig.store, record, "ab-1")
    d = decide(analysed_spec(record, "ab-1"), ExperimentStats.from_report(report["arms"]))
    assert d.status is Status.WINNER_PENDING_GUARDRAILS  # what the ticks below act on
    for _ in range(3):
        c.tick()
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome is None
    assert record.phase == "ab-1"
    assert rig.share() == 50
    assert not {"promote", "finish"} & set(rig.actions())
