"""Event ingest throughput: POST /v1/events (batches of 500) into SQLite and Redis, the same
batches folded in-process by the store, and the raw Redis operations of a batch done directly
with redis-py pipelines (the ceiling), all in one run.

    python benchmarks/events_ingest.py [--events 100000] [--clients 2]

One uvicorn worker; the load comes from --clients threads posting pre-encoded batches over
loopback on the same 2 cores.  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from experiments import load_spec
from experiments.folding import Event, FoldPlan
from experiments.store import open_store
from tests.servers import auth, start_redis, start_service

BATCH = 500
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


def make_events(count: int, units: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [
        {
            "event_id": f"e{i}",
            "experiment": "bench",
            "unit": f"u{rng.randrange(units)}",
            "metric": rng.choice(("click", "revenue")),
            "value": round(rng.uniform(1, 100), 2),
            "timestamp": 1_790_000_000 + i,
        }
        for i in range(count)
    ]


def prepare(url: str, units: int) -> None:
    store = open_store(url)
    spec = load_spec(SPEC)
    store.put_experiment(spec)
    change_state(store, "bench", Action.START)
    plan = FoldPlan.from_spec(spec)
    exposures = {f"u{i}": ("control" if i % 2 else "treatment", 1.0) for i in range(units)}
    store.record_exposures("bench", "main", plan, exposures)
    store.close()


def http_rate(url: str, bodies: list[bytes], clients: int) -> float:
    queue = list(enumerate(bodies))
    lock = threading.Lock()

    def work() -> None:
        headers = {"content-type": "application/json", **auth(Role.WRITER)}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop()
                r = http.post("/v1/events", content=body)
                r.raise_for_status()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(bodies) * BATCH / (time.perf_counter() - start)


def direct_rate(url: str, events: list[dict[str, Any]]) -> float:
    """The store's own ingest_events, in-process: folding without HTTP and JSON."""
    store = open_store(url)
    plan = FoldPlan.from_spec(load_spec(SPEC))
    typed = [
        Event(f"d-{e['event_id']}", e["unit"], e["metric"], e["value"], e["timestamp"])
        for e in events
    ]
    start = time.perf_counter()
    for i in range(0, len(typed), BATCH):
        store.ingest_events("bench", "main", plan, typed[i : i + BATCH])
    store.close()
    return len(typed) / (time.perf_counter() - start)


def raw_redis_rate(port: int, events: list[dict[str, Any]]) -> float:
    """The reads and writes of one batch, as redis-py pipelines, with no folding: the ceiling."""
    client = redis.Redis(port=port, decode_responses=True)
    p = "raw:"
    series = ("click", "click~pre", "revenue", "revenue~pre")
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        batch = events[i : i + BATCH]
        ids = [f"r-{e['event_id']}" for e in batch]
        units = list(dict.fromkeys(e["unit"] for e in batch))
        read = client.pipeline(transaction=False)
        read.zmscore(f"{p}ids", ids)
        read.hmget(f"{p}totals", [f"{u}\x1f{s}" for u in units for s in series])
        read.hmget(f"{p}exposed", units)
        read.hgetall(f"{p}stats")
        read.execute()
        write = client.pipeline(transaction=True)
        write.zadd(f"{p}ids", dict.fromkeys(ids, 1.0))
        write.hset(
            f"{p}totals", mapping={f"{e['unit']}\x1f{e['metric']}": e["value"] for e in batch}
        )
        write.hset(f"{p}stats", mapping={f"control|S|{s}": 1.0 for s in series})
        write.hset(
            f"{p}raw",
            mapping={
                i: json.dumps([e["unit"], e["metric"], e["value"]])
                for i, e in zip(ids, batch, strict=True)
            },
        )
        write.execute()
    rate = len(events) / (time.perf_counter() - start)
    client.delete(*(f"{p}{k}" for k in ("ids", "totals", "exposed", "stats", "raw")))
    client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    events = make_events(args.events, args.units)
    bodies = [
        json.dumps({"events": events[i : i + BATCH]}).encode() for i in range(0, len(events), BATCH)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis_server = start_redis(workdir / "redis")
        try:
            for name, url in (
                ("sqlite", f"sqlite:///{workdir / 'bench.db'}"),
                ("redis", f"redis://127.0.0.1:{redis_server.port}/0"),
            ):
                prepare(url, args.units)
                service = start_service(url, workdir)
                try:
                    rows.append(
                        (f"POST /v1/events -> {name}", http_rate(service.url, bodies, args.clients))
                    )
                finally:
                    service.stop()
                rows.append((f"store.ingest_events in-process ({name})", direct_rate(url, events)))
            rows.append(
                ("raw redis-py pipelines (ceiling)", raw_redis_rate(redis_server.port, events))
            )
        finally:
            redis_server.stop()
    print(
        f"{args.events:,} events in batches of {BATCH}, {args.units:,} units, one uvicorn "
        f"worker, {args.clients} client threads"
    )
    print(f"{'path':<44} {'events/s':>10}")
    for name, rate in rows:
        print(f"{name:<44} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
