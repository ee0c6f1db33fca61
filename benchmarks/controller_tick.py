"""How long a controller tick takes with many rollouts at once, and what a second controller
does to it.

    python benchmarks/controller_tick.py [--experiments 1 10 100] [--ticks 10] [--redis URL]

Each experiment walks a canary (checks per step high enough that it stays in one step, so
every tick reads guardrails, writes its status and applies its routes) through the manifests
router (a real file per experiment) with a metrics provider that answers at once: the figures
are the control plane's own cost (store reads, leases, the status compare-and-set, rendering
and the no-op route check), not Prometheus's or the mesh's.  The SQLite store is a file in a
temp dir; Redis is the server at --redis (default 127.0.0.1:6379, a private key prefix, deleted
after).  "per experiment" divides the median tick; "× 1 exp." is the ratio to the one-experiment
median per experiment measured in the same run.  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import redis

from controlplane.controller import Controller
from controlplane.lifecycle import Action, apply_spec, change_state
from controlplane.metrics import Counts, Measurement, Phase
from controlplane.targets import Defaults, Routers
from experiments import load_spec
from experiments.localstack import model_variants
from experiments.spec_rollout import OperationalGuardrail
from experiments.store import open_store


class Instant:
    """Guardrail readings that are always in: p99 20 ms, no errors; counters that grow by
    1,000 requests a read with 1 error and 1 request over each bucket bound, on both arms (the
    default plan's sequential tests then do their full work every tick)."""

    def __init__(self) -> None:
        self.reads = 0

    def query(self, guardrail: OperationalGuardrail, variables: Mapping[str, str]) -> Measurement:
        return Measurement.of({"p99_latency_ms": 20.0, "error_ratio": 0.0}.get(guardrail.name))

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        self.reads += 1
        kinds = [f"gt_{c:g}" for c in guardrail.cuts_ms] if guardrail.query == "p99_latency_ms" \
            else ["errors"]  # fmt: skip
        return Counts(Phase.OK, 1000.0 * self.reads, {k: float(self.reads) for k in kinds})


def spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "variants": model_variants(),
        "rollout": {"phases": [{"kind": "canary", "steps": [5, 50], "checks": 1000}]},
    }  # fmt: skip


def run(url: str, experiments: int, ticks: int, controllers: int, out_dir: Path) -> list[float]:
    store = open_store(url)
    for i in range(experiments):
        apply_spec(store, load_spec(spec(f"exp-{i:04d}")))
        change_state(store, f"exp-{i:04d}", Action.START)
    routers = Routers(Defaults(router="manifests", out_dir=out_dir))
    loops = [
        Controller(open_store(url), routers, Instant(), owner=f"bench-{k}", interval=10.0)
        for k in range(controllers)
    ]
    for loop in loops:  # the first ticks start every rollout and split the leases
        loop.tick()
    for loop in loops:
        loop.tick()
    times = []
    for _ in range(ticks):
        for loop in loops:
            started = time.perf_counter()
            loop.tick()
            times.append(time.perf_counter() - started)
    held = [len(loop.held) for loop in loops]
    assert sum(held) == experiments, held  # every experiment driven, by exactly one
    for loop in loops:
        loop.release_leases()
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(f"{'store':<8}{'exp.':>6}{'ctls':>6}{'median tick ms':>16}{'p95 ms':>9}"
          f"{'per exp. ms':>13}{'× 1 exp.':>10}")  # fmt: skip
    for backend in ("sqlite", "redis"):
        base: float | None = None
        for n in args.experiments:
            for controllers in (1, 2):
                with tempfile.TemporaryDirectory() as tmp:
                    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
                    url = (
                        f"sqlite:///{tmp}/abmesh.db"
                        if backend == "sqlite"
                        else f"{args.redis}?prefix={prefix}"
                    )
                    times = run(url, n, args.ticks, controllers, Path(tmp) / "manifests")
                    if backend == "redis":
                        client = redis.Redis.from_url(args.redis)
                        # Every key of a Redis store opens with a hash tag: {prefix...}
                        keys = list(client.scan_iter(match=f"{{{prefix}*", count=1000))
                        if keys:
                            client.delete(*keys)
                        client.close()
                median = statistics.median(times) * 1000
                p95 = sorted(times)[int(0.95 * (len(times) - 1))] * 1000
                per = median * controllers / n
                base = base if base is not None else per
                print(f"{backend:<8}{n:>6}{controllers:>6}{median:>16.1f}{p95:>9.1f}"
                      f"{per:>13.2f}{per / base:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
