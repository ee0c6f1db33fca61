"""What segments and the per-unit value bins cost the fold, in-process (no store: the folding
arithmetic alone, `foldbatch.fold_batch`, which the folders run for every batch of the log).

    PYTHONPATH=. python3 benchmarks/fold_cost.py [--batches 20] [--repeats 5]

Each run folds `batches` batches of 1,000 new units (exposures) and 3,000 events over three
metrics, drawn with a fixed seed; the best of `repeats` runs is shown, with the ratio to the
baseline measured in the same run:
- baseline: a conversion, a sum and a mean metric, without the bins (as a plan stored before
  them folds);
- bins: the same metrics with the sum and the mean binned;
- bins + 3 segments: the same, every exposure carrying three segment values (4, 3 and 10
  values), so each unit counts in its arm and three cells.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace
from typing import Any

from experiments import load_spec
from experiments.foldbatch import Exposure, UnitState, fold_batch
from experiments.folding import Event, FoldPlan

VARIANTS = [{"key": k, "weight": 50, "header_value": f"g-{k}", "destination": {"host": k}}
            for k in ("a", "b")]  # fmt: skip
SEGMENTS = {"country": ("US", "DE", "BR", "JP"), "platform": ("ios", "android", "web"),
            "bucket": tuple(str(i) for i in range(10))}  # fmt: skip


def plan_of(kinds: tuple[str, str, str], segments: bool) -> FoldPlan:
    metrics = [{"name": f"m{i}", "kind": kind} for i, kind in enumerate(kinds)]
    spec = load_spec({"name": "fold", "variants": VARIANTS,
                      "metrics": {"primary": metrics[0], "secondary": metrics[1:]},
                      "segments": list(SEGMENTS) if segments else []})  # fmt: skip
    return FoldPlan.from_spec(spec)


def run(plan: FoldPlan, segments: bool, batches: int, seed: int) -> float:
    rng = random.Random(seed)
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    work: list[tuple[dict[str, UnitState], list[Exposure], list[Event]]] = []
    for b in range(batches):
        units = [f"u{b}-{i}" for i in range(1000)]
        pairs: Any = ()
        xs = []
        for u in units:
            if segments:
                pairs = tuple(sorted((k, rng.choice(v)) for k, v in SEGMENTS.items()))
            xs.append(Exposure(u, rng.choice("ab"), 0.0, 1, pairs))
        es = [Event(f"e{b}-{i}", rng.choice(units), f"m{rng.randrange(3)}",
                    round(rng.lognormvariate(2, 1), 2), 1.0) for i in range(3000)]  # fmt: skip
        work.append(({u: UnitState() for u in units}, xs, es))
    started = time.perf_counter()
    for states, xs, es in work:
        fold_batch(plan, states, xs, es, stats, shifts)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("baseline: no bins", replace(plan_of(("conversion", "sum", "mean"), False),
                                      histograms=()), False),
        ("bins: conversion, sum, mean", plan_of(("conversion", "sum", "mean"), False), False),
        ("bins + 3 segments", plan_of(("conversion", "sum", "mean"), True), True),
    ]
    entries = args.batches * 4000
    print(f"{'case':32} {'best s':>8} {'entries/s':>11} {'× baseline':>11}")
    base = None
    for name, plan, segmented in cases:
        best = min(run(plan, segmented, args.batches, seed) for seed in range(args.repeats))
        base = base or best
        print(f"{name:32} {best:8.3f} {entries / best:11,.0f} {best / base:11.2f}")


if __name__ == "__main__":
    main()
