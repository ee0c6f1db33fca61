"""The report tells one story from the recorded looks: one point per look with the numbers the
decision was taken on, the concluded outcome as the headline (never "invalid" after the routes
moved), the served weights agreeing with the route table, the running verdict with its phase,
and time axes in a unit the span reads in.  Real store and controller (tests/controller_rig)."""

from __future__ import annotations

from typing import Any

import pytest

from analysis import gst_boundaries
from experiments.report import build_report
from experiments.report_charts import clock_of, effect_chart, pvalue_chart, traffic_chart
from experiments.report_html import render_html
from tests.controller_rig import Rig, spec_of

AB = [{"kind": "ab", "split": 50}, {"kind": "promote"}]


def promoted(rig: Rig, **analysis: Any) -> None:
    doc = spec_of()
    doc["rollout"]["phases"] = AB
    if analysis:
        doc["analysis"] = analysis
    spec = rig.start(doc)
    c = rig.controller()
    c.tick()
    rig.tick_with_data(spec, c, "ab-1", 30, {"stable": 0.10, "candidate": 0.16})


def served_equals_routes(report: dict[str, Any]) -> None:
    served = {k: v for k, v in report["weights"].items() if v}
    assert served == {k: v for k, v in report["routes"]["weights"].items() if v}


def test_a_promotion_is_told_from_its_looks(rig: Rig) -> None:
    promoted(rig)
    report = build_report(rig.store, "ranker")
    looks = rig.store.looks(rig.store.get_experiment("ranker").uid, "ab-1")
    assert report["headline"] == "promoted: candidate"
    assert report["looks_recorded"] == len(looks) == len(report["over_time"]) >= 3
    for point, look in zip(report["over_time"], looks, strict=True):
        (primary,) = look["comparisons"]
        assert point["effects"]["candidate"]["effect"] == primary["effect"]
        assert point["effects"]["candidate"]["pvalue"] == primary["pvalue"]
        assert point["units"] == {v: a["exposures"] for v, a in look["arms"].items()}
    # The decision and tables are the concluding look's, not a look after the routes moved.
    last = looks[-1]
    assert (report["decision"]["status"], report["decision"]["look"]) == ("winner", last["look"])
    (click,) = report["metrics"]
    assert click["comparisons"][0]["low"] == last["comparisons"][0]["low"]
    assert {a["variant"]: a["units"] for a in click["arms"]} == {
        v: a["exposures"] for v, a in last["arms"].items()}  # fmt: skip
    assert report["weights"] == {"stable": 0.0, "candidate": 100.0}
    served_equals_routes(report)
    page = render_html(report)
    assert 'id="decision">promoted: candidate</p>' in page
    assert "invalid" not in page.split("<body>")[1].split("id=\"reasons\"")[0]


def test_a_rollback_in_the_canary_headlines_the_rollback_not_invalid(rig: Rig) -> None:
    spec = rig.start(spec_of(steps=(10, 50)))
    c = rig.controller()
    c.tick()
    rig.provider.values["p99_latency_ms"] = None  # hold the canary while data comes in
    for batch in range(3):
        rig.feed_clicks(spec, "main", {"stable": 0.10, "candidate": 0.10}, units=400,
                        prefix=f"b{batch}-", seed=batch)  # fmt: skip
        c.tick()
    running = build_report(rig.store, "ranker")
    assert running["headline"] == "phase 1 of 3 (canary): inconclusive (observed, not gated)"
    assert running["decision"]["observational"]
    served_equals_routes(running)
    rig.provider.values.update(p99_latency_ms=20.0, error_ratio=0.05)
    rig.feed_clicks(spec, "main", {"stable": 0.10, "candidate": 0.10}, units=400, prefix="x-")
    c.tick()
    report = build_report(rig.store, "ranker")
    assert report["headline"].startswith("rolled back: guardrail error_ratio")
    assert report["decision"]["status"] != "invalid"  # the split moved: no SRM was judged
    assert report["decision"]["srm_pvalue"] is None
    assert len(report["over_time"]) == 4
    assert all(p["observational"] for p in report["over_time"])
    assert report["weights"] == {"stable": 100.0, "candidate": 0.0}
    served_equals_routes(report)
    assert report["audit"][-1]["action"] == "rollback"
    fig = traffic_chart(report, clock_of(report))
    candidate = next(t for t in fig.data if t.name == "candidate")
    assert (candidate.y[-1], candidate.text[-1]) == (0, "rollback")
    assert [a.text for a in fig.layout.annotations] == ["rolled back"]


def test_over_time_tells_the_canary_s_observed_looks_then_the_ab_test_s(rig: Rig) -> None:
    doc = spec_of()
    doc["rollout"]["phases"] = [{"kind": "canary", "steps": [10], "checks": 1}, *AB]
    spec = rig.start(doc)
    c = rig.controller()
    c.tick()
    rig.provider.values["p99_latency_ms"] = None  # the canary holds while data comes in
    rates = {"stable": 0.10, "candidate": 0.16}
    rig.tick_with_data(spec, c, "main", 3, rates, step_s=5, until_concluded=False)
    rig.provider.values["p99_latency_ms"] = 20.0
    rig.clock.now += 5
    c.tick()  # the canary completes: the A/B test starts its own sample
    rig.tick_with_data(spec, c, "ab-1", 30, rates)
    report = build_report(rig.store, "ranker")
    assert report["headline"] == "promoted: candidate"
    phases = [(p["phase"], p["observational"]) for p in report["over_time"]]
    canary = [x for x in phases if x[0] == "main"]
    # the tick that ended the canary saw no new data: three looks, not four
    assert canary == [("main", True)] * 3
    assert phases == canary + [("ab-1", False)] * (len(phases) - 3)
    assert report["looks_recorded"] == len(phases)
    clock = clock_of(report)
    fig = effect_chart(report, clock)
    effects = {t.name: len(t.x) for t in fig.data if t.name.endswith(" effect")}
    assert effects == {"main observed: candidate effect": 3,
                       "ab-1: candidate effect": len(phases) - 3}  # fmt: skip
    assert [a.text for a in fig.layout.annotations] == ["ab-1"]  # where its sample starts
    assert f"{len(phases) - 3} looks recorded in the phase" in render_html(report)


def test_a_running_ab_phase_headlines_its_verdict_and_phase(rig: Rig) -> None:
    doc = spec_of()
    doc["rollout"]["phases"] = [{"kind": "canary", "steps": [10], "checks": 1}, *AB]
    rig.start(doc)
    c = rig.controller()
    c.tick()
    c.tick()  # canary done: phase 2 of 3, the A/B test, without data yet
    report = build_report(rig.store, "ranker")
    assert report["headline"] == "phase 2 of 3 (ab): inconclusive"
    assert report["decision"]["by"] == "report"  # a look taken now, not recorded
    served_equals_routes(report)


def test_a_group_sequential_look_keeps_z_information_and_boundary(rig: Rig) -> None:
    promoted(rig, method="group-sequential", max_units_per_arm=3000, looks=4)
    report = build_report(rig.store, "ranker")
    for point in report["over_time"]:
        e = point["effects"]["candidate"]
        assert e["information"] == pytest.approx(min(point["units"].values()) / 3000)
    # the boundary at the last look is Lan–DeMets' at the fractions the looks reached
    taken = rig.store.get_experiment("ranker").status.rollout["decision"]["gst_fractions"]
    assert len(taken) >= 1
    last = report["over_time"][-1]["effects"]["candidate"]
    assert last["boundary"] == pytest.approx(gst_boundaries(taken).z[-1])
    assert abs(last["z"]) >= last["boundary"]  # it crossed: that is why it was promoted
    assert 'id="chart-boundaries"' in render_html(report)


@pytest.mark.parametrize(("span", "unit", "end"), [
    (0.004, "s", 0.004), (45.0, "s", 45.0), (2 * 3600.0, "min", 120.0),
    (10 * 3600.0, "h", 10.0), (5 * 86400.0, "d", 5.0),
])  # fmt: skip
def test_time_axes_read_in_the_unit_their_span_needs(span: float, unit: str, end: float) -> None:
    t0 = 1_800_000_000.0
    points = [{"at": t0 + span * k / 10, "phase": "main", "look": k, "by": "c",
               "observational": False, "status": "continue", "units": {"a": k, "b": k},
               "effects": {"b": {"effect": 0.1, "low": -1.0, "high": 1.0, "pvalue": 0.5}}}
              for k in range(11)]  # fmt: skip
    report = {"started_at": t0, "built_at": t0 + span, "status": "concluded", "alpha": 0.05,
              "audit": [{"at": t0, "action": "start", "weights": {"a": 50, "b": 50}}],
              "over_time": points, "outcome": None, "group_sequential": None}  # fmt: skip
    clock = clock_of(report)
    assert (clock.unit, clock.end) == (unit, pytest.approx(end, rel=1e-4))
    fig = effect_chart(report, clock)
    assert fig.layout.xaxis.title.text == f"time since the rollout started ({unit})"
    low, high = fig.layout.xaxis.range
    assert low == 0
    assert high >= 1.0  # never an axis of fractions of a millisecond
    assert list(fig.data[-1].x) == pytest.approx([end * k / 10 for k in range(11)], abs=1e-6)
    p = pvalue_chart(report, clock)
    assert tuple(p.layout.yaxis.range) == (0, 1)
