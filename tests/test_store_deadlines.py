"""A sick store never stalls a request: a hung Redis (SIGSTOP), a cold start without configs,
and the deadline pool itself.  Deadlines in the assertions are generous (seconds); the
measured times are printed (`pytest -s`), and benchmarks/hung_store.py tabulates them."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from assignment.auth import Role
from assignment.deadline import DeadlinePool, StoreDeadlineError
from experiments import EXAMPLES_DIR
from tests.hung_store import PLAIN, STICKY, STICKY_HEADER, hung, prepare, sample, table
from tests.servers import TOKENS, auth, start_redis, start_service, wait_until

GENEROUS = 5.0  # seconds: far above the deadlines (50 ms, 500 ms), far below the old stalls


WRITER = auth(Role.WRITER)
# Every route that reads or writes the store outside the assignment path (assignment.routes.
# bounded): with the store hung they answer 503 within `api_timeout`, not the client's retries.
EXAMPLE = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
FLAGGER = {"name": PLAIN, "metadata": {"token": TOKENS[Role.ADMIN]}}
BOUNDED_ROUTES = [
    ("GET", "/v1/experiments", None),
    ("GET", f"/v1/experiments/{PLAIN}", None),
    ("GET", f"/v1/experiments/{PLAIN}/stats", None),
    ("GET", f"/v1/experiments/{PLAIN}/segments", None),
    ("GET", f"/v1/experiments/{PLAIN}/snapshots", None),
    ("GET", f"/v1/experiments/{PLAIN}/events", None),
    ("GET", f"/v1/experiments/{PLAIN}/report", None),
    ("GET", f"/v1/experiments/{PLAIN}/report.html", None),
    ("GET", f"/v1/experiments/{PLAIN}/decision", None),
    ("GET", "/v1/reports", None),
    ("GET", "/reports", None),
    ("POST", "/v1/flagger/confirm-promotion", FLAGGER),
    ("POST", "/v1/flagger/event", FLAGGER),
    ("POST", f"/v1/experiments/{PLAIN}/pause", None),
    ("POST", f"/v1/experiments/{PLAIN}/phase", {"phase": "p2"}),
    ("PUT", f"/v1/experiments/{PLAIN}", {**EXAMPLE, "coverage": 0.5}),
    ("DELETE", f"/v1/experiments/{PLAIN}", None),
]


def post_events(url: str, body: dict[str, object]) -> int:
    return httpx.post(f"{url}/v1/events", json=body, timeout=30, headers=WRITER).status_code


def test_a_hung_store_gets_fallbacks_and_503s_not_stalls(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    prepare(url)
    svc = start_service(url, tmp_path, events_timeout=0.5, api_timeout=1.0)
    try:
        healthy = sample(svc.url, rounds=5, tag="before")
        print("\n" + table(healthy, "Redis answering"))
        sticky_before = [body for _, _, _, body in healthy["GET /v1/assign (sticky)"]]
        assert {b["reason"] for b in sticky_before} <= {"sticky", "hash", "coverage"}
        with hung(redis_server):
            during = sample(svc.url, rounds=10, clients=2, tag="during")
            print(table(during, "Redis stopped (SIGSTOP)"))
            bounded = send_bounded(svc.url)
        for (method, path, _), (status, retry, took) in zip(BOUNDED_ROUTES, bounded, strict=True):
            assert (status, retry) == (503, "1"), (method, path)
            assert took < GENEROUS, (method, path, took)
        for name, rows in during.items():
            assert all(took < GENEROUS for _, took, _, _ in rows), name
        for route in ("GET /v1/assign (hash)", "GET /v1/assign (sticky)"):
            assert {status for status, _, _, _ in during[route]} == {200}
        sticky = [body for _, _, _, body in during["GET /v1/assign (sticky)"]]
        assert {b["experiment"] for b in sticky} == {STICKY}
        assert "sticky" not in {b["reason"] for b in sticky}  # new units, no record: the hash
        for status, _, headers, _ in during["ext_authz check"]:
            assert status == 200
            assert "x-user-group" in headers  # both experiments still route their units
            assert STICKY_HEADER in headers
        for route in ("POST /v1/events", "GET /v1/experiments/…/stats"):
            for status, _, headers, body in during[route]:
                assert (status, headers["Retry-After"]) == (503, "1"), route
                assert "store" in body["error"]
        # Continued: the store is used again, the refused batch goes in on a resend.
        resend = {"events": [{"event_id": "again", "experiment": PLAIN, "unit": "during-0-0",
                              "metric": "click"}]}  # fmt: skip
        wait_until(
            lambda: post_events(svc.url, resend) == 200,
            "events accepted again",
        )
        unit = "during-0-0"
        first = httpx.get(f"{svc.url}/v1/assign/{STICKY}", params={"unit": unit}).json()
        wait_until(
            lambda: httpx.get(f"{svc.url}/v1/assign/{STICKY}", params={"unit": unit}).json()
            == {**first, "reason": "sticky"},
            "sticky records again",
        )
    finally:
        svc.stop()
        redis_server.stop()


def send_bounded(url: str) -> list[tuple[int, str | None, float]]:
    """(status, Retry-After, seconds) of each of BOUNDED_ROUTES, sent with the admin token."""
    out = []
    with httpx.Client(base_url=url, timeout=60, headers=auth(Role.ADMIN)) as http:
        for method, path, body in BOUNDED_ROUTES:
            start = time.perf_counter()
            r = http.request(method, path, json=body)
            out.append((r.status_code, r.headers.get("Retry-After"), time.perf_counter() - start))
    print("bounded routes, seconds:", " ".join(f"{took:.2f}" for _, _, took in out))
    return out


def test_a_locked_sqlite_store_gets_the_same_fallbacks(tmp_path: Path) -> None:
    path = tmp_path / "abmesh.db"
    prepare(f"sqlite:///{path}")
    svc = start_service(f"sqlite:///{path}", tmp_path, events_timeout=0.5, api_timeout=1.0)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (busy wait: 10 s)
        try:
            during = sample(svc.url, rounds=5, tag="locked")
            print("\n" + table(during, "SQLite write-locked by another process"))
        finally:
            other.execute("ROLLBACK")
        for name, rows in during.items():
            assert all(took < GENEROUS for _, took, _, _ in rows), name
            statuses = {status for status, _, _, _ in rows}
            if name == "GET /v1/experiments/…/stats":
                # A read waits for the connection an event batch holds while SQLite's busy
                # wait runs: answered, or 503 at its deadline, by how the requests interleave.
                assert statuses <= {200, 503}, name
            else:
                assert statuses == {503 if name == "POST /v1/events" else 200}, name
        batch = {"events": [{"event_id": "e", "experiment": PLAIN, "unit": "u", "metric": "click"}]}
        wait_until(
            lambda: post_events(svc.url, batch) == 200,
            "events accepted again",
        )
    finally:
        other.close()
        svc.stop()


def test_a_cold_start_without_the_store_answers_503_until_configs_load(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    prepare(url)
    with hung(redis_server):
        # The port opens although no config can load.
        svc = start_service(url, tmp_path, events_timeout=0.5)
        try:
            with httpx.Client(base_url=svc.url, timeout=GENEROUS, headers=auth(Role.ADMIN)) as http:
                for r in (
                    http.get(f"/v1/assign/{PLAIN}", params={"unit": "u1"}),
                    http.post("/v1/assign", json={"units": ["u1"]}),
                    http.get("/v1/configs"),
                ):
                    assert (r.status_code, r.headers["Retry-After"]) == (503, "1")
                    assert "not loaded yet" in r.json()["error"]
                ready = http.get("/readyz")
                assert ready.status_code == 503
                assert "configs not loaded yet" in ready.json()["reasons"]
                check = http.get("/v1/extauthz/p", headers={"x-user-id": "u1"})
                assert check.status_code == 200  # never a denial: no header, the stable route
                assert "x-user-group" not in check.headers
        except BaseException:
            svc.stop()
            raise
    try:
        with httpx.Client(base_url=svc.url, timeout=GENEROUS, headers=auth(Role.ADMIN)) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, "configs to load")
            assert http.get(f"/v1/assign/{PLAIN}", params={"unit": "u1"}).status_code == 200
            unknown = http.get("/v1/assign/no-such-exp", params={"unit": "u1"})
            assert unknown.status_code == 404  # now it is known not to exist
    finally:
        svc.stop()
        redis_server.stop()


# The pool on its own: a blocked call stands for a hung store, released by the test.


def test_a_call_past_its_deadline_fails_and_a_queued_one_never_runs() -> None:
    async def scenario() -> None:
        pool = DeadlinePool(1, "test")
        release, ran = threading.Event(), threading.Event()
        with pytest.raises(StoreDeadlineError, match="within 20 ms"):
            await pool.call(release.wait, deadline=0.02)
        assert pool.overdue == 1
        # Every thread is blocked past its deadline: the next call fails at once.
        with pytest.raises(StoreDeadlineError, match="not answered 1 earlier call"):
            await pool.call(ran.set, deadline=10)
        release.set()
        await asyncio.sleep(0.05)  # its done callback runs on this loop
        assert pool.overdue == 0
        assert await pool.call(lambda: 42, deadline=10) == 42
        pool.shutdown(wait=True)
        assert not ran.is_set()

    asyncio.run(scenario())


def test_a_call_queued_behind_a_slow_one_is_dropped_at_its_deadline() -> None:
    async def scenario() -> None:
        pool = DeadlinePool(1, "test")
        release, ran = threading.Event(), threading.Event()
        slow = asyncio.ensure_future(pool.call(release.wait))  # no deadline: a flush
        await asyncio.sleep(0.01)
        with pytest.raises(StoreDeadlineError, match="within 20 ms"):
            await pool.call(ran.set, deadline=0.02)
        assert pool.overdue == 0  # it never started, so it holds no thread
        release.set()
        assert await slow is True
        assert await pool.call(lambda: "free", deadline=10) == "free"
        pool.shutdown(wait=True)
        assert not ran.is_set()

    asyncio.run(scenario())
