"""Events survive crashes and outages: kill -9 mid-stream, a store that goes away."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from assignment.auth import Role
from tests.oracle import assert_same_arms, expected_arms
from tests.servers import auth, start_redis, start_service
from tests.test_events import METRICS, RATIOS, make_events, prepare, stats_of

WRITER = auth(Role.WRITER)


@pytest.mark.parametrize("backend", ["sqlite", "redis-aof", "redis-cluster"])
def test_kill_9_mid_stream_then_resend_counts_every_event_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    redis_server = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    elif backend == "redis-cluster":  # the service is killed, not the store: no AOF needed
        url = request.getfixturevalue("redis_cluster_store_url")
    else:
        redis_server = start_redis(tmp_path / "redis", persist=True)  # AOF on
        url = f"redis://127.0.0.1:{redis_server.port}/0"
    try:
        exposed = prepare(url)
        events = make_events(8_000, seed=11)
        batches = [events[i : i + 100] for i in range(0, len(events), 100)]
        svc = start_service(url, tmp_path)
        acknowledged: list[dict[str, Any]] = []

        def stream() -> None:
            with httpx.Client(base_url=svc.url, timeout=10, headers=WRITER) as http:
                for batch in batches:
                    try:
                        r = http.post("/v1/events", json={"events": batch})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if r.status_code == 200:
                        acknowledged.extend(batch)

        sender = threading.Thread(target=stream)
        sender.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 2_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        svc.stop(signal.SIGKILL)  # mid-stream: no shutdown, no flush, nothing graceful
        sender.join()
        assert 2_000 <= len(acknowledged) < len(events)

        restarted = start_service(url, tmp_path)
        try:
            kept = httpx.get(
                f"{restarted.url}/v1/experiments/ranker-v2/events",
                params={"limit": 100_000},
                headers=auth(Role.READER),
            ).json()["events"]
            assert {e["event_id"] for e in acknowledged} <= {e["event_id"] for e in kept}
            for start in range(0, len(events), 500):  # resend everything
                r = httpx.post(
                    f"{restarted.url}/v1/events",
                    json={"events": events[start : start + 500]},
                    headers=WRITER,
                )
                assert r.status_code == 200
            assert_same_arms(
                stats_of(restarted.url)["arms"], expected_arms(events, exposed, METRICS, RATIOS)
            )
        finally:
            restarted.stop()
    finally:
        if redis_server is not None:
            redis_server.stop()


def test_store_down_is_a_503_with_retry_after_and_nothing_half_applied(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis", persist=True)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    exposed = prepare(url)
    events = make_events(1_000, seed=12)
    svc = start_service(url, tmp_path)
    try:
        first, second = events[:500], events[500:]

        def ingest(batch: list[dict[str, Any]]) -> httpx.Response:
            return httpx.post(
                f"{svc.url}/v1/events", json={"events": batch}, headers=WRITER, timeout=30
            )

        assert ingest(first).status_code == 200
        before = stats_of(svc.url)
        redis_server.stop()
        r = ingest(second)
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        assert "Redis store" in r.json()["error"]
        redis_server = start_redis(tmp_path / "redis", port=redis_server.port, persist=True)
        assert stats_of(svc.url)["arms"] == before["arms"]  # the failed batch left no trace
        retry = ingest(second).json()
        assert retry["rejected"] == []
        assert_same_arms(stats_of(svc.url)["arms"], expected_arms(events, exposed, METRICS, RATIOS))
    finally:
        svc.stop()
        redis_server.stop()
