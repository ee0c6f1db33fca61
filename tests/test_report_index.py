"""The index of every experiment's report: `abmesh report --all -o DIR` (every link resolves to
a file of the same run, an experiment with unreadable data is listed with its error, a killed
run leaves the previous index whole), the page in a real headless Chromium, and the service's
`/reports` and `/v1/reports` behind the reader token.  A row's numbers are checked against the
simulated data (units, conversions) and against the experiment's own report."""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from analysis import ExperimentStats, decide
from assignment import assign_many
from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from experiments import load_spec
from experiments.folding import Event, FoldPlan
from experiments.looks_log import look_of, record_look
from experiments.report_index_html import render_index
from experiments.report_site import write_site
from experiments.reporting import analysed_spec, phase_report, take_snapshot
from experiments.status import Outcome, State, end_phase
from experiments.store import Store, open_store
from tests.browser import chromium, rendered
from tests.rollout_support import spec_doc
from tests.servers import auth, start_service, wait_until

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'
RATES = {"control": 0.10, "treatment": 0.15}


def running(
    store: Store, name: str, users: int = 1200, **extra: Any
) -> tuple[dict[str, float], dict[str, int]]:
    """`name` running at 50/50 with `users` converting at RATES; returns the units and the
    converted units per arm, counted here from what was sent."""
    doc = spec_doc([{"kind": "ab", "split": 50}], **extra) | {"name": name}
    doc["variants"][0]["weight"] = doc["variants"][1]["weight"] = 50
    spec = load_spec(doc)
    store.put_experiment(spec)
    change_state(store, name, Action.START)
    units = [f"{name}-u{i}" for i in range(users)]
    arms = {u: a.variant for u, a in zip(units, assign_many(spec, units), strict=True)}
    rng = random.Random(name)
    converted = [u for u in units if rng.random() < RATES[arms[u]]]
    plan = FoldPlan.from_spec(spec)
    store.record_exposures(name, "main", plan, {u: (arms[u], 1.0) for u in units})
    store.ingest_events(name, "main", plan, [Event(f"c-{u}", u, "click", 1.0, 1.0)
                                            for u in converted])  # fmt: skip
    count = {v: sum(arms[u] == v for u in units) for v in RATES}
    return {v: float(n) for v, n in count.items()}, {
        v: sum(arms[u] == v for u in converted) for v in RATES
    }


def seeded(url: str) -> dict[str, tuple[dict[str, float], dict[str, int]]]:
    """Six experiments: running with a winner, running without data, a draft, one concluded
    as promoted (judged on the lift), one named `index` and one whose data cannot be read;
    returns the sent units and conversions of those with data."""
    store = open_store(url)
    sent = {"ranker-v2": running(store, "ranker-v2", 4000, description=HOSTILE)}
    sent["index"] = running(store, "index")
    sent["promoted"] = running(store, "promoted", analysis={"relative": True})
    record = store.get_experiment("promoted")
    # The look the controller concluded on, as it records it.
    arms = phase_report(store, record)["arms"]
    decision = decide(analysed_spec(record), ExperimentStats.from_report(arms))
    record_look(store, record.uid, look_of(decision, arms, record=record, phase=record.phase,
                                           at=time.time(), by="controller"))  # fmt: skip
    concluded = replace(record.status, state=State.CONCLUDED, outcome=Outcome.PROMOTED,
                        weights={"control": 0.0, "treatment": 100.0})  # fmt: skip
    store.commit_status("promoted", end_phase(concluded, time.time()),
                        expected_version=record.status.version)  # fmt: skip
    running(store, "no-data", users=0)
    store.put_experiment(load_spec(spec_doc([{"kind": "ab"}], description=HOSTILE)
                                   | {"name": "draft-exp"}))  # fmt: skip
    running(store, "broken")
    store.close()
    # The broken experiment's fold plan is not JSON any more, as after a bad manual edit.
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE phases SET plan = '{not json' WHERE experiment = 'broken'")
    return sent


def abmesh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True, text=True, timeout=300, check=check, cwd=ROOT,
    )  # fmt: skip


def site_rows(site: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((site / "index.json").read_text())["experiments"]
    return rows


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its links and, for a look taken when asked, the time it was taken."""
    decision = row["decision"]
    if decision is not None and decision["by"] == "report":
        decision = {k: v for k, v in decision.items() if k != "at"}
    return {k: v for k, v in row.items() if k != "links"} | {"decision": decision}


def links(page: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', page)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('index') / 'abmesh.db'}"


@pytest.fixture(scope="module")
def sent(store_url: str) -> dict[str, tuple[dict[str, float], dict[str, int]]]:
    return seeded(store_url)


@pytest.fixture(scope="module")
def site(sent: Any, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("out") / "site"
    cli = abmesh("report", "--all", "-o", str(directory), "--store", store_url)
    assert "5 of 6 experiments' reports written" in cli.stdout
    assert "warning: broken:" in cli.stderr
    return directory


def test_every_link_of_the_index_is_a_file_of_the_run(site: Path) -> None:
    page = (site / "index.html").read_text()
    hrefs = links(page)
    assert sorted(hrefs) == sorted(
        f"{stem}.{kind}"
        for stem in ("ranker-v2", "_index", "promoted", "no-data", "draft-exp")
        for kind in ("html", "json")
    )
    for href in hrefs:
        assert (site / href).is_file(), href
    assert not (site / "broken.html").exists()
    assert not list(site.glob(".*"))  # no temp file left behind
    assert "<script src=" not in page  # nothing to fetch: it opens offline
    # The experiment named `index` did not overwrite the index.
    assert json.loads((site / "_index.json").read_text())["experiment"] == "index"
    assert 'id="row-index"' in page


def test_each_row_is_the_data_and_agrees_with_its_report(site: Path, sent: Any) -> None:
    rows = {
        r["experiment"]: r for r in json.loads((site / "index.json").read_text())["experiments"]
    }
    assert list(rows) == sorted(rows)
    for name in ("ranker-v2", "index", "promoted"):
        row, (units, conversions) = rows[name], sent[name]
        assert row["units"] == units
        (c,) = row["primary"]["comparisons"]
        rate = {v: conversions[v] / units[v] for v in units}
        assert c["lift"] == pytest.approx(rate["treatment"] / rate["control"] - 1)
        report = json.loads((site / row["links"]["json"]).read_text())
        assert row["headline"] == report["headline"]
        assert row["decision"]["status"] == report["decision"]["status"]
        (metric,) = [m for m in report["metrics"] if m["metric"] == "click"]
        (expected,) = metric["comparisons"]
        assert (c["effect"], c["low"], c["high"]) == (
            expected["effect"], expected["low"], expected["high"]
        )  # fmt: skip
        assert c["low"] <= c["effect"] <= c["high"]
    assert rows["ranker-v2"]["primary"]["comparisons"][0]["scale"] == "absolute"
    decision = rows["ranker-v2"]["decision"]
    assert (decision["status"], decision["winner"]) == ("winner", "treatment")
    # Judged on the lift: effect and interval are relative, the effect is the lift.
    (lifted,) = rows["promoted"]["primary"]["comparisons"]
    assert (lifted["scale"], lifted["effect"]) == ("relative", lifted["lift"])
    assert (rows["promoted"]["state"], rows["promoted"]["outcome"]) == ("concluded", "promoted")
    # Told from the look it concluded on, as its report is.
    assert rows["promoted"]["headline"] == "promoted: treatment"
    assert rows["promoted"]["decision"]["by"] == "controller"
    assert rows["ranker-v2"]["decision"]["by"] == "report"  # running: a look taken now
    assert (rows["draft-exp"]["state"], rows["draft-exp"]["outcome"]) == ("draft", None)
    for empty in ("draft-exp", "no-data"):
        assert (rows[empty]["decision"]["status"], rows[empty]["units"]) == ("continue", {})
    (waiting,) = rows["no-data"]["primary"]["comparisons"]
    assert (waiting["verdict"], waiting["effect"], waiting["lift"]) == ("burn_in", None, None)
    assert rows["no-data"]["decision"]["reasons"][0].startswith("burn-in: click has 0 units")
    assert rows["draft-exp"]["primary"]["comparisons"] == []  # all of it to control: no test
    assert rows["draft-exp"]["headline"] == "draft, phase main: inconclusive"
    broken = rows["broken"]
    assert "links" not in broken
    assert broken["decision"] is None
    assert broken["error"].startswith("JSONDecodeError")
    page = (site / "index.html").read_text()
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page


def test_a_report_that_cannot_be_built_is_listed_with_its_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    running(store, "kept")
    running(store, "bad-history")
    take_snapshot(store, store.get_experiment("bad-history"))
    # Its one snapshot is unreadable: its row is told from the statistics, its report fails.
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("UPDATE snapshots SET stats = '[' WHERE experiment = 'bad-history'")
    site = tmp_path / "site"
    site.mkdir()
    bad, kept = write_site(store, site)
    store.close()
    assert bad["decision"]["status"] == "continue"  # the row could be told
    assert bad["error"].startswith("report: JSONDecodeError")
    assert "links" not in bad
    assert kept["links"] == {"html": "kept.html", "json": "kept.json"}
    assert sorted(p.name for p in site.iterdir()) == [
        "index.html", "index.json", "kept.html", "kept.json"
    ]  # fmt: skip
    assert f"error: {bad['error']}" in (site / "index.html").read_text()


def test_hostile_text_is_escaped_everywhere_in_the_page() -> None:
    row = {
        "experiment": "x", "description": HOSTILE, "state": "running", "outcome": None,
        "phase": "main", "position": {"phase": 1, "of": 2, "kind": "ab", "step": 1,
                                      "rollout": "paused", "reason": HOSTILE},
        "updated_at": 0.0, "units": {"a": 1.0}, "primary": {"metric": "m", "comparisons": []},
        "headline": HOSTILE, "decision": {"status": "continue", "winner": None,
                                          "reasons": [HOSTILE, '" onclick="x'],
                                          "observational": False},
        "error": None, "links": {"html": 'x.html" onclick="x', "json": "x.json"},
    }  # fmt: skip
    failed = row | {"experiment": "y", "decision": None, "error": HOSTILE}
    page = render_index([row, failed], built_at=0.0)
    assert "<b>" not in page
    assert 'alert("' not in page
    assert 'onclick="x' not in page
    assert page.count("<script>") == 1  # the page's own
    # Headlines, descriptions and rollout reasons of both rows, the decision reason, the error.
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)") == 8


def test_a_killed_run_leaves_the_previous_index_whole(site: Path, store_url: str) -> None:
    before = (site / "index.html").read_text()
    report = site / "draft-exp.html"  # the first written (by name), four more before the index
    written = report.stat().st_mtime_ns
    run = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", "report", "--all", "-o", str(site),
         "--store", store_url],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: report.stat().st_mtime_ns != written, "the first report rewritten",
                   timeout=240)  # fmt: skip
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
    after = (site / "index.html").read_text()
    assert after == before or after.endswith("</html>\n")  # the old index, or a whole new one
    assert links(after) == links(before)
    again = abmesh("report", "--all", "-o", str(site), "--store", store_url)
    assert "5 of 6" in again.stdout
    assert not list(site.glob(".*"))


def test_cli_errors_name_what_is_wrong(tmp_path: Path, store_url: str, sent: Any) -> None:
    both = abmesh("report", "ranker-v2", "--all", "--store", store_url, check=False)
    assert (both.returncode, both.stderr.strip()) == (
        1, "error: give an experiment or --all, not both (got 'ranker-v2' and --all)"
    )  # fmt: skip
    neither = abmesh("report", "--store", store_url, check=False)
    assert neither.returncode == 1
    assert "--all for every one" in neither.stderr
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    onto_file = abmesh("report", "--all", "-o", str(a_file), "--store", store_url, check=False)
    assert onto_file.returncode == 1
    assert f"-o {a_file}: not a directory" in onto_file.stderr
    assert a_file.read_text() == "mine"
    page = tmp_path / "site.html"
    like_file = abmesh("report", "--all", "-o", str(page), "--store", store_url, check=False)
    assert like_file.returncode == 1
    assert "not one .html file" in like_file.stderr
    assert not page.exists()


def test_the_service_serves_the_index_to_readers(
    site: Path, store_url: str, tmp_path: Path
) -> None:
    service = start_service(store_url, tmp_path)
    try:
        for path in ("/reports", "/v1/reports"):
            refused = httpx.get(service.url + path, timeout=60)
            assert refused.status_code == 401, path
            assert "missing bearer token" in refused.json()["error"]
        reader = auth(Role.READER)
        page = httpx.get(f"{service.url}/reports", headers=reader, timeout=120)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert HOSTILE not in page.text
        answer = httpx.get(f"{service.url}/v1/reports", headers=reader, timeout=120)
        assert answer.status_code == 200
        rows = answer.json()["experiments"]
        # The same rows as the site's, but for where the reports are and when a look was taken
        # now.
        assert [comparable(r) for r in rows] == [comparable(r) for r in site_rows(site)]
        for row in rows:
            name = row["experiment"]
            if row["error"]:
                assert "links" not in row
                continue
            path = f"/v1/experiments/{name}/report"
            assert row["links"] == {"html": f"{path}.html", "json": path}
        hrefs = links(page.text)
        assert sorted(hrefs) == sorted(r["links"][k] for r in rows if not r["error"]
                                       for k in ("html", "json"))  # fmt: skip
        for href in hrefs:
            linked = httpx.get(service.url + href, headers=reader, timeout=120)
            assert linked.status_code == 200, href
        report = httpx.get(service.url + "/v1/experiments/ranker-v2/report", headers=reader,
                           timeout=120).json()  # fmt: skip
        (row,) = [r for r in rows if r["experiment"] == "ranker-v2"]
        assert row["decision"]["status"] == report["decision"]["status"]
    finally:
        service.stop()


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (Debian package chromium)")
def test_the_index_opens_in_chromium_and_sorts_and_filters(site: Path) -> None:
    index = site / "index.html"
    rows = site_rows(site)
    dom, errors = rendered(index)
    assert not errors, errors
    assert re.findall(ROW, dom) == [r["experiment"] for r in rows]
    filtered, errors = rendered(index, "?q=concluded")
    assert not errors, errors
    assert re.findall(r'<tr id="row-([^"]+)">', filtered) == ["promoted"]  # the others hidden
    assert len(re.findall(r'<tr id="row-[^"]+" hidden=', filtered)) == len(rows) - 1
    newest_first, errors = rendered(index, "?sort=-updated")
    assert not errors, errors
    by_time = sorted(rows, key=lambda r: r["updated_at"], reverse=True)
    assert re.findall(ROW, newest_first) == [r["experiment"] for r in by_time]
    assert 'data-key="updated" data-numeric="true" data-order="desc"' in newest_first


ROW = r'<tr id="row-([^"]+)"'
