"""How fast `decide` turns statistics into decisions, and how fast boundaries are computed.

    python benchmarks/decide_speed.py [--repeat 5]

Each experiment has two arms of ~5,000 units, its SRM checks (χ² and sequential) and two
operational guardrails; the pairs are experiment × metric.  Shapes: 1,000 experiments × 1
metric, 250 × 4, 100 × 10, by `decide` one at a time and by `decide_many` (one vectorised pass).
Beside it, GrowthBook's engine (gbstats, `SequentialTwoSidedTTest(...).compute_result()`, no
SRM or guardrails) on the same number of comparisons, when it is importable: it declares
numpy<2, so install it apart, e.g.
`python -m venv --system-site-packages /tmp/gb && /tmp/gb/bin/pip install --no-deps gbstats==0.8.0`
and run this script with /tmp/gb/bin/python.  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator

import numpy as np
from specs import two_arms

from analysis import ArmStats, ExperimentStats, Threshold, decide, decide_many, gst_boundaries
from analysis.decide import Request


def requests(experiments: int, metrics: int, seed: int = 1) -> list[Request]:
    rng = np.random.default_rng(seed)
    names = [f"m{i}" for i in range(metrics)]
    spec = two_arms(
        "bench",
        {
            "primary": {"name": names[0], "kind": "conversion"},
            "guardrails": [{"name": n, "kind": "sum", "margin": 0.02} for n in names[1:]],
        },
    )
    out: list[Request] = []
    for _ in range(experiments):
        n_a, n_b = (int(x) for x in rng.integers(4900, 5100, 2))
        arms: dict[str, dict[str, ArmStats]] = {}
        for i, name in enumerate(names):
            if i == 0:
                hits = rng.binomial([n_a, n_b], [0.10, 0.105])
                a, b = ArmStats(n_a, hits[0], hits[0]), ArmStats(n_b, hits[1], hits[1])
            else:
                mean = rng.normal(10, 0.1, 2)
                a = ArmStats(n_a, mean[0] * n_a, (mean[0] ** 2 + 4) * n_a)
                b = ArmStats(n_b, mean[1] * n_b, (mean[1] ** 2 + 4) * n_b)
            arms[name] = {"control": a, "treatment": b}
        guards = [Threshold("p99_latency_ms", 120.0, 150.0), Threshold("error_ratio", 2e-4, 1e-3)]
        out.append((spec, ExperimentStats({"control": n_a, "treatment": n_b}, arms), guards, None))
    return out


FRESH = itertools.count(1)


def best_ms(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def gbstats_ms(pairs: int, repeat: int) -> float | None:
    try:
        from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
        from gbstats.models.statistics import ProportionStatistic
    except ImportError:
        return None
    a, b = ProportionStatistic(n=5000, sum=500), ProportionStatistic(n=5000, sum=525)
    config = SequentialConfig(difference_type="absolute", sequential_tuning_parameter=10_000)

    def run() -> None:
        for _ in range(pairs):
            SequentialTwoSidedTTest(a, b, config).compute_result()

    return best_ms(run, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'experiments × metrics':>22} {'how':>12} {'ms':>8} {'µs/pair':>8}")
    for experiments, metrics in ((1000, 1), (250, 4), (100, 10)):
        batch = requests(experiments, metrics)
        for how, run in (
            ("decide", lambda b=batch: [decide(*r) for r in b]),
            ("decide_many", lambda b=batch: decide_many(b)),
        ):
            ms = best_ms(run, args.repeat)
            label = f"{experiments} × {metrics}"
            print(f"{label:>22} {how:>12} {ms:8.1f} {ms * 1e3 / 1000:8.1f}")
    gb = gbstats_ms(1000, args.repeat)
    if gb is None:
        print(f"{'1000 comparisons':>22} {'gbstats':>12} {'(gbstats not importable)':>17}")
    else:
        print(f"{'1000 comparisons':>22} {'gbstats':>12} {gb:8.1f} {gb:8.1f}")
    print()
    print(f"{'boundaries':>22} {'ms':>8}")
    for looks in (5, 20, 50):
        fractions = tuple(k / looks for k in range(1, looks + 1))

        def uncached(f: tuple[float, ...] = fractions, fresh: Iterator[int] = FRESH) -> None:
            # A schedule never seen before (the first look a hair earlier), so nothing is cached.
            gst_boundaries((f[0] * (1 - 1e-9 * next(fresh)), *f[1:]))

        print(f"{f'K = {looks}, computed':>22} {best_ms(uncached, args.repeat):8.2f}")
        gst_boundaries(fractions)
        cached = best_ms(lambda f=fractions: gst_boundaries(f), args.repeat)
        print(f"{f'K = {looks}, cached':>22} {cached:8.4f}")


if __name__ == "__main__":
    main()
