"""The service under stress: store outages, exposure counts across a shutdown, ext_authz checks,
API keys.  Real processes, real Redis and SQLite."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment import assign_many
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.folding import exposures_of
from experiments.store import open_store
from tests.servers import start_redis, start_service, wait_until

EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())


def running(store_url: str, **changes: Any) -> None:
    store = open_store(store_url)
    spec = load_spec({**EXAMPLE, **changes})
    store.put_experiment(spec)
    change_state(store, spec.name, Action.START)
    store.close()


def test_cache_keeps_answering_through_a_store_outage(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis", persist=True)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    running(url)
    svc = start_service(url, tmp_path, refresh_interval=0.1)
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            before = http.get("/v1/assign/ranker-v2", params={"unit": "user-7"}).json()
            wait_until(lambda: http.get("/readyz").status_code == 200, "readyz")  # warmed up
            redis_server.stop()
            strict = {"strict": "true"}
            wait_until(
                lambda: http.get("/readyz", params=strict).status_code == 503,
                "strict readyz to see the outage",
            )
            ready = http.get("/readyz")  # the probe's: it serves from the cache, so it is ready
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            reasons = ready.json()["reasons"]
            assert any(r.startswith("configs not refreshed: Redis store") for r in reasons)
            assert 'abmesh_store_errors_total{operation="config"}' in http.get("/metrics").text
            during = http.get("/v1/assign/ranker-v2", params={"unit": "user-7"})
            assert during.status_code == 200
            assert during.json() == before
            assert http.post("/v1/assign", json={"units": ["a", "b"]}).status_code == 200
            down = http.get("/v1/experiments", headers={"Authorization": "Bearer x"})
            assert down.status_code == 401  # a wrong token is refused before the store is asked
            restarted = start_redis(tmp_path / "redis", port=redis_server.port, persist=True)
            try:
                wait_until(
                    lambda: http.get("/readyz", params=strict).status_code == 200,
                    "strict readyz to recover",
                )
                assert http.get("/readyz").json()["reasons"] == []
            finally:
                restarted.stop()
    finally:
        svc.stop()


def test_admin_write_during_an_outage_is_a_503_and_loses_nothing(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis", persist=True)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    running(url)
    svc = start_service(url, tmp_path, admin_token="t", refresh_interval=0.1)
    try:
        with httpx.Client(
            base_url=svc.url, timeout=10, headers={"Authorization": "Bearer t"}
        ) as http:
            redis_server.stop()
            r = http.put("/v1/experiments/ranker-v2", json=EXAMPLE | {"coverage": 0.5})
            assert r.status_code == 503
            assert "Redis store" in r.json()["error"]
    finally:
        svc.stop()
    restarted = start_redis(tmp_path / "redis", port=redis_server.port, persist=True)
    try:
        store = open_store(url)
        assert store.get_experiment("ranker-v2").spec.coverage == 1  # the old spec, intact
        store.close()
    finally:
        restarted.stop()


def test_exposure_counts_are_exact_after_a_burst_and_a_graceful_shutdown(
    tmp_path: Path, store_url: str
) -> None:
    running(store_url, coverage=0.8)
    # A flush interval longer than the test: every exposure is written by the shutdown flush.
    svc = start_service(store_url, tmp_path, exposure_flush_interval=600)
    units = [f"user-{i}" for i in range(400)] + ["qa-1", "qa-2"]
    requests = units * 3  # every unit three times: only its first exposure counts
    with httpx.Client(base_url=svc.url, timeout=10) as http:
        for i, unit in enumerate(requests):
            if i % 2:
                assert http.get("/v1/assign/ranker-v2", params={"unit": unit}).status_code == 200
            else:
                r = http.post("/v1/assign", json={"units": [unit], "experiments": ["ranker-v2"]})
                assert r.status_code == 200
        store = open_store(store_url)
        assert exposures_of(store.phase_stats("ranker-v2", "main")[0]) == {}  # nothing flushed yet
    # uvicorn shuts down gracefully, then re-raises the signal, so the exit status says SIGTERM.
    assert svc.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    expected = Counter(
        a.variant
        for a in assign_many(load_spec({**EXAMPLE, "coverage": 0.8}), units)
        if a.in_experiment
    )
    assert 250 < sum(expected.values()) < 400  # coverage and overrides left some units out
    assert exposures_of(store.phase_stats("ranker-v2", "main")[0]) == dict(expected)
    store.close()


def test_exposures_are_flushed_periodically(tmp_path: Path, sqlite_store_url: str) -> None:
    running(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path, exposure_flush_interval=0.1)
    try:
        httpx.post(f"{svc.url}/v1/assign", json={"units": [f"u{i}" for i in range(100)]})
        store = open_store(sqlite_store_url)
        wait_until(
            lambda: sum(exposures_of(store.phase_stats("ranker-v2", "main")[0]).values()) == 100,
            "flush",
            10,
        )
        store.close()
    finally:
        svc.stop()


def test_api_key_guards_assign(tmp_path: Path, sqlite_store_url: str) -> None:
    running(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path, api_key="k-123")
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            missing = http.get("/v1/assign/ranker-v2", params={"unit": "u"})
            assert (missing.status_code, missing.json()["error"]) == (
                401,
                "missing API key: send the 'x-api-key' header",
            )
            wrong = http.get(
                "/v1/assign/ranker-v2", params={"unit": "u"}, headers={"x-api-key": "nope"}
            )
            assert wrong.status_code == 401
            ok = http.get(
                "/v1/assign/ranker-v2", params={"unit": "u"}, headers={"x-api-key": "k-123"}
            )
            assert ok.status_code == 200
            # The specs hold the overrides: the reader token, not the API key, reads them.
            assert http.get("/v1/configs", headers={"x-api-key": "k-123"}).status_code == 401
            assert http.post("/v1/assign", json={"units": ["u"]}).status_code == 401
            assert http.get("/healthz").status_code == 200
    finally:
        svc.stop()


def test_bad_settings_stop_start_up_with_a_clear_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "serve", "--port", "1"],
        env={"ABMESH_REFRESH_INTERVAL": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: ABMESH_REFRESH_INTERVAL='soon' is not a number"


# ext_authz ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("authz")
    url = f"sqlite:///{workdir / 'abmesh.db'}"
    running(url)
    running(url, name="layered", header="x-ranker-group", coverage=0.5, overrides=[])
    store = open_store(url)
    store.put_experiment(load_spec({**EXAMPLE, "name": "paused-exp", "header": "x-paused"}))
    store.close()
    svc = start_service(url, workdir, extauthz_unit_cookie="uid")
    none = start_service(
        url, workdir, extauthz_unassigned="none", extauthz_experiments="ranker-v2,missing-exp"
    )
    yield svc, none
    svc.stop()
    none.stop()


def test_extauthz_sets_each_running_experiments_header(authz: Any) -> None:
    svc, _ = authz
    r = httpx.post(f"{svc.url}/v1/extauthz/predict/v1", headers={"x-user-id": "user-42"})
    assert r.status_code == 200
    units = assign_many(load_spec(EXAMPLE), ["user-42"])
    assert r.headers["x-user-group"] == units[0].header_value
    assert r.headers["x-ranker-group"] in {"group-a", "group-b"}
    assert "x-paused" not in r.headers  # not running


@pytest.mark.parametrize(
    "method",
    ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND", "PURGE", "MKCOL"],
)
def test_extauthz_answers_any_method_and_path(authz: Any, method: str) -> None:
    svc, _ = authz
    r = httpx.request(method, f"{svc.url}/v1/extauthz/", headers={"x-user-id": "user-1"})
    assert r.status_code == 200
    assert "x-user-group" in r.headers


def test_extauthz_reads_the_unit_from_a_cookie(authz: Any) -> None:
    svc, _ = authz
    by_cookie = httpx.get(f"{svc.url}/v1/extauthz/x", headers={"cookie": "a=1; uid=user-42"})
    by_header = httpx.get(f"{svc.url}/v1/extauthz/x", headers={"x-user-id": "user-42"})
    assert by_cookie.headers["x-user-group"] == by_header.headers["x-user-group"]


@pytest.mark.parametrize("headers", [{}, {"x-user-id": ""}, {"x-user-id": "x" * 300}])
def test_extauthz_never_fails_for_a_missing_or_bad_unit(
    authz: Any, headers: dict[str, str]
) -> None:
    svc, none = authz
    r = httpx.get(f"{svc.url}/v1/extauthz/p", headers=headers)
    assert (r.status_code, r.headers["x-user-group"]) == (200, "group-a")  # control
    quiet = httpx.get(f"{none.url}/v1/extauthz/p", headers=headers)
    assert quiet.status_code == 200
    assert "x-user-group" not in quiet.headers  # configured: no header, stable route


def test_extauthz_forcing_header_and_unenrolled_units(authz: Any) -> None:
    svc, none = authz
    forced = httpx.get(
        f"{none.url}/v1/extauthz/p", headers={"x-user-id": "u1", "x-user-group": "internal-testers"}
    )
    assert forced.headers["x-user-group"] == "group-b"
    # With "none", a unit outside the 50 % coverage of `layered` gets no header from it, while
    # the default service gives it control.
    spec = load_spec(
        {**EXAMPLE, "name": "layered", "header": "x-ranker-group", "coverage": 0.5, "overrides": []}
    )
    outside = next(
        f"u{i}"
        for i, a in enumerate(assign_many(spec, [f"u{i}" for i in range(50)]))
        if not a.in_experiment
    )
    r = httpx.get(f"{svc.url}/v1/extauthz/p", headers={"x-user-id": outside})
    assert r.headers["x-ranker-group"] == "group-a"
    only = httpx.get(f"{none.url}/v1/extauthz/p", headers={"x-user-id": outside})
    assert "x-ranker-group" not in only.headers  # not in ABMESH_EXTAUTHZ_EXPERIMENTS either


def test_serve_runs_on_the_embedded_default_store(tmp_path: Path) -> None:
    # As deployed: no store configured, nothing else running, and the warm-up (the other tests'
    # services skip it) done before /readyz turns ready.
    svc = start_service(None, tmp_path, warmup=1, log_level="info")
    try:
        wait_until(lambda: httpx.get(f"{svc.url}/readyz").json()["status"] == "ready", "readyz",
                   timeout=120)  # fmt: skip
        assert "analysis stack warmed up in" in svc.output()
        assert (tmp_path / "abmesh.db").exists()
        r = httpx.get(f"{svc.url}/v1/assign/none", params={"unit": "u"})
        assert r.status_code == 404
    finally:
        svc.stop()


def test_extauthz_never_refuses_a_large_body(authz: Any) -> None:
    svc, _ = authz
    r = httpx.post(
        f"{svc.url}/v1/extauthz/upload", content=b"x" * 2_000_000, headers={"x-user-id": "user-42"}
    )
    assert r.status_code == 200
    assert "x-user-group" in r.headers


def test_extauthz_reads_utf8_unit_ids_like_assign(authz: Any) -> None:
    svc, _ = authz
    for unit in ("用户-9", "日本", "é-user"):
        expected = httpx.get(f"{svc.url}/v1/assign/ranker-v2", params={"unit": unit}).json()
        r = httpx.get(f"{svc.url}/v1/extauthz/p", headers={"x-user-id": unit.encode()})
        assert r.headers["x-user-group"] == expected["header"]["value"], unit


def test_experiments_sharing_a_header_route_their_own_units(tmp_path: Path) -> None:
    # Two experiments in disjoint layer slices set the same header: each unit gets the group
    # of the experiment it is in, not the control of the other one.
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    variants = [
        {"key": "control", "header_value": "group-a", "weight": 0, "destination": {"host": "m"}}
    ]
    for name, (start, end), group in (
        ("a-exp", (0, 50), "group-b"),
        ("b-exp", (50, 100), "group-c"),
    ):
        running(
            url,
            name=name,
            overrides=[],
            layer={"name": "l", "start": start, "end": end},
            variants=[
                *variants,
                {"key": "t", "header_value": group, "weight": 100, "destination": {"host": "m"}},
            ],
        )
    svc = start_service(url, tmp_path)
    try:
        seen = set()
        for i in range(40):
            r = httpx.get(f"{svc.url}/v1/extauthz/p", headers={"x-user-id": f"u{i}"})
            seen.add(r.headers["x-user-group"])
        assert seen == {"group-b", "group-c"}  # never group-a: every unit is in one of them
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("unit=%FF", "not valid UTF-8"),
        ("unit=%ED%A0%80", "not valid UTF-8"),
        ("unit=a&unit=b", "give the unit once"),
    ],
)
def test_assign_refuses_malformed_unit_queries(authz: Any, query: str, message: str) -> None:
    svc, _ = authz
    r = httpx.get(f"{svc.url}/v1/assign/ranker-v2?{query}")
    assert r.status_code == 422
    assert message in r.json()["error"]


def test_a_config_this_version_cannot_read_degrades_but_keeps_serving(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    running(url)
    svc = start_service(url, tmp_path, refresh_interval=0.1, exposure_flush_interval=600)
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            before = http.get("/v1/assign/ranker-v2", params={"unit": "user-3"}).json()
            wait_until(lambda: http.get("/readyz").status_code == 200, "readyz")  # warmed up
            db = sqlite3.connect(tmp_path / "abmesh.db")
            db.execute("UPDATE experiment_revisions SET spec = json_set(spec, '$.future', 1)")
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'epoch'")
            db.commit()
            strict = {"strict": "true"}
            wait_until(
                lambda: http.get("/readyz", params=strict).status_code == 503, "readyz to degrade"
            )
            reason = http.get("/readyz").json()["reasons"][0]
            assert reason.startswith("configs not refreshed")
            assert "future" in reason
            assert http.get("/v1/assign/ranker-v2", params={"unit": "user-3"}).json() == before
            db.execute("UPDATE experiment_revisions SET spec = json_remove(spec, '$.future')")
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'epoch'")
            db.commit()
            db.close()
            wait_until(
                lambda: http.get("/readyz", params=strict).status_code == 200, "readyz to recover"
            )
    finally:
        svc.stop()
    store = open_store(url)
    assert exposures_of(store.phase_stats("ranker-v2", "main")[0]) == {before["variant"]: 1}
    store.close()


def test_exposures_buffered_through_a_store_outage_are_written_once_it_is_back(
    tmp_path: Path,
) -> None:
    redis_server = start_redis(tmp_path / "redis", persist=True)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    running(url)
    svc = start_service(url, tmp_path, exposure_flush_interval=0.1, refresh_interval=0.1)
    units = [f"user-{i}" for i in range(60)]
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            redis_server.stop()
            for unit in units:
                assert http.get("/v1/assign/ranker-v2", params={"unit": unit}).status_code == 200
            wait_until(
                lambda: (
                    'abmesh_store_errors_total{operation="exposures"}' in http.get("/metrics").text
                ),
                "a failed flush",
            )
            restarted = start_redis(tmp_path / "redis", port=redis_server.port, persist=True)
            try:
                store = open_store(url)
                wait_until(
                    lambda: (
                        sum(exposures_of(store.phase_stats("ranker-v2", "main")[0]).values())
                        == len(units)
                    ),
                    "the kept exposures to be written",
                )
                expected = Counter(a.variant for a in assign_many(load_spec(EXAMPLE), units))
                assert exposures_of(store.phase_stats("ranker-v2", "main")[0]) == dict(expected)
                store.close()
            finally:
                svc.stop()
                restarted.stop()
    finally:
        svc.stop()


def test_metrics_add_up_across_worker_processes(tmp_path: Path, sqlite_store_url: str) -> None:
    running(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path, workers=2)
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            for i in range(40):
                http.get("/v1/assign/ranker-v2", params={"unit": f"u{i}"})
            for _ in range(4):  # whichever worker answers the scrape, it sees all 40
                text = http.get("/metrics").text
                total = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("abmesh_assignments_total{")
                )
                assert total == 40
    finally:
        svc.stop()
