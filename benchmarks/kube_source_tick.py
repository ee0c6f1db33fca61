"""What `--source kubernetes` adds to a controller tick: the same rollouts driven from the
store (baseline) and from Experiment objects, in the same run.

    python benchmarks/kube_source_tick.py [--experiments 1 10 100] [--ticks 10]

The objects live in the loopback API-server stub (tests/kube_stub.py: real HTTP, the real
`kubernetes` client), so the figures are abmesh's own cost per tick: listing nothing new from
the watch cache, mirroring every object into the store (an identical spec is a no-op),
comparing and publishing each status, and Kubernetes Leases (one GET per held experiment per
tick, a PUT to renew) instead of the store's.  A real API server adds its network round trips
to the Lease and status requests.  The store is SQLite in a temp dir; the guardrails answer at
once (benchmarks/controller_tick.py's `Instant`).  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from kubernetes import client as k8s

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.controller_tick import Instant, spec
from controlplane.controller import Controller
from controlplane.kube.crd import GROUP, PLURAL, VERSION
from controlplane.kube.objects import experiment_object
from controlplane.kube.source import KubeSource
from controlplane.lifecycle import Action, apply_spec, change_state
from controlplane.targets import Defaults, Routers
from experiments import load_spec
from experiments.store import open_store
from tests.kube_stub import KubeStub

NS = "models"


def ticks(loop: Controller, count: int) -> list[float]:
    for _ in range(2):  # the first ticks start every rollout and take the leases
        loop.tick()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        loop.tick()
        times.append(time.perf_counter() - started)
    return times


def from_store(n: int, count: int, tmp: Path) -> list[float]:
    store = open_store(f"sqlite:///{tmp}/store.db")
    for i in range(n):
        apply_spec(store, load_spec(spec(f"exp-{i:04d}")))
        change_state(store, f"exp-{i:04d}", Action.START)
    routers = Routers(Defaults(router="manifests", out_dir=tmp / "store-routes"))
    loop = Controller(store, routers, Instant(), owner="bench", interval=10.0)
    times = ticks(loop, count)
    assert len(loop.held) == n
    loop.release_leases()
    return times


def from_objects(n: int, count: int, tmp: Path) -> tuple[list[float], int]:
    stub = KubeStub()
    api_client = k8s.ApiClient(k8s.Configuration(host=stub.url))
    api = k8s.CustomObjectsApi(api_client)
    for i in range(n):
        body = experiment_object(load_spec(spec(f"exp-{i:04d}")), NS)
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    store = open_store(f"sqlite:///{tmp}/kube.db")
    source = KubeSource(api_client, store, NS, "abmesh")
    stop = threading.Event()
    source.start(stop)
    source.watch.synced.wait(30)
    routers = Routers(Defaults(router="manifests", out_dir=tmp / "kube-routes"))
    loop = Controller(store, routers, Instant(), owner="bench", interval=10.0)
    source.attach(loop)
    requests = len(stub.requests)
    times = ticks(loop, count)
    per_tick = (len(stub.requests) - requests) // (count + 2)
    assert len(loop.held) == n
    deadline = time.monotonic() + 30  # the watch brings the published statuses back
    while not all(o.get("status", {}).get("state") == "running"
                  for o in source.watch.objects().values()):  # fmt: skip
        states = [o.get("status", {}).get("state") for o in source.watch.objects().values()]
        assert time.monotonic() < deadline, f"statuses not published: {states}"
        time.sleep(0.05)
    loop.release_leases()
    stop.set()
    source.stop()
    stub.stop()
    return times, per_tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--ticks", type=int, default=10)
    args = parser.parse_args()
    print(f"{'source':<12}{'exp.':>6}{'median tick ms':>16}{'p95 ms':>9}{'per exp. ms':>13}"
          f"{'× store':>9}{'API req./tick':>15}")  # fmt: skip
    for n in args.experiments:
        with tempfile.TemporaryDirectory() as tmp:
            base = from_store(n, args.ticks, Path(tmp))
            kube, requests = from_objects(n, args.ticks, Path(tmp))
        base_median = statistics.median(base) * 1000
        for name, times, extra in (("store", base, "-"), ("kubernetes", kube, str(requests))):
            median = statistics.median(times) * 1000
            p95 = sorted(times)[int(0.95 * (len(times) - 1))] * 1000
            print(f"{name:<12}{n:>6}{median:>16.1f}{p95:>9.1f}{median / n:>13.2f}"
                  f"{median / base_median:>9.2f}{extra:>15}")  # fmt: skip


if __name__ == "__main__":
    main()
