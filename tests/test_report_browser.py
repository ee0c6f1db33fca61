"""The demo's report as a data scientist opens it: `abmesh demo --fast` run to a promotion and to
a rollback (one run per scenario: one test each, so pytest-xdist never runs a demo twice; the
suite runs these two scenarios only here), each run first checked as every demo run is
(tests/demo_support.py), then its page opened in headless Chromium and read through the
DevTools protocol (tests.browser.DevTools).  From the page's DOM and its plotly data: the
headline is the outcome, the effect chart has one point per recorded look (at least ten with
an effect), the p axis spans [0, 1], each guardrail has its own panel, the final move is in
the traffic chart and the log, and no script failed.  Screenshots of both pages are kept in
the test's temp dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from experiments.demo import COUNTRIES, PLATFORMS
from experiments.localstack import prometheus_binary
from tests.browser import DevTools, chromium
from tests.demo_support import run_to_a_decision

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus not installed"),
    pytest.mark.skipif(chromium() is None, reason="chromium not installed (Debian chromium)"),
]

# scenario -> (outcome, the rollout's last action, the headline's start, final candidate share)
OUTCOMES = {
    "promote": ("promoted", "promote", "promoted: candidate", 100),
    "regression": ("rolled_back", "rollback", "rolled back: guardrail", 0),
}
# What the page's scripts made: every chart's traces and axes, the headline, the log's rows.
READ_PAGE = """(() => {
  const charts = {};
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    charts[gd.id] = {
      traces: gd._fullData.map(t => ({name: t.name, x: Array.from(t.x || []),
                                      y: Array.from(t.y || []),
                                      text: t.text == null ? [] : [].concat(t.text)})),
      yrange: gd._fullLayout.yaxis.range, xtitle: gd._fullLayout.xaxis.title.text,
      annotations: (gd._fullLayout.annotations || []).map(a => a.text),
    };
  }
  const log = [...document.querySelectorAll('#log tr')].slice(1)
    .map(row => [...row.cells].map(c => c.textContent));
  return {charts, headline: document.getElementById('decision').textContent, log};
})()"""


@dataclass
class Opened:
    scenario: str
    report: dict[str, Any]
    page: dict[str, Any]
    errors: list[str]
    screenshot: Path


@pytest.mark.parametrize("scenario", sorted(OUTCOMES))
def test_the_demo_report_in_chromium(scenario: str, tmp_path: Path) -> None:
    opened = open_report(scenario, tmp_path)
    headline_is_the_outcome(opened)
    effect_chart_has_a_point_per_recorded_look(opened)
    p_axis_spans_0_to_1(opened)
    each_guardrail_has_its_own_panel(opened)
    final_move_is_in_the_traffic_chart_and_the_log(opened)
    segments_and_distributions_are_shown(opened)
    assert opened.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert opened.screenshot.stat().st_size > 50_000


def open_report(scenario: str, workdir: Path) -> Opened:
    report = run_to_a_decision(scenario, workdir)  # every demo's checks, and its report
    shot = workdir / f"report-{scenario}.png"
    with DevTools(workdir / "chromium-profile") as browser:
        browser.open(workdir / "report.html")
        page = browser.evaluate(READ_PAGE)
        browser.screenshot(shot)
        errors = list(browser.errors)
    return Opened(scenario, report, page, errors, shot)


def traces(opened: Opened, chart: str, suffix: str) -> list[dict[str, Any]]:
    return [t for t in opened.page["charts"][chart]["traces"] if t["name"].endswith(suffix)]


def headline_is_the_outcome(opened: Opened) -> None:
    outcome, _, headline, _ = OUTCOMES[opened.scenario]
    assert opened.report["outcome"] == outcome
    assert opened.page["headline"].startswith(headline)
    assert "invalid" not in opened.page["headline"]
    assert opened.errors == []


def effect_chart_has_a_point_per_recorded_look(opened: Opened) -> None:
    """Every phase's looks: the canary's (observed) and, before a promotion, the A/B test's."""
    looks = opened.report["looks_recorded"]
    effects = traces(opened, "chart-effect", " effect")
    xs = [x for t in effects for x in t["x"]]
    ys = [y for t in effects for y in t["y"]]
    assert len(xs) == looks
    # Burn-in looks have no effect yet; how many looks come after depends on the machine's
    # pace (the demo runs in real time), so only that some do.
    assert len([y for y in ys if y is not None]) >= 3
    expected = [p["effects"]["candidate"]["effect"] for p in opened.report["over_time"]]
    assert sorted(y for y in ys if y is not None) == pytest.approx(
        sorted(y for y in expected if y is not None))  # fmt: skip
    assert all(t["x"] == sorted(t["x"]) for t in effects)
    assert opened.page["charts"]["chart-effect"]["xtitle"] == "time since the rollout started (s)"
    phases = {p["phase"]: p["observational"] for p in opened.report["over_time"]}
    if opened.scenario == "regression":  # rolled back in the canary: observed looks only
        assert phases == {"main": True}
    else:
        assert phases == {"main": True, "ab-1": False}


def p_axis_spans_0_to_1(opened: Opened) -> None:
    chart = opened.page["charts"]["chart-pvalue"]
    assert chart["yrange"] == [0, 1]
    ps = traces(opened, "chart-pvalue", " p")
    assert all(0 <= y <= 1 for t in ps for y in t["y"] if y is not None)
    assert sum(len(t["x"]) for t in ps) == opened.report["looks_recorded"]


def each_guardrail_has_its_own_panel(opened: Opened) -> None:
    names = {g["name"] for e in opened.report["audit"] for g in e.get("guardrails", [])}
    assert {"p99_latency_ms", "error_ratio"} <= names
    panels = {k.removeprefix("chart-guardrail-") for k in opened.page["charts"]
              if k.startswith("chart-guardrail-")}  # fmt: skip
    assert panels == names
    for name in names:
        chart = opened.page["charts"][f"chart-guardrail-{name}"]
        assert [t["name"] for t in chart["traces"]] == [name, "limit"]


def final_move_is_in_the_traffic_chart_and_the_log(opened: Opened) -> None:
    _, action, _, share = OUTCOMES[opened.scenario]
    last = opened.report["audit"][-1]
    assert last["action"] == action
    (candidate,) = traces(opened, "chart-traffic", "candidate")
    assert (candidate["text"][-1], candidate["y"][-1]) == (action, share)
    label = {"promote": "promoted", "regression": "rolled back"}[opened.scenario]
    assert opened.page["charts"]["chart-traffic"]["annotations"] == [label]
    log = opened.page["log"]
    assert len(log) == len(opened.report["audit"])
    assert log[-1][1] == action
    assert log[-1][3] == last["what"]


def segments_and_distributions_are_shown(opened: Opened) -> None:
    """The demo's users say their country and platform: every segment is in the report, the
    tested ones in the forest chart; revenue's per-unit distribution has an ECDF per arm."""
    section = opened.report["segments"]
    shown = {(x["attribute"], x["value"]) for x in section["segments"]}
    assert shown == {("country", c) for c in COUNTRIES} | {("platform", p) for p in PLATFORMS}
    tested = [c for x in section["segments"] for c in x["comparisons"]
              if c["tested"] and c["metric"] == "purchase"]  # fmt: skip
    if tested:
        points = opened.page["charts"]["chart-segments"]["traces"]
        assert sum(len(t["x"]) for t in points) == len(tested)
    ecdf = opened.page["charts"]["chart-distribution-revenue"]
    arms = {t["name"].split(" ")[0] for t in ecdf["traces"]}
    assert arms == set(opened.report["distributions"]["revenue"])
    assert ecdf["yrange"] == [0, 1]
