"""Event ingest over real HTTP into both stores, checked against the pandas definition."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment import assign_many
from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.folding import FoldPlan
from experiments.store import Store, open_store
from tests.oracle import assert_same_arms, expected_arms
from tests.servers import Service, auth, start_service

SPEC: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
SPEC["metrics"]["secondary"] = [
    {"name": "revenue", "kind": "sum"},
    {"name": "score", "kind": "mean"},
    {"name": "revenue_per_score", "kind": "ratio", "numerator": "revenue", "denominator": "score"},
]
METRICS = {"click": "conversion", "revenue": "sum", "score": "sum"}
RATIOS = {"revenue_per_score": ("revenue", "score")}
PLAN = FoldPlan.from_spec(load_spec(SPEC))
UNITS = [f"user-{i}" for i in range(600)]


def make_events(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """Events for UNITS plus some never-exposed units, with ~20 % exact duplicates (retries)
    and timestamps shuffled out of order; revenue in large values to stress the sums."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(int(count * 0.8)):
        unit = rng.choice(UNITS + [f"ghost-{j}" for j in range(30)])
        metric = rng.choice(list(METRICS))
        event: dict[str, Any] = {
            "event_id": f"ev-{seed}-{i}",
            "experiment": "ranker-v2",
            "unit": unit,
            "metric": metric,
            "timestamp": 1_790_000_000 + rng.uniform(0, 86_400),
        }
        if metric == "revenue":
            event["value"] = round(rng.uniform(1e6, 1e6 + 500), 2)
        elif metric == "score":
            event["value"] = rng.gauss(0.5, 0.2)
        if rng.random() < 0.15:
            event["pre_period"] = True
        events.append(event)
    events += [dict(rng.choice(events)) for _ in range(count - len(events))]  # retries
    rng.shuffle(events)
    return events


def prepare(url: str) -> dict[str, str]:
    """A running experiment with the exposures of UNITS straight in the store (the arm of
    every event comes from them); returns unit -> variant of the exposed units."""
    store = open_store(url)
    spec = load_spec(SPEC)
    store.put_experiment(spec)
    change_state(store, spec.name, Action.START)
    results = assign_many(spec, UNITS)
    exposed = {u: a.variant for u, a in zip(UNITS, results, strict=True) if a.in_experiment}
    store.record_exposures(spec.name, "main", PLAN, {u: (v, 1.0) for u, v in exposed.items()})
    store.close()
    return exposed


@pytest.fixture
def setup(store_url: str) -> Iterator[tuple[str, Store, dict[str, str]]]:
    exposed = prepare(store_url)
    store = open_store(store_url)
    yield store_url, store, exposed
    store.close()


@pytest.fixture(scope="module")
def svc(module_store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service per backend for the validation tests: none needs a fresh store."""
    prepare(module_store_url)
    service = start_service(module_store_url, tmp_path_factory.mktemp("events"))
    yield service
    service.stop()


def post(url: str, events: list[dict[str, Any]], batch: int = 500) -> list[dict[str, Any]]:
    answers = []
    with httpx.Client(base_url=url, timeout=30, headers=auth(Role.WRITER)) as http:
        for start in range(0, len(events), batch):
            r = http.post("/v1/events", json={"events": events[start : start + batch]})
            assert r.status_code == 200, r.text
            answers.append(r.json())
    return answers


def stats_of(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"{url}/v1/experiments/ranker-v2/stats", headers=auth(Role.READER)
    ).json()
    return body


def test_10k_events_with_duplicates_match_pandas(
    setup: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    url, _, exposed = setup
    events = make_events(10_000)
    svc = start_service(url, tmp_path)
    try:
        answers = post(svc.url, events)
        assert sum(a["accepted"] for a in answers) == len({e["event_id"] for e in events})
        assert sum(a["duplicates"] for a in answers) == len(events) - len(
            {e["event_id"] for e in events}
        )
        assert all(a["rejected"] == [] for a in answers)
        report = stats_of(svc.url)
        assert (report["experiment"], report["phase"]) == ("ranker-v2", "main")
        assert_same_arms(report["arms"], expected_arms(events, exposed, METRICS, RATIOS))
        # A retried stream changes nothing.
        again = post(svc.url, events)
        assert sum(a["accepted"] for a in again) == 0
        assert stats_of(svc.url)["arms"] == report["arms"]
    finally:
        svc.stop()


def test_two_servers_ingesting_concurrently_agree_with_pandas(
    setup: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    url, _, exposed = setup
    events = make_events(6_000, seed=2)
    servers = [start_service(url, tmp_path), start_service(url, tmp_path)]
    try:
        # Both get every other batch of the same stream (same units, overlapping retries).
        batches = [events[i : i + 200] for i in range(0, len(events), 200)]
        errors: list[BaseException] = []

        def send(server: Service, mine: list[list[dict[str, Any]]]) -> None:
            try:
                for batch in mine:
                    post(server.url, batch)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [
            threading.Thread(target=send, args=(s, batches[i::2])) for i, s in enumerate(servers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert_same_arms(
            stats_of(servers[0].url)["arms"], expected_arms(events, exposed, METRICS, RATIOS)
        )
    finally:
        for s in servers:
            s.stop()


def test_events_before_exposure_count_from_the_exposure_on(tmp_path: Path, store_url: str) -> None:
    store = open_store(store_url)
    spec = load_spec(SPEC)
    store.put_experiment(spec)
    change_state(store, spec.name, Action.START)
    svc = start_service(store_url, tmp_path, exposure_flush_interval=0.1)
    try:
        unit = "late-unit"
        variant = assign_many(spec, [unit])[0].variant
        post(
            svc.url,
            [
                {
                    "event_id": "x1",
                    "experiment": "ranker-v2",
                    "unit": unit,
                    "metric": "revenue",
                    "value": 7.0,
                }
            ],
        )
        assert stats_of(svc.url)["arms"] == {}  # not exposed yet: counted nowhere
        httpx.get(f"{svc.url}/v1/assign/ranker-v2", params={"unit": unit})
        from tests.servers import wait_until

        wait_until(lambda: stats_of(svc.url)["arms"] != {}, "the exposure flush")
        arm = stats_of(svc.url)["arms"][variant]
        assert (arm["exposures"], arm["metrics"]["revenue"]["sum"]) == (1, 7.0)
    finally:
        svc.stop()
        store.close()


def test_a_new_phase_starts_from_zero(
    setup: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    url = setup[0]
    svc = start_service(url, tmp_path, admin_token="t")
    try:
        post(svc.url, make_events(500, seed=3))
        before = stats_of(svc.url)
        r = httpx.post(
            f"{svc.url}/v1/experiments/ranker-v2/phase",
            json={"phase": "ab"},
            headers={"Authorization": "Bearer t"},
        )
        assert (r.status_code, r.json()["status"]["phase"]) == (200, "ab")
        after = stats_of(svc.url)
        assert (after["phase"], after["arms"]) == ("ab", {})
        assert after["phases"] == ["main"]  # "ab" has no data yet
        old = httpx.get(
            f"{svc.url}/v1/experiments/ranker-v2/stats",
            params={"phase": "main"},
            headers=auth(Role.READER),
        ).json()
        assert old["arms"] == before["arms"]
        # The same event ids are still duplicates: ids are per experiment, not per phase.
        assert post(svc.url, make_events(500, seed=3))[0]["accepted"] == 0
    finally:
        svc.stop()


def _bad(**changes: Any) -> dict[str, Any]:
    event = {
        "event_id": "b1",
        "experiment": "ranker-v2",
        "unit": "user-1",
        "metric": "revenue",
        "value": 1.0,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


BAD = [
    (_bad(value="12"), "events[1].value: must be a number"),
    (_bad(value=True), "events[1].value: must be a number"),
    (_bad(value=1e300), "events[1].value: must be at most"),
    (_bad(value=10**400), "events[1].value: too large"),
    (_bad(timestamp="1900-01-01T00:00:00+00:00"), "events[1].timestamp: must not be before"),
    (_bad(metric="nope"), "events[1].metric: 'nope' is not a metric"),
    (_bad(metric="click~pre"), "events[1].metric"),
    (_bad(experiment="ghost"), "events[1].experiment: 'ghost' does not exist"),
    (_bad(unit=""), "events[1].unit: unit must not be empty"),
    (_bad(unit="x" * 10_000), "events[1].unit: unit is 10000 bytes"),
    (_bad(unit=7), "events[1].unit: must be a string"),
    (_bad(event_id="e" * 200), "events[1].event_id: must be 1-128 characters"),
    (_bad(event_id=...), "events[1].event_id: required"),
    (_bad(timestamp="yesterday"), "events[1].timestamp: not unix seconds"),
    (_bad(timestamp="2026-01-01T00:00:00"), "events[1].timestamp: an ISO 8601 time needs"),
    (_bad(timestamp=-5), "events[1].timestamp: must not be before 1970"),
    (_bad(pre_period="yes"), "events[1].pre_period: must be true or false"),
    (_bad(colour="red"), "events[1].colour: unknown field"),
    ("not an object", "events[1].event: must be an object"),
]


@pytest.mark.parametrize(("item", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_items_are_rejected_alone(svc: Service, item: Any, message: str) -> None:
    good = {
        "event_id": f"good-{uuid.uuid4().hex}",  # the service is shared: new every time
        "experiment": "ranker-v2",
        "unit": "user-1",
        "metric": "click",
    }
    r = httpx.post(f"{svc.url}/v1/events", json={"events": [good, item]}, headers=auth(Role.WRITER))
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    assert [x["index"] for x in body["rejected"]] == [1]
    assert body["rejected"][0]["error"].startswith(message)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"events": [{}] * 5001}, 413, "batch of 5001 events exceeds the limit of 5000"),
        ({"events": "many"}, 422, "body.events"),
        ({"evnts": []}, 422, "body.events"),
        ([1, 2], 422, "body"),
    ],
)
def test_bad_batches(svc: Service, body: Any, status: int, message: str) -> None:
    r = httpx.post(f"{svc.url}/v1/events", json=body, headers=auth(Role.WRITER))
    assert r.status_code == status
    assert message in r.json()["error"]


REJECTED_VALUES = re.compile(
    r'^abmesh_events_total\{outcome="rejected",reason="value"\} (\S+)$', re.MULTILINE
)


def rejected_values(svc: Service) -> float:
    found = REJECTED_VALUES.search(httpx.get(f"{svc.url}/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_nan_and_infinity_are_rejected(svc: Service) -> None:
    before = rejected_values(svc)  # the service is shared: other tests' rejections count too
    raw = (
        '{"events": [{"event_id": "n1", "experiment": "ranker-v2", "unit": "u", '
        '"metric": "revenue", "value": NaN}, {"event_id": "n2", "experiment": "ranker-v2",'
        ' "unit": "u", "metric": "revenue", "value": -Infinity}]}'
    )
    r = httpx.post(
        f"{svc.url}/v1/events",
        content=raw,
        headers={"content-type": "application/json", **auth(Role.WRITER)},
    )
    errors = [x["error"] for x in r.json()["rejected"]]
    assert errors == [
        "events[0].value: must be finite, got nan",
        "events[1].value: must be finite, got -inf",
    ]
    assert rejected_values(svc) == before + 2


def test_raw_events_and_snapshots_for_notebooks(
    setup: tuple[str, Store, dict[str, str]], tmp_path: Path
) -> None:
    url, _, _ = setup
    svc = start_service(url, tmp_path, snapshot_interval=0.3)
    try:
        events = make_events(300, seed=4)
        post(svc.url, events)
        kept = httpx.get(
            f"{svc.url}/v1/experiments/ranker-v2/events",
            params={"limit": 10_000},
            headers=auth(Role.READER),
        ).json()["events"]
        assert {e["event_id"] for e in kept} == {e["event_id"] for e in events}
        assert {"unit", "metric", "value", "timestamp", "received_at", "phase"} <= set(kept[0])
        from tests.servers import wait_until

        posted = time.time()

        def snapshots() -> list[dict[str, Any]]:
            body = httpx.get(
                f"{svc.url}/v1/experiments/ranker-v2/snapshots", headers=auth(Role.READER)
            ).json()
            return list(body["snapshots"])

        # Snapshots fall on a shared 0.3 s schedule: wait for one taken after the events.
        wait_until(lambda: any(s["at"] >= posted for s in snapshots()), "a later snapshot")
        snaps = snapshots()
        assert snaps[-1]["arms"] == stats_of(svc.url)["arms"]
        assert [s["at"] for s in snaps] == sorted(s["at"] for s in snaps)
        metrics = httpx.get(f"{svc.url}/metrics").text
        accepted = len({e["event_id"] for e in events})
        assert f'abmesh_events_total{{outcome="accepted",reason=""}} {accepted}.0' in metrics
    finally:
        svc.stop()


def test_stats_endpoint_shape(svc: Service) -> None:
    reader = auth(Role.READER)
    text = httpx.get(f"{svc.url}/v1/experiments/ranker-v2/stats", headers=reader).text
    arms = json.loads(text)["arms"]
    assert set(arms["control"]["metrics"]["revenue"]) >= {"n", "sum", "sum_sq"}
    assert httpx.get(f"{svc.url}/v1/experiments/ghost/stats", headers=reader).status_code == 404


def test_an_experiment_created_elsewhere_a_moment_ago_takes_events(
    tmp_path: Path, store_url: str
) -> None:
    svc = start_service(store_url, tmp_path, refresh_interval=3600)  # the cache will not poll
    try:
        prepare(store_url)  # created after the service loaded its (empty) configs
        r = httpx.post(
            f"{svc.url}/v1/events",
            json={
                "events": [
                    {
                        "event_id": "new-1",
                        "experiment": "ranker-v2",
                        "unit": "user-1",
                        "metric": "click",
                    }
                ]
            },
            headers=auth(Role.WRITER),
        )
        assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    finally:
        svc.stop()


def test_changing_the_metrics_starts_a_new_phase(tmp_path: Path, store_url: str) -> None:
    from controlplane.lifecycle import apply_spec

    exposed = prepare(store_url)
    events = make_events(400, seed=5)
    svc = start_service(store_url, tmp_path)
    try:
        post(svc.url, events)
        store = open_store(store_url)
        changed = {
            **SPEC,
            "metrics": {
                **SPEC["metrics"],
                "secondary": [*SPEC["metrics"]["secondary"], {"name": "dwell", "kind": "mean"}],
            },
        }
        record = apply_spec(store, load_spec(changed)).record
        assert (record.revision, record.phase) == (2, "main-r2")
        same = apply_spec(store, load_spec({**changed, "description": "words only"})).record
        assert same.phase == "main-r2"  # a change that does not touch the metrics: same phase
        store.close()
        old = httpx.get(
            f"{svc.url}/v1/experiments/ranker-v2/stats",
            params={"phase": "main"},
            headers=auth(Role.READER),
        ).json()
        assert "dwell" not in old["arms"]["control"]["metrics"]  # read with its own plan
        assert_same_arms(old["arms"], expected_arms(events, exposed, METRICS, RATIOS))
    finally:
        svc.stop()
