"""The experiment report: its JSON against the analysis it summarises (here from snapshots: no
look was recorded; tests/test_report_history.py has the looks), the CLI and the API, and the
HTML page in a real headless Chromium (it renders, its charts exist, no console errors; a
screenshot is kept in the test's temp dir)."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from assignment import assign_many
from controlplane.lifecycle import Action, change_state
from experiments import load_spec
from experiments.folding import Event, FoldPlan
from experiments.report import build_report
from experiments.reporting import take_snapshot
from experiments.segments import as_pairs
from experiments.store import Store, open_store
from tests.browser import BROWSER, chart_drawn, chromium, rendered
from tests.rollout_support import spec_doc
from tests.servers import start_service

ROOT = Path(__file__).resolve().parent.parent


def seeded(url: str, *, looks: bool = False) -> Store:
    """ranker-v2 at 50/50 with 5 batches of 800 users (each from one of three countries, a
    segment), a snapshot after each (with `looks`, a recorded look of `decide` too), and the
    audit entries of a canary that went 95/5 → 80/20 → 50/50."""
    store = open_store(url)
    doc = spec_doc([{"kind": "ab", "split": 50}])
    doc["variants"][0]["weight"] = doc["variants"][1]["weight"] = 50
    doc["metrics"]["secondary"] = [{"name": "revenue", "kind": "sum"}]
    doc["segments"] = [{"name": "country", "values": ["US", "DE", "BR"]}]
    spec = load_spec(doc)
    store.put_experiment(spec)
    running = change_state(store, spec.name, Action.START)
    # The rollout's A/B phase holds the weights in status (a rollout not started gives
    # everyone control).
    record = store.commit_status(
        spec.name,
        replace(running.status, weights={"control": 50.0, "treatment": 50.0}),
        expected_version=running.status.version,
    )
    plan, rng = FoldPlan.from_spec(spec), random.Random(5)
    state = None
    for batch in range(5):
        units = [f"u{batch}-{i}" for i in range(800)]
        arms = {u: a.variant for u, a in zip(units, assign_many(spec, units), strict=True)}
        countries = {u: rng.choice(("US", "DE", "BR")) for u in units}
        store.record_exposures(spec.name, "main", plan, {
            u: (arms[u], 1.0, 0, as_pairs({"country": countries[u]})) for u in units
        })  # fmt: skip
        rate = {"control": 0.10, "treatment": 0.14}
        events = [
            Event(f"c-{u}", u, "click", 1.0, 1.0) for u in units if rng.random() < rate[arms[u]]
        ]
        events += [Event(f"r-{u}", u, "revenue", rng.lognormvariate(1, 1), 1.0) for u in units]
        store.ingest_events(spec.name, "main", plan, events)
        take_snapshot(store, store.get_experiment(spec.name))
        if looks:
            state = look(store, spec.name, state)
        time.sleep(0.01)
    for share, action in ((5, "start"), (20, "step"), (50, "phase")):
        store.append_audit(record.uid, {
            "at": time.time(), "action": action, "what": f"{share} % to the candidate",
            "weights": {"control": 100 - share, "treatment": share},
            "guardrails": [
                {"name": "p99_latency_ms", "value": 40.0 + share, "limit": 150, "status": "pass"}
            ],
        })  # fmt: skip
    return store


def look(store: Store, name: str, state: Any) -> Any:
    """A look as `abmesh decide --state` takes and records it; returns the state to carry."""
    from analysis import ExperimentStats, decide
    from experiments.looks_log import look_of, record_look
    from experiments.reporting import analysed_spec, phase_report

    record = store.get_experiment(name)
    arms = phase_report(store, record)["arms"]
    decision = decide(analysed_spec(record), ExperimentStats.from_report(arms), (), state)
    record_look(store, record.uid, look_of(decision, arms, record=record, phase=record.phase,
                                           at=time.time(), by="decide"))  # fmt: skip
    return decision.state


def test_the_report_json_is_the_analysis(tmp_path: Path) -> None:
    from analysis import ExperimentStats, SequentialMonitor, decide
    from experiments.reporting import phase_report

    store = seeded(f"sqlite:///{tmp_path / 'a.db'}")
    report = build_report(store, "ranker-v2")
    json.dumps(report, allow_nan=False)
    record = store.get_experiment("ranker-v2")
    expected = decide(record.spec, ExperimentStats.from_report(phase_report(store, record)["arms"]))
    assert report["decision"]["status"] == expected.status.value == "winner"
    click = next(m for m in report["metrics"] if m["metric"] == "click")
    (comparison,) = click["comparisons"]
    c = expected.comparisons[0]
    assert (comparison["effect"], comparison["low"], comparison["high"]) == (
        c.estimate,
        c.ci_low,
        c.ci_high,
    )
    means = {a["variant"]: a["mean"] for a in click["arms"]}
    assert comparison["relative"] == pytest.approx(means["treatment"] / means["control"] - 1)
    points = report["over_time"]
    assert len(points) == 5
    assert [p["units"]["control"] + p["units"]["treatment"] for p in points] == [
        800,
        1600,
        2400,
        3200,
        4000,
    ]
    # the band is the running intersection a monitor keeps: it never widens
    widths = [p["effects"]["treatment"]["high"] - p["effects"]["treatment"]["low"] for p in points]
    assert all(b <= a for a, b in itertools.pairwise(widths))
    monitor = SequentialMonitor(alpha=0.05, n_star=10_000, kind="proportion")
    for snap in store.snapshots("ranker-v2", "main"):
        arms = ExperimentStats.from_report(snap.stats).metrics["click"]
        last = monitor.update(arms["control"], arms["treatment"])
    assert points[-1]["effects"]["treatment"]["pvalue"] == pytest.approx(last.pvalue)
    # the start by hand (no weights), then the canary's stages
    (started, *stages) = report["audit"]
    assert (started["state"], started.get("weights") or None) == ("running", None)
    assert [e["weights"]["treatment"] for e in stages] == [5, 20, 50]


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (Debian package chromium)")
def test_the_html_page_renders_in_chromium_with_its_charts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    seeded(url).close()
    page = tmp_path / "report.html"
    command = ["report", "ranker-v2", "-o", str(page), "--store", url]
    cli = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *command],
        capture_output=True, text=True, timeout=120, check=True, cwd=ROOT,
    )  # fmt: skip
    assert "winner" in cli.stdout
    text = page.read_text()
    assert "<script src=" not in text  # plotly is embedded: the page opens offline
    dom, errors = rendered(page)
    for chart in (
        "chart-effect",
        "chart-pvalue",
        "chart-exposures",
        "chart-traffic",
        "chart-guardrail-p99_latency_ms",
    ):
        assert chart_drawn(dom, chart), f"{chart} did not render"
    assert 'id="decision">phase main: winner: treatment' in dom
    assert not errors, errors
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium() or "", *BROWSER, "--window-size=1200,2600", f"--screenshot={shot}",
         page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000


def test_the_report_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    seeded(url).close()
    service = start_service(url, tmp_path, admin_token="t")
    try:
        auth = {"authorization": "Bearer t"}
        body: dict[str, Any] = httpx.get(
            f"{service.url}/v1/experiments/ranker-v2/report", headers=auth, timeout=60
        ).json()
        assert body["decision"]["status"] == "winner"
        page = httpx.get(
            f"{service.url}/v1/experiments/ranker-v2/report.html", headers=auth, timeout=60
        )
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'id="chart-effect"' in page.text
        assert (
            httpx.get(f"{service.url}/v1/experiments/ranker-v2/report", timeout=10).status_code
            == 401
        )
        assert (
            httpx.get(
                f"{service.url}/v1/experiments/nope/report", headers=auth, timeout=10
            ).status_code
            == 404
        )
    finally:
        service.stop()


def test_the_route_plan_and_group_sequential_boundaries(tmp_path: Path) -> None:
    from analysis import gst_boundaries
    from experiments.report_html import render_html

    store = seeded(f"sqlite:///{tmp_path / 'a.db'}")
    routes = build_report(store, "ranker-v2")["routes"]
    assert routes["weights"] == {"control": 50, "treatment": 50}
    assert [r["value"] for r in routes["rules"]] == ["group-a", "group-b"]
    assert build_report(store, "ranker-v2")["group_sequential"] is None
    spec = store.get_experiment("ranker-v2").spec
    data = spec.model_dump(mode="json", by_alias=True)
    data["analysis"] = {"method": "group-sequential", "max_units_per_arm": 4000, "looks": 4}
    store.put_experiment(load_spec(data))
    report = build_report(store, "ranker-v2")
    design = report["group_sequential"]
    assert design["z"] == pytest.approx(list(gst_boundaries([0.25, 0.5, 0.75, 1.0]).z))
    last = report["over_time"][-1]["effects"]["treatment"]
    assert last["information"] == pytest.approx(min(last_units(report)) / 4000)
    assert last["z"] > 0
    assert 'id="chart-boundaries"' in render_html(report)


def last_units(report: dict[str, Any]) -> list[float]:
    return list(report["over_time"][-1]["units"].values())
