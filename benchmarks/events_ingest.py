"""Event pipeline throughput: POST /v1/events (batches of 500) into SQLite, Redis and a 3-master
Redis Cluster, with 1 and 2 service workers, into experiments of 1e3 and 1e6 exposed units;
the same appends and folds in-process; and redis-benchmark's pipelined SET rate on the same
Redis, all in one run.

    python benchmarks/events_ingest.py [--events 200000] [--clients 4] [--big 1000000]
        [--backends sqlite,redis,redis-cluster]

`ack/s` is events acknowledged per second (appended to the log); `folded/s` counts until the
statistics hold every one of them (the service folds behind, in a child folder process of
each worker, ABMESH_FOLD=process; "+ abmesh fold": the service only appends, one `abmesh fold`
process folds; the clock stops when the log has nothing pending).  The load comes from
--clients threads posting pre-encoded batches over loopback on the same 2 cores as the workers
and the stores.  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from experiments import load_spec
from experiments.foldbatch import Exposure
from experiments.folding import Event, FoldPlan
from experiments.store import Store, open_store
from tests.servers import auth, start_redis, start_redis_cluster, start_service

BATCH = 500
BACKENDS = ("sqlite", "redis", "redis-cluster")
SPEC = {
    "name": "bench",
    "variants": [
        {"key": k, "header_value": k, "weight": 50, "destination": {"host": "m"}}
        for k in ("control", "treatment")
    ],
    "metrics": {
        "primary": {"name": "click", "kind": "conversion"},
        "secondary": [{"name": "revenue", "kind": "sum"}],
    },
}
PLAN = FoldPlan.from_spec(load_spec(SPEC))


def make_events(count: int, units: int, tag: str) -> list[dict[str, Any]]:
    rng = random.Random(5)
    now = time.time()
    return [
        {
            "event_id": f"{tag}-{i}",
            "experiment": "bench",
            "unit": f"u{rng.randrange(units)}",
            "metric": rng.choice(("click", "revenue")),
            "value": round(rng.uniform(1, 100), 2),
            "timestamp": now,
        }
        for i in range(count)
    ]


def prepare(url: str, units: int) -> float:
    """A running experiment with `units` exposed units, folded; returns exposures folded/s."""
    store = open_store(url)
    spec = load_spec(SPEC)
    store.put_experiment(spec)
    change_state(store, "bench", Action.START)
    start = time.perf_counter()
    for low in range(0, units, 10_000):
        chunk = [
            Exposure(f"u{i}", "control" if i % 2 else "treatment", 1.0)
            for i in range(low, min(low + 10_000, units))
        ]
        store.append_exposures("bench", "main", PLAN, chunk)
    store.settle("bench", timeout=3600)
    rate = units / (time.perf_counter() - start)
    store.close()
    return rate


def cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies of the machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def http_rate(
    url: str, store: Store, bodies: list[bytes], clients: int
) -> tuple[float, float, float]:
    """(acknowledged events/s, folded events/s, share of the machine's CPU busy meanwhile) for
    posting `bodies`."""
    queue = list(bodies)
    lock = threading.Lock()

    def work() -> None:
        headers = {"content-type": "application/json", **auth(Role.WRITER)}
        with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                http.post("/v1/events", content=body).raise_for_status()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    total, idle = cpu_times()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked = time.perf_counter() - start
    total_after, idle_after = cpu_times()
    busy = 1 - (idle_after - idle) / max(total_after - total, 1)
    while store.fold_state("bench").pending:  # the service's folders finish the backlog
        time.sleep(0.01)
    folded = time.perf_counter() - start
    count = len(bodies) * BATCH
    return count / acked, count / folded, busy


def in_process(url: str, events: list[dict[str, Any]]) -> tuple[float, float]:
    """(append events/s, fold events/s) of the store itself: no HTTP, no JSON."""
    store = open_store(url)
    typed = [
        Event(e["event_id"], e["unit"], e["metric"], e["value"], e["timestamp"]) for e in events
    ]
    start = time.perf_counter()
    for i in range(0, len(typed), BATCH):
        store.append_events("bench", "main", PLAN, typed[i : i + BATCH])
    appended = time.perf_counter() - start
    start = time.perf_counter()
    store.settle("bench", timeout=3600)
    folded = time.perf_counter() - start
    store.close()
    return len(typed) / appended, len(typed) / folded


def redis_benchmark(port: int) -> float:
    """redis-benchmark's SET rate, 16 commands per pipeline, on the same server."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan")
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n", "1000000", "-P", "16",
         "-q"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    found = re.findall(r"([\d.]+) requests per second", out)
    return float(found[-1]) if found else float("nan")


@contextmanager
def backends(workdir: Path) -> Iterator[dict[str, Callable[[str], str]]]:
    """Store URL makers (a fresh store per name) for each backend, and the single Redis's port."""
    single = start_redis(workdir / "redis")
    cluster = start_redis_cluster(workdir / "cluster")
    try:
        yield {
            "sqlite": lambda name: f"sqlite:///{workdir / name}.db",
            "redis": lambda name: f"redis://127.0.0.1:{single.port}/0?prefix={name}:",
            "redis-cluster": lambda name: f"{cluster.url}/?prefix={name}:",
            "_port": lambda name: str(single.port),
        }
    finally:
        cluster.stop()
        single.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--big", type=int, default=1_000_000, help="units of the large case")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, of {', '.join(BACKENDS)} (a shorter run while iterating)",
    )
    args = parser.parse_args()
    chosen = args.backends.split(",")
    if not set(chosen) <= set(BACKENDS):
        parser.error(f"--backends: {args.backends!r}; known: {', '.join(BACKENDS)}")
    rows: list[tuple[str, int, str, float, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp, backends(Path(tmp)) as urls:
        port = int(urls["_port"](""))
        baseline = redis_benchmark(port)
        for backend in chosen:
            for units in (1_000, args.big):
                name = f"b{units}"
                url = urls[backend](name)
                exposure_rate = prepare(url, units)
                rows.append((backend, units, "exposures, in-process", exposure_rate, exposure_rate,
                             None))  # fmt: skip
                events = make_events(args.events, units, f"p{units}")
                rows.append((backend, units, "in-process", *in_process(url, events), None))
                store = open_store(url)
                for workers, apart in ((1, False), (2, False), (1, True), (2, True)):
                    events = make_events(args.events, units, f"w{workers}{apart}")
                    bodies = [
                        json.dumps({"events": events[i : i + BATCH]}).encode()
                        for i in range(0, len(events), BATCH)
                    ]
                    mode = "off" if apart else "process"
                    service = start_service(url, Path(tmp), workers=workers, fold=mode)
                    folder = subprocess.Popen(
                        [sys.executable, "-m", "experiments.cli", "fold", "--store", url],
                        stdout=subprocess.DEVNULL,
                    ) if apart else None  # fmt: skip
                    try:
                        rate = http_rate(service.url, store, bodies, args.clients)
                    finally:
                        service.stop()
                        if folder is not None:
                            folder.terminate()
                            folder.wait(timeout=60)
                    how = " + abmesh fold" if apart else ""
                    rows.append((backend, units, f"HTTP, {workers} worker(s){how}", *rate))
                store.close()
    print(
        f"{args.events:,} events per run in batches of {BATCH}, {args.clients} client threads;"
        f" redis-benchmark SET -P 16 on the same Redis: {baseline:,.0f}/s"
    )
    # `CPU busy`: of both cores, while the events were posted (clients, workers, folders and
    # stores together): how much room a second worker has.
    print(f"{'backend':<14} {'units':>9} {'path':<37} {'ack/s':>9} {'folded/s':>9} {'vs SET':>7}"
          f" {'CPU busy':>8}")  # fmt: skip
    for backend, units, path, ack, folded, busy in rows:
        shown = "" if busy is None else f"{busy:.0%}"
        print(
            f"{backend:<14} {units:>9,} {path:<37} {ack:>9,.0f} {folded:>9,.0f}"
            f" {ack / baseline:>7.3f} {shown:>8}"
        )
    _ratios(rows)


def _ratios(rows: list[tuple[str, int, str, float, float, float | None]]) -> None:
    """2 workers against 1, and the large experiment against the small one (ack/s)."""
    rate = {(b, u, p): ack for b, u, p, ack, _, _ in rows}
    print(f"{'backend':<14} {'units':>9} {'path':<37} {'2 workers / 1':>14}")
    for b, u, p in rate:
        if p.startswith("HTTP, 1 worker(s)"):
            two = rate[b, u, p.replace("1 worker", "2 worker")]
            print(f"{b:<14} {u:>9,} {p[6:]:<37} {two / rate[b, u, p]:>14.2f}")
    units = sorted({u for _, u, _ in rate})
    print(f"{'backend':<14} {'path':<37} {f'{units[-1]:,} / {units[0]:,} units':>18}")
    for b, u, p in rate:
        if u == units[0] and (b, units[-1], p) in rate:
            print(f"{b:<14} {p:<37} {rate[b, units[-1], p] / rate[b, u, p]:>18.2f}")


if __name__ == "__main__":
    main()
