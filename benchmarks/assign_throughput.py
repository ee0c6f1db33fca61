"""In-process assignment throughput, against the `growthbook` package measured in the same run.

    python benchmarks/assign_throughput.py [--units 1000000] [--repeat 3]

Prints a table: assignments per second (best of --repeat runs, one core: a plain Python loop)
and the ratio to GrowthBook's own `GrowthBook.run` on an equivalent 50/50 experiment.  Times
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import yaml
from growthbook import Experiment, GrowthBook

from assignment import assign, assign_many
from experiments import EXAMPLES_DIR, ExperimentSpec, load_spec


def spec(**extra: Any) -> ExperimentSpec:
    """The shipped example (50/50, a forcing header and an allowlist), changed by `extra`."""
    example = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
    return load_spec({**example, **extra})


def best_rate(run: Callable[[], object], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def scalar(s: ExperimentSpec, units: list[str]) -> Callable[[], object]:
    def run() -> None:
        for u in units:
            assign(s, u)

    return run


def growthbook_run(units: list[str]) -> Callable[[], object]:
    experiment = Experiment(key="ranker-v2", variations=[0, 1], weights=[0.5, 0.5], hashVersion=2)
    gb = GrowthBook(attributes={})

    def run() -> None:
        for u in units:
            gb.set_attributes({"id": u})
            gb.run(experiment)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    units = [f"user-{i}" for i in range(args.units)]
    gb_units = units[: max(args.units // 20, 1000)]  # GrowthBook is slower: fewer units suffice

    base, layered = spec(), spec(coverage=0.8, layer={"name": "ranking", "start": 0, "end": 50})
    gb_mode = spec(hash="growthbook-v2")
    rows: list[tuple[str, int, float]] = [
        (
            "growthbook GrowthBook.run (hash v2)",
            len(gb_units),
            best_rate(growthbook_run(gb_units), len(gb_units), args.repeat),
        ),
        (
            "abmesh assign (abmesh-v1, 50/50)",
            len(units),
            best_rate(scalar(base, units), len(units), args.repeat),
        ),
        (
            "abmesh assign (layer + coverage: 3 hashes)",
            len(units),
            best_rate(scalar(layered, units), len(units), args.repeat),
        ),
        (
            "abmesh assign (hash: growthbook-v2)",
            len(gb_units),
            best_rate(scalar(gb_mode, gb_units), len(gb_units), args.repeat),
        ),
        (
            "abmesh assign_many (abmesh-v1, 50/50)",
            len(units),
            best_rate(lambda: assign_many(base, units), len(units), args.repeat),
        ),
        (
            "abmesh assign_many (layer + coverage)",
            len(units),
            best_rate(lambda: assign_many(layered, units), len(units), args.repeat),
        ),
    ]
    baseline = rows[0][2]
    print(f"{'path':<44} {'units':>9} {'assign/s':>12} {'x growthbook':>13}")
    for name, count, rate in rows:
        print(f"{name:<44} {count:>9,} {rate:>12,.0f} {rate / baseline:>12.1f}x")


if __name__ == "__main__":
    main()
