"""Several rollouts at once, end to end: one real Envoy (one listener, one RDS file), real
Prometheus, toy models, abmesh's service and one or two controller processes.

Experiment `alpha` (host a.test: stable v1, candidate v2, healthy) is promoted while `beta`
(host b.test: stable v1, candidate v3, failing 5 % of requests) is rolled back.  Simulated
users ask the service for their arm and send it as the header: every request a unit sends
while its experiment runs is served by its arm's model.  Then a controller killed with -9 mid
canary is replaced within its lease TTL plus an interval, and one stopped with SIGTERM gives
its leases up at once.  Timings are printed, not asserted."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from experiments.localstack import (
    RolloutStack,
    Service,
    model_variants,
    start_rollout_stack,
    start_service,
)
from experiments.store import Store, open_store
from tests.rollout_support import controller, moves, start
from tests.servers import wait_until

pytestmark = pytest.mark.timeout(300)
EXPERIMENTS = {"alpha": ("a.test", "v2"), "beta": ("b.test", "v3")}


def spec(name: str, steps: list[int], checks: int = 2) -> dict[str, Any]:
    host, candidate = EXPERIMENTS[name]
    return {
        "name": name,
        "variants": model_variants(candidate),
        "rollout": {
            "target": {"domains": [host], "clusters": {"stable": "v1", "candidate": candidate}},
            "phases": [{"kind": "canary", "steps": steps, "checks": checks}, {"kind": "promote"}],
        },
    }  # fmt: skip


class Users:
    """Each request: ask the service for the unit's arm, then call the experiment's host with
    the group header; keep (sent at, experiment, variant, model)."""

    def __init__(self, service: str, front: str) -> None:
        self.seen: list[tuple[float, str, str, str]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(service, front, seed), daemon=True)
            for seed in range(2)
        ]
        for t in self._threads:
            t.start()

    def _run(self, service: str, front: str, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                name = rng.choice(sorted(EXPERIMENTS))
                unit = f"{name}-user-{rng.randrange(400)}"
                try:
                    a = http.get(f"{service}/v1/assign/{name}", params={"unit": unit}).json()
                    sent = time.time()
                    headers = {"host": EXPERIMENTS[name][0], "x-user-group": a["header"]["value"]}
                    reply = http.get(front, headers=headers)
                    self.seen.append((sent, name, a["variant"], reply.headers.get("x-model", "?")))
                except (httpx.HTTPError, KeyError, ValueError):
                    time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RolloutStack]:
    s = start_rollout_stack(tmp_path, models=("v1", "v2", "v3"))
    yield s
    s.stop()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Store, Service]]:
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    service = start_service(url, tmp_path, refresh_interval=0.2, exposure_flush_interval=0.2)
    yield url, store, service
    service.stop()
    store.close()


@pytest.mark.parametrize("controllers", [1, 2])
def test_two_rollouts_share_one_envoy_without_touching_each_other(
    stack: RolloutStack, db: tuple[str, Store, Service], tmp_path: Path, controllers: int
) -> None:
    url, store, service = db
    stack.set_model("v3", error_rate=0.05)
    start(store, spec("alpha", [20, 50]))
    start(store, spec("beta", [20, 50], checks=1000))
    users = Users(service.url, stack.front)
    procs = [controller(url, stack, tmp_path, f"ctl-{i}") for i in range(controllers)]
    try:
        for name in EXPERIMENTS:
            wait_until(lambda n=name: store.get_experiment(n).status.outcome, name, timeout=150)
            wait_until(lambda n=name: store.get_experiment(n).status.routes, f"{name} routes")
        settled = time.time() + 1.0  # the service's config cache follows within 0.2 s
        wait_until(lambda: sum(t > settled for t, *_ in users.seen) > 100, "traffic after")
    finally:
        users.stop()
        for p in procs:
            p.stop()
    expected = {("alpha", "stable"): "v1", ("alpha", "candidate"): "v2",
                ("beta", "stable"): "v1", ("beta", "candidate"): "v3"}  # fmt: skip
    for name, outcome, final_model in (("alpha", "promoted", "v2"), ("beta", "rolled_back", "v1")):
        record = store.get_experiment(name)
        assert record.status.outcome is not None
        assert record.status.outcome.value == outcome
        entries = moves(store, name)
        ended = entries[-1]["at"]
        during = [(v, m) for t, n, v, m in users.seen if n == name and t < ended]
        wrong = [(v, m) for v, m in during if m != expected[name, v]]
        served = {v: sum(x == v for x, _ in during) for v in ("stable", "candidate")}
        print(f"{name} ({controllers} controller(s)): {len(during)} requests while running,"
              f" {served}, {len(wrong)} served by another arm's model; then {outcome}")  # fmt: skip
        assert served["candidate"] > 20
        assert served["stable"] > 20
        assert wrong == []  # every request of an assigned unit reached its arm's model
        after = [m for t, n, _, m in users.seen if n == name and t > settled]
        assert after
        assert set(after) == {final_model}
        actions = [e["action"] for e in entries]
        assert actions == (["start", "step", "promote"] if name == "alpha" else
                           ["start", "rollback"])  # fmt: skip
        # One controller at a time drove each: a handover (a second controller announcing
        # itself takes its share) may happen once, never back and forth.
        drivers = [
            e["by"] for i, e in enumerate(entries) if i == 0 or e["by"] != entries[i - 1]["by"]
        ]
        assert len(drivers) == len(set(drivers))
    document = stack.routes_file.read_text()
    assert "abmesh-alpha" in document
    assert "abmesh-beta" in document


def test_a_killed_controller_is_replaced_and_a_stopped_one_hands_over_at_once(
    stack: RolloutStack, db: tuple[str, Store, Service], tmp_path: Path
) -> None:
    url, store, service = db
    start(store, spec("alpha", [5, 10, 20, 30, 40, 50], checks=2))
    users = Users(service.url, stack.front)
    lease = f"{store.get_experiment('alpha').uid}#rollout"

    def holder() -> str | None:
        return store.lease_holders(lease).get(lease)

    interval = ["--interval", "2"]  # with the default lease: 3 intervals = 6 s
    procs = {n: controller(url, stack, tmp_path, n, *interval) for n in ("first", "second")}
    try:
        wait_until(lambda: len(moves(store, "alpha")) >= 2, "a canary step", timeout=90)
        driver = str(holder())
        heir = "second" if driver == "first" else "first"
        killed = time.time()
        procs[driver].stop(signal.SIGKILL)
        wait_until(lambda: holder() == heir, "takeover", timeout=60)
        took_over = time.time() - killed
        step = len(moves(store, "alpha"))
        wait_until(lambda: len(moves(store, "alpha")) > step, "the heir steps", timeout=60)
        sent = time.time()
        code = procs[heir].stop(signal.SIGTERM, timeout=30)
        exited = time.time() - sent
        released = holder() is None
        procs["third"] = controller(url, stack, tmp_path, "third", *interval)
        wait_until(lambda: holder() == "third", "the third takes over", timeout=60)
        handed = time.time() - sent
    finally:
        users.stop()
        for proc in procs.values():
            proc.stop()
    print(f"kill -9 of {driver} mid canary: {heir} held the lease {took_over:.1f} s later"
          f" (lease 6 s + interval 2 s = 8 s at most); SIGTERM of {heir}: exit {code} in"
          f" {exited:.2f} s, lease released: {released}; a new controller held it"
          f" {handed:.1f} s after the signal (its start-up included)")  # fmt: skip
    assert code == 0
    assert released
    entries = moves(store, "alpha")
    assert {e["by"] for e in entries} >= {driver, heir}
    shares = [e["weights"].get("candidate") for e in entries]
    assert shares == sorted(shares)
    assert len(shares) == len(set(shares))
