"""Statistical quality of the abmesh-v1 bucketing over many units.

    python benchmarks/assign_distribution.py [--units 1000000] [--experiments 100]

Prints chi-square p-values: the 50/50 and 95/5 splits against their weights, the 2x2 table
of two experiments with different salts (independence), and the worst neighbouring pair of
--experiments experiments with near-identical names (exp-0, exp-1, ...), the case that made
GrowthBook add hash version 2; the same for GrowthBook's hash v1 and v2 for comparison.  A
p-value far below 0.001 flags a biased or correlated hash.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import numpy as np
from scipy import stats

from assignment import assign_many, hashing
from experiments import ExperimentSpec, load_spec


def spec(name: str, treatment: float, salt: str | None = None) -> ExperimentSpec:
    return load_spec(
        {
            "name": name,
            "salt": salt,
            "variants": [
                {
                    "key": "control",
                    "header_value": "a",
                    "weight": 100 - treatment,
                    "destination": {"host": "m"},
                },
                {
                    "key": "treatment",
                    "header_value": "b",
                    "weight": treatment,
                    "destination": {"host": "m"},
                },
            ],
        }
    )


def treated(s: ExperimentSpec, units: list[str]) -> np.ndarray:
    return np.fromiter((a.variant == "treatment" for a in assign_many(s, units)), bool, len(units))


def independence_p(a: np.ndarray, b: np.ndarray) -> float:
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def worst_pair(arms: list[np.ndarray]) -> float:
    return min(independence_p(a, b) for a, b in itertools.pairwise(arms))


def growthbook_arms(version: int, count: int, units: list[str]) -> list[np.ndarray]:
    def half(name: str) -> Callable[[str], bool]:
        return lambda u: (hashing.growthbook_hash(name, u, version) or 0.0) >= 0.5

    return [np.fromiter(map(half(f"exp-{i}"), units), bool, len(units)) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--experiments", type=int, default=100)
    args = parser.parse_args()
    units = [f"user-{i}" for i in range(args.units)]
    small = units[:100_000]
    rows: list[tuple[str, int, float]] = []
    for treatment in (50, 5):
        hits = int(treated(spec("ranker-v2", treatment), units).sum())
        expected = [len(units) * (100 - treatment) / 100, len(units) * treatment / 100]
        p = stats.chisquare([len(units) - hits, hits], expected).pvalue
        rows.append((f"split {100 - treatment}/{treatment} vs weights", len(units), p))
    rows.append(
        (
            "two salts, 2x2 independence",
            len(units),
            independence_p(
                treated(spec("ranker-v2", 50), units),
                treated(spec("ranker-v2", 50, "phase-2"), units),
            ),
        )
    )
    n = args.experiments
    arms = [treated(spec(f"exp-{i}", 50), small) for i in range(n)]
    rows.append((f"{n} near-identical names, worst pair", len(small), worst_pair(arms)))
    few = small[:20_000]
    for version in (1, 2):
        rows.append(
            (
                f"  growthbook hash v{version}, same names, worst pair",
                len(few),
                worst_pair(growthbook_arms(version, n, few)),
            )
        )
    print(f"{'check (abmesh-v1 unless named)':<46} {'units':>9} {'chi-square p':>13}")
    for name, count, p in rows:
        print(f"{name:<46} {count:>9,} {p:>13.3g}")
    print(f"(worst pair of {n - 1}: Bonferroni level 0.001/{n - 1} = {0.001 / (n - 1):.2g})")


if __name__ == "__main__":
    main()
