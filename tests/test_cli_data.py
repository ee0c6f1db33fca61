"""`abmesh events import`, `stats`, `snapshot`, `export` and `phase`, as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import ExperimentStats, Threshold, decide
from experiments import load_spec
from tests.oracle import assert_same_arms, expected_arms
from tests.test_events import METRICS, RATIOS, SPEC, make_events, prepare


def abmesh(*args: str, store: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args, "--store", store],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """SQLite and one Redis server: the cluster runs the same store code, which the contract
    suite checks there, and its cases here cost 40 s of the suite for nothing new."""
    url: str = request.getfixturevalue(f"{request.param}_store_url")
    return url


@pytest.fixture
def ready(tmp_path: Path, store_url: str) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    exposed = prepare(store_url)
    return store_url, exposed, make_events(2_000, seed=21)


def _write(path: Path, events: list[dict[str, Any]], fmt: str) -> None:
    frame = pd.DataFrame(events)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_import_backfills_idempotently(
    ready: tuple[str, dict[str, str], list[dict[str, Any]]], tmp_path: Path, fmt: str
) -> None:
    url, exposed, events = ready
    path = tmp_path / f"events.{fmt}"
    _write(path, events, fmt)
    first = abmesh("events", "import", str(path), store=url)
    unique = len({e["event_id"] for e in events})
    assert (
        f"{len(events)} rows: {unique} accepted, {len(events) - unique} duplicates, "
        "0 rejected" in first.stdout
    )
    again = abmesh("events", "import", str(path), store=url)
    assert f"0 accepted, {len(events)} duplicates" in again.stdout
    stats = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json,sys; from experiments.store import open_store; "
                "from experiments.reporting import phase_report; s=open_store(sys.argv[1]); "
                "print(json.dumps(phase_report(s, s.get_experiment('ranker-v2'))))",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert_same_arms(stats["arms"], expected_arms(events, exposed, METRICS, RATIOS))


def test_import_reports_bad_rows_and_keeps_the_good(
    ready: tuple[str, dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, _, _ = ready
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"event_id": "g1", "experiment": "ranker-v2", "unit": "u1", "metric": "click"}\n'
        "not json\n"
        '{"event_id": "g2", "unit": "u1", "metric": "revenue", "value": "x"}\n'
        '{"event_id": "g3", "unit": "u2", "metric": "revenue", "value": 3}\n'
    )
    proc = abmesh("events", "import", str(path), "--experiment", "ranker-v2", store=url, ok=False)
    assert proc.returncode == 1
    assert "4 rows: 2 accepted, 0 duplicates, 2 rejected" in proc.stdout
    assert "row 2: line 2: not JSON" in proc.stdout
    assert "row 3: value: must be a number, got str" in proc.stdout


def imported(
    ready: tuple[str, dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    """The ready store with its events imported through the CLI."""
    url, _, events = ready
    path = tmp_path / "events.jsonl"
    _write(path, events, "jsonl")
    abmesh("events", "import", str(path), store=url)
    return ready


def test_stats_snapshot_export_and_phase(
    ready: tuple[str, dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, exposed, events = imported(ready, tmp_path)
    table = abmesh("stats", "ranker-v2", store=url).stdout
    assert "revenue" in table
    assert "ranker-v2, phase main" in table
    assert "phase main" in abmesh("snapshot", "ranker-v2", store=url).stdout

    expected = expected_arms(events, exposed, METRICS, RATIOS)
    csv_path = tmp_path / "stats.csv"
    abmesh("export", "ranker-v2", "-o", str(csv_path), store=url)
    frame = pd.read_csv(csv_path)
    row = frame[(frame.variant == "control") & (frame.metric == "revenue")].iloc[0]
    assert row["n"] == expected["control"]["metrics"]["revenue"]["n"]
    assert row["sum"] == pytest.approx(expected["control"]["metrics"]["revenue"]["sum"], rel=1e-9)

    snaps = tmp_path / "snaps.parquet"
    abmesh(
        "export",
        "ranker-v2",
        "--what",
        "snapshots",
        "--format",
        "parquet",
        "-o",
        str(snaps),
        store=url,
    )
    snap_frame = pd.read_parquet(snaps)
    assert set(snap_frame.columns) >= {"at", "phase", "variant", "metric", "n", "sum", "sum_sq"}
    assert len(snap_frame) == len(frame)

    raw = abmesh("export", "ranker-v2", "--what", "events", "--format", "jsonl", store=url).stdout
    assert len(raw.splitlines()) == len({e["event_id"] for e in events})

    assert "is in phase ab" in abmesh("phase", "ranker-v2", "ab", store=url).stdout
    assert "no exposures in phase ab" in abmesh("stats", "ranker-v2", store=url).stdout
    bad = abmesh("phase", "ranker-v2", "a b", store=url, ok=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: phase 'a b' must be")
    needs_file = abmesh("export", "ranker-v2", "--format", "parquet", store=url, ok=False)
    assert "give a file with -o" in needs_file.stderr


def test_import_survives_odd_files(
    ready: tuple[str, dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, _, _ = ready
    bom = tmp_path / "excel.csv"
    bom.write_bytes(
        "\ufeffevent_id,experiment,unit,metric\r\nx1,ranker-v2,u1,click\r\n"
        "x2,ranker-v2,u2,click,surplus\r\n".encode()
    )
    proc = abmesh("events", "import", str(bom), store=url, ok=False)
    assert "2 rows: 1 accepted" in proc.stdout
    assert "row 2: the row has more cells than the header has columns" in proc.stdout
    lines = tmp_path / "odd.jsonl"
    lines.write_text(
        '5\nnull\n{"event_id": "x3", "experiment": "ranker-v2", "unit": "u3", "metric": "click"}\n'
    )
    proc = abmesh("events", "import", str(lines), store=url, ok=False)
    assert "3 rows: 1 accepted, 0 duplicates, 2 rejected" in proc.stdout
    times = tmp_path / "times.parquet"
    pd.DataFrame(
        {
            "event_id": ["t1"],
            "experiment": ["ranker-v2"],
            "unit": ["u4"],
            "metric": ["click"],
            "timestamp": [pd.Timestamp("2026-11-01T10:00:00")],
        }
    ).to_parquet(times)
    assert "1 accepted" in abmesh("events", "import", str(times), store=url).stdout
    huge = tmp_path / "huge.csv"
    huge.write_text("event_id,experiment,unit,metric\n" + "x" * (2 << 20) + ",e,u,m\n")
    proc = abmesh("events", "import", str(huge), store=url, ok=False)
    assert proc.returncode == 1
    assert "field larger than field limit" in proc.stderr


def test_decide_reads_the_stored_statistics_and_keeps_its_state(
    ready: tuple[str, dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, exposed, events = imported(ready, tmp_path)
    state = tmp_path / "state.json"
    args = ("decide", "ranker-v2", "-g", "p99_ms=120:150", "--state", str(state), "-o", "json")
    first = json.loads(abmesh(*args, store=url).stdout)
    # the same decision from the oracle's statistics (pandas over the raw events)
    expected = decide(
        load_spec(SPEC),
        ExperimentStats.from_report(expected_arms(events, exposed, METRICS, RATIOS), RATIOS),
        [Threshold("p99_ms", 120.0, 150.0)],
    ).to_dict()
    assert first["status"] == expected["status"]
    assert len(first["comparisons"]) == len(expected["comparisons"]) == 4
    for got, want in zip(first["comparisons"], expected["comparisons"], strict=True):
        for key, value in want.items():
            assert got[key] == (
                pytest.approx(value, rel=1e-9) if isinstance(value, float) else value
            )
    assert json.loads(state.read_text())["looks"] == 1
    second = json.loads(abmesh(*args, store=url).stdout)
    assert second["state"]["looks"] == 2
    text = abmesh("decide", "ranker-v2", "-g", "p99_ms=170:150", store=url).stdout
    assert text.startswith("ranker-v2: harm")
    assert "170, over its limit 150" in text
    bad = abmesh("decide", "ranker-v2", "-g", "p99_ms=fast:150", store=url, ok=False)
    assert bad.returncode == 1
    assert "VALUE and LIMIT must be numbers" in bad.stderr
    state.write_text("[1, 2]")
    bad = abmesh(*args, store=url, ok=False)
    assert bad.returncode == 1
    assert "not a decision state" in bad.stderr
