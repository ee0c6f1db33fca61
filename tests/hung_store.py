"""A store that hangs instead of refusing, and the requests the service answers meanwhile.

The store is a private redis-server stopped with SIGSTOP (by its own PID): connections are
accepted by the kernel, nothing is ever answered, which is what a stalled or partitioned store
looks like to a client.  `sample` sends every route of `ROUTES` in turn and times each answer;
tests/test_store_deadlines.py checks the answers, benchmarks/hung_store.py prints the table.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import yaml

from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.localstack import Process
from experiments.store import open_store
from tests.servers import auth

PLAIN, STICKY = "ranker-v2", "sticky-ranker"
STICKY_HEADER = "x-sticky-group"
Sample = dict[str, list[tuple[int, float, httpx.Headers, Any]]]  # route -> (status, s, ...)


def prepare(store_url: str) -> None:
    """Two running experiments: one assigned by hash, one sticky (a store lookup per unit)."""
    example = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
    store = open_store(store_url)
    for doc in (example, {**example, "name": STICKY, "header": STICKY_HEADER, "sticky": True}):
        spec = load_spec(doc)
        store.put_experiment(spec)
        change_state(store, spec.name, Action.START)
    store.close()


def _event(unit: str) -> dict[str, Any]:
    return {"event_id": f"{unit}-click", "experiment": PLAIN, "unit": unit, "metric": "click"}


ROUTES: dict[str, Callable[[httpx.Client, str], httpx.Response]] = {
    "GET /v1/assign (hash)": lambda http, unit: http.get(f"/v1/assign/{PLAIN}?unit={unit}"),
    "GET /v1/assign (sticky)": lambda http, unit: http.get(f"/v1/assign/{STICKY}?unit={unit}"),
    "ext_authz check": lambda http, unit: http.get("/v1/extauthz/p", headers={"x-user-id": unit}),
    "POST /v1/events": lambda http, unit: http.post("/v1/events", json={"events": [_event(unit)]}),
    # One of the admin, data and report routes, which wait ABMESH_API_TIMEOUT (4 s) at most.
    "GET /v1/experiments/…/stats": lambda http, unit: http.get(f"/v1/experiments/{PLAIN}/stats"),
}


@contextmanager
def hung(redis_server: Process) -> Iterator[None]:
    """Redis stopped (SIGSTOP) inside the block, continued (SIGCONT) after it, whatever happens."""
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)


def sample(base_url: str, rounds: int, clients: int = 1, tag: str = "u") -> Sample:
    """`rounds` of every route from each of `clients` threads, a new unit every request (so each
    sticky lookup reads and writes).  Timeouts are far above any expected answer."""
    out: Sample = {name: [] for name in ROUTES}
    lock = threading.Lock()

    def client(c: int) -> None:
        # The admin's token, which opens the events and the statistics (assignment needs none).
        with httpx.Client(base_url=base_url, timeout=60, headers=auth(Role.ADMIN)) as http:
            for i in range(rounds):
                for name, send in ROUTES.items():
                    start = time.perf_counter()
                    r = send(http, f"{tag}-{c}-{i}")
                    took = time.perf_counter() - start
                    body = r.json() if r.content else None
                    with lock:
                        out[name].append((r.status_code, took, r.headers, body))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (no interpolation: an observed time)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def table(samples: Sample, title: str) -> str:
    lines = [title, f"{'route':28} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses"]
    for name, rows in samples.items():
        ms = [1000 * took for _, took, _, _ in rows]
        statuses = sorted({status for status, _, _, _ in rows})
        lines.append(
            f"{name:28} {len(ms):>5} {quantile(ms, 0.5):>8.1f} {quantile(ms, 0.99):>8.1f}"
            f" {max(ms):>8.1f}  {','.join(map(str, statuses))}"
        )
    return "\n".join(lines)
