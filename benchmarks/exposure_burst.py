"""New units assigned in bursts through POST /v1/assign and the ext_authz check, with 10 running
experiments: is every exposure in the statistics?  On SQLite and Redis, one service worker.

    python benchmarks/exposure_burst.py [--units 1000000] [--extauthz 50000] [--overlap 0]

The 10 experiments take disjoint tenths of one layer, so each unit is exposed once (`--overlap
N`: the first N units also go through 10 experiments covering everyone, each of them exposed in
all 10).  POST /v1/assign carries 1000 units per request from 4 client threads, as fast as the
service answers; ext_authz checks come one unit per request.  Printed: units/s, exposures sent,
exposures counted in the stats once the service has flushed and folded them, and
abmesh_exposures_dropped_total.  Nothing is asserted here; tests/test_exposure_burst.py is the
small twin that asserts.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assignment.auth import Role
from tests.servers import auth, start_redis, start_service

EXPERIMENTS = 10
PER_REQUEST = 1000
ADMIN, READER = auth(Role.ADMIN), auth(Role.READER)


def spec(name: str, layer: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "variants": [
            {"key": k, "header_value": f"{name}-{k}", "weight": 50, "destination": {"host": "m"}}
            for k in ("control", "treatment")
        ],
        "metrics": {"primary": {"name": "click", "kind": "conversion"}},
    }
    if layer is not None:
        body["layer"] = layer
    return body


def create(url: str, layered: bool) -> list[str]:
    """10 running experiments: in disjoint tenths of one layer, or each covering everyone."""
    names = []
    with httpx.Client(base_url=url, headers=ADMIN, timeout=60) as http:
        for i in range(EXPERIMENTS):
            if layered:
                body = spec(f"slice-{i}", {"name": "burst", "start": i * 10, "end": i * 10 + 10})
            else:
                body = spec(f"all-{i}", None)
            http.post("/v1/experiments", json=body).raise_for_status()
            http.post(f"/v1/experiments/{body['name']}/start").raise_for_status()
            names.append(body["name"])
    return names


def drain(
    url: str, items: list[Any], clients: int, send: Callable[[httpx.Client, Any], int]
) -> int:
    """`send` every item from `clients` threads, each with its own connection; returns the sum
    of what `send` returned."""
    lock, total = threading.Lock(), [0]

    def work() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    if not items:
                        return
                    item = items.pop()
                count = send(http, item)
                with lock:
                    total[0] += count

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total[0]


def assign_burst(url: str, units: Sequence[str], experiments: Sequence[str], clients: int) -> int:
    """POST /v1/assign of `units` into `experiments`; returns the exposures answered."""
    per = max(PER_REQUEST // len(experiments), 1)

    def send(http: httpx.Client, batch: list[str]) -> int:
        r = http.post("/v1/assign", json={"units": batch, "experiments": list(experiments)})
        r.raise_for_status()
        return sum(a["in_experiment"] for a in r.json()["assignments"])

    batches = [list(units[i : i + per]) for i in range(0, len(units), per)]
    return drain(url, batches, clients, send)


def extauthz_burst(url: str, units: Sequence[str], clients: int) -> None:
    def send(http: httpx.Client, unit: str) -> int:
        http.get("/v1/extauthz/predict", headers={"x-user-id": unit}).raise_for_status()
        return 1

    drain(url, list(units), clients, send)


def counted(url: str, names: Sequence[str]) -> int:
    total = 0
    with httpx.Client(base_url=url, headers=READER, timeout=600) as http:
        for name in names:
            r = http.get(f"/v1/experiments/{name}/stats")
            r.raise_for_status()
            total += sum(arm["exposures"] for arm in r.json()["arms"].values())
    return total


def dropped(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(r"^abmesh_exposures_dropped_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_counted(url: str, names: Sequence[str], expected: int, timeout: float) -> int:
    until = time.monotonic() + timeout
    while True:
        got = counted(url, names)
        if got >= expected or time.monotonic() > until:
            return got
        time.sleep(1.0)


def run(store_url: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    service = start_service(store_url, workdir, insecure=True, tokens=False)
    try:
        layered = names = create(service.url, layered=True)
        units = [f"unit-{i}" for i in range(args.units)]
        start = time.perf_counter()
        sent = assign_burst(service.url, units[args.extauthz :], layered, args.clients)
        assign_s = time.perf_counter() - start
        start = time.perf_counter()
        extauthz_burst(service.url, units[: args.extauthz], args.clients)
        extauthz_s = time.perf_counter() - start
        sent += args.extauthz  # each unit is in one slice; ext_authz assigns every running one
        if args.overlap:  # started now: the ext_authz units above met only the slices
            everyone = create(service.url, layered=False)
            names = layered + everyone
            sent += assign_burst(service.url, units[: args.overlap], everyone, args.clients)
        start = time.perf_counter()
        got = wait_counted(service.url, names, sent, timeout=1800)
        return {
            "assign units/s": (args.units - args.extauthz) / assign_s,
            "ext_authz units/s": args.extauthz / extauthz_s if args.extauthz else float("nan"),
            "sent": sent,
            "counted": got,
            "dropped": dropped(service.url),
            "settled in s": time.perf_counter() - start,
        }
    finally:
        service.stop()


def stores(workdir: Path) -> Iterator[tuple[str, str]]:
    yield "sqlite", f"sqlite:///{workdir / 'burst.db'}"
    redis_server = start_redis(workdir / "redis")
    try:
        yield "redis", f"redis://127.0.0.1:{redis_server.port}/0"
    finally:
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--extauthz", type=int, default=50_000, help="of the units, via ext_authz")
    parser.add_argument("--overlap", type=int, default=0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in stores(Path(tmp)):
            rows.append((name, run(url, Path(tmp), args)))
    print(
        f"{args.units:,} new units ({args.extauthz:,} via ext_authz), {EXPERIMENTS} running"
        f" experiments in one layer; overlap {args.overlap:,}"
    )
    keys = list(rows[0][1])
    print(f"{'store':<8} " + " ".join(f"{k:>18}" for k in keys))
    for name, row in rows:
        print(f"{name:<8} " + " ".join(f"{row[k]:>18,.0f}" for k in keys))


if __name__ == "__main__":
    main()
