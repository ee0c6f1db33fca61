"""The event pipeline around its log: folders apart from ingest workers, archiving raw events to
Parquet, the lag made visible, events before an exposure, and a full exposure buffer."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from assignment.auth import Role
from assignment.exposures import ENTRY_BYTES, ExposureBuffer
from experiments.folding import PRE, Event
from experiments.reporting import phase_report
from experiments.store import open_store
from tests.oracle import assert_same_arms, expected_arms
from tests.servers import auth, start_redis, start_service, wait_until
from tests.test_events import METRICS, PLAN, RATIOS, make_events, prepare, stats_of

WRITER, READER = auth(Role.WRITER), auth(Role.READER)
ROOT = Path(__file__).resolve().parent.parent


def abmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def typed(events: list[dict[str, Any]]) -> list[Event]:
    """Events as the collector makes them from the HTTP items."""
    return [
        Event(
            e["event_id"],
            e["unit"],
            e["metric"] + (PRE if e.get("pre_period") else ""),
            float(e.get("value", 1.0)),
            float(e["timestamp"]),
        )
        for e in events
    ]


def post_events(url: str, events: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=url, headers=WRITER, timeout=60) as http:
        for start in range(0, len(events), 500):
            r = http.post("/v1/events", json={"events": events[start : start + 500]})
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_ingest_workers_append_and_abmesh_fold_folds(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_store_url")
    exposed = prepare(url)
    events = make_events(3_000, seed=31)
    svc = start_service(url, tmp_path, workers=2, fold=0)
    store = open_store(url)
    try:
        post_events(svc.url, events)
        # Past the service's sweep: with ABMESH_FOLD=0 nothing of it has been folded.
        time.sleep(2.5)
        assert store.fold_state("ranker-v2").pending > 0
        done = abmesh("fold", "--once", "--store", url)
        assert done.returncode == 0, done.stderr
        assert "log entries folded" in done.stdout
        assert store.fold_state("ranker-v2").pending == 0
        report = phase_report(store, store.get_experiment("ranker-v2"))
        assert_same_arms(report["arms"], expected_arms(events, exposed, METRICS, RATIOS))
        assert report["fold"]["pending"] == 0
    finally:
        svc.stop()
        store.close()


def test_archive_writes_folded_events_to_parquet_and_drops_them(
    store_url: str, tmp_path: Path
) -> None:
    exposed = prepare(store_url)
    store = open_store(store_url)
    try:
        events = make_events(2_000, seed=32)
        for start in range(0, len(events), 500):
            store.ingest_events("ranker-v2", "main", PLAN, typed(events[start : start + 500]))
        before = phase_report(store, store.get_experiment("ranker-v2"))["arms"]
        target = tmp_path / "archive"
        done = abmesh("events", "archive", str(target), "--older-than", "0", "--store", store_url)
        assert done.returncode == 0, done.stderr
        files = list((target / "experiment=ranker-v2").glob("events-*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files])
        unique = {e["event_id"] for e in events}
        assert sorted(frame["event_id"]) == sorted(unique)  # each once, duplicates dropped
        assert store.raw_events("ranker-v2") == []
        after = phase_report(store, store.get_experiment("ranker-v2"))["arms"]
        assert after == before  # the statistics do not need the raw events
        assert_same_arms(after, expected_arms(events, exposed, METRICS, RATIOS))
        again = abmesh("events", "archive", str(target), "--older-than", "0", "--store", store_url)
        assert "0 events archived" in again.stdout  # nothing archived twice
    finally:
        store.close()


def test_stats_say_how_far_they_are_folded_and_metrics_show_the_lag(
    sqlite_store_url: str, tmp_path: Path
) -> None:
    prepare(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path)
    try:
        sent = time.time()
        post_events(svc.url, make_events(1_000, seed=33))
        fold = stats_of(svc.url)["fold"]
        assert fold["pending"] == 0
        assert fold["lag_s"] == 0.0
        assert fold["folded_through"] >= sent  # a read sees what was appended before it

        def gauges() -> dict[str, float]:
            text = httpx.get(f"{svc.url}/metrics", timeout=30).text
            found = re.findall(r'^(abmesh_\w+)\{experiment="ranker-v2"\} (\S+)$', text, re.M)
            return {name: float(value) for name, value in found}

        def caught_up() -> bool:  # the gauges are set every sweep (2 s): the next one
            shown = gauges()
            return shown.get("abmesh_log_entries", 0) >= 600 + 800 and not (
                shown["abmesh_fold_pending_entries"] or shown["abmesh_fold_lag_seconds"])

        wait_until(caught_up, "the lag gauges")
        shown = gauges()
        assert shown["abmesh_fold_pending_entries"] == 0
        assert shown["abmesh_fold_lag_seconds"] == 0
        assert shown["abmesh_log_entries"] >= 600 + 800  # exposures + unique events kept
    finally:
        svc.stop()


def test_events_before_the_exposure_count_as_pre_period_whichever_arrives_first(
    sqlite_store_url: str, tmp_path: Path
) -> None:
    prepare(sqlite_store_url)  # user-* units exposed at t=1; these units are new
    svc = start_service(sqlite_store_url, tmp_path, exposure_flush_interval=0.05)
    exposed_at = 1_790_000_000.0
    try:

        def revenue() -> dict[str, Any]:
            arms: dict[str, Any] = stats_of(svc.url)["arms"]
            return arms.get("treatment", {}).get("metrics", {}).get("revenue", {})

        before = revenue()  # of the units prepare() exposed, with no revenue events
        event = {"experiment": "ranker-v2", "metric": "revenue"}
        early = [  # an hour before the exposure, and 10 s before it (clock skew): sent first
            {
                **event,
                "event_id": f"{u}-early",
                "unit": u,
                "value": 7.0,
                "timestamp": exposed_at - 3600,
            }
            for u in ("late-1", "late-2")
        ] + [
            {
                **event,
                "event_id": f"{u}-skew",
                "unit": u,
                "value": 5.0,
                "timestamp": exposed_at - 10,
            }
            for u in ("late-1", "late-2")
        ]
        post_events(svc.url, early)
        with httpx.Client(base_url=svc.url, headers=WRITER, timeout=30) as http:
            r = http.post(
                "/v1/exposures",
                json={
                    "exposures": [
                        {"experiment": "ranker-v2", "unit": u, "variant": "treatment",
                         "timestamp": exposed_at}
                        for u in ("late-1", "late-2")
                    ]
                },
            )  # fmt: skip
            assert r.json()["accepted"] == 2
        later = [
            {
                **event,
                "event_id": f"{u}-after",
                "unit": u,
                "value": 3.0,
                "timestamp": exposed_at - 7200,
            }
            for u in ("late-1",)
        ]  # sent after the exposure, timestamped before it: pre-period too
        post_events(svc.url, later)

        wait_until(lambda: revenue().get("n", 0) >= before.get("n", 0) + 2, "the exposures")
        got = revenue()
        assert got["sum"] - before.get("sum", 0.0) == pytest.approx(2 * 5.0)
        assert got["sum_x"] - before.get("sum_x", 0.0) == pytest.approx(2 * 7.0 + 3.0)
    finally:
        svc.stop()


def test_a_full_exposure_buffer_sheds_reports_and_never_blocks_assignment(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    prepare(url)
    svc = start_service(url, tmp_path, exposure_buffer_bytes=2048, exposure_flush_interval=0.05)
    try:
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            redis_server.stop()
            for i in range(40):  # about 10 fit in 2 KiB; the rest are dropped, counted, logged
                r = http.get("/v1/assign/ranker-v2", params={"unit": f"burst-{i}"})
                assert r.status_code == 200
            report = {"experiment": "ranker-v2", "unit": "burst-x", "variant": "control"}
            full = http.post("/v1/exposures", json={"exposures": [report]}, headers=WRITER)
            assert full.status_code == 503
            assert full.headers["Retry-After"] == "1"
            assert "exposure buffer is full" in full.json()["error"]
            dropped = re.search(
                r"^abmesh_exposures_dropped_total (\S+)$", http.get("/metrics").text, re.M
            )
            assert dropped is not None
            assert float(dropped.group(1)) > 0
            redis_server = start_redis(tmp_path / "redis", port=redis_server.port)
            prepare(url)  # a fresh Redis (no persistence): the experiment again
            wait_until(
                lambda: http.post(
                    "/v1/exposures", json={"exposures": [report]}, headers=WRITER
                ).status_code == 200,
                "room in the buffer once the store takes the backlog",
            )  # fmt: skip
    finally:
        svc.stop()
        redis_server.stop()


def test_unit_exposures_keep_the_served_variant_and_generation(store_url: str) -> None:
    prepare(store_url)
    store = open_store(store_url)
    first = {"a": ("control", 5.0, 3), "b": ("treatment", 6.0)}
    assert store.record_exposures("ranker-v2", "main", PLAN, first) == 2
    again = {"a": ("treatment", 7.0, 4)}
    assert store.record_exposures("ranker-v2", "main", PLAN, again) == 0  # the first stays
    assert store.unit_exposures("ranker-v2", "main", ["a", "b", "c"]) == {
        "a": {"variant": "control", "at": 5.0, "generation": 3},
        "b": {"variant": "treatment", "at": 6.0, "generation": 0},
    }
    assert json.dumps(store.unit_exposures("ranker-v2", "other", ["a"])) == "{}"
    store.close()


def test_units_in_a_failing_flush_still_count_against_the_buffer(tmp_path: Path) -> None:
    """A flush holds its batch while the store fails: the buffer reads full meanwhile, so
    reports get their 503 instead of slipping in while the backlog is out of sight."""

    async def scenario() -> None:
        writing, fail = asyncio.Event(), asyncio.Event()

        async def down_store(*_: Any) -> None:
            writing.set()
            await fail.wait()
            raise ConnectionError("store down")

        limit = 4 * (len("u-0") + ENTRY_BYTES)
        store = open_store(f"sqlite:///{tmp_path}/s.db")  # never written: run_write stands in
        buffer = ExposureBuffer(store, limit_bytes=limit, run_write=down_store)
        for i in range(4):
            buffer.add("exp", "ab", PLAN, f"u-{i}", "control", at=float(i))
        assert buffer.full
        flush = asyncio.ensure_future(buffer.flush())
        await asyncio.wait_for(writing.wait(), 60)
        assert buffer.full
        assert buffer.size == 0
        buffer.add("exp", "ab", PLAN, "u-9", "control")  # no room: dropped
        buffer.add("exp", "ab", PLAN, "u-1", "control", at=99.0)  # a duplicate of one in flight
        fail.set()
        await asyncio.wait_for(flush, 60)
        store.close()
        assert buffer.full
        assert buffer.bytes == limit
        units = buffer.pending[("exp", "ab")][1]
        assert sorted(units) == ["u-0", "u-1", "u-2", "u-3"]
        assert units["u-1"][1] == 1.0  # the earlier exposure time wins

    asyncio.run(scenario())
