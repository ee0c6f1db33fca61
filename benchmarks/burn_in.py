"""What the burn-in buys: A/A type-I error of the plug-in normal mixture looked at every 2 units
per arm, from the second unit or only from the burn-in on (docs/statistics.md §6).

    python benchmarks/burn_in.py [--runs 4000] [--seed 20261128]

Each run draws both arms from the same distribution, up to 1,000 units per arm, and looks every
2 units per arm (500 looks), α = 0.05.  The variance is the plug-in Welch one, as in decide.
Two tunings of the mixture (analysis.mixture, the kernel decide uses):
- n*: abmesh's, τ² = ρ² N v with n* = 2,000 (both arms at the last look);
- fixed τ²: τ² = 0.1 × the known per-unit variance (Johari et al.'s absolute parameterisation).
A run is a false rejection if p ≤ α at any look from `start` units per arm on.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from analysis.mixture import mixture, pvalue_of, rho2_for

ALPHA, PER_ARM, STEP, CHUNK = 0.05, 1000, 2, 500
STARTS = (2, 100)
Draw = Callable[[np.random.Generator, tuple[int, int]], NDArray[np.float64]]
DATA: dict[str, tuple[Draw, float]] = {  # the draw, and its per-unit variance
    "normal(0, 1)": (lambda rng, shape: rng.normal(0.0, 1.0, shape), 1.0),
    "lognormal(0, 1)": (lambda rng, shape: rng.lognormal(0.0, 1.0, shape), (math.e - 1) * math.e),
}


def rejections(
    rng: np.random.Generator, draw: Draw, variance: float, runs: int
) -> dict[tuple[str, int], int]:
    """Runs rejected, per (tuning, first look counted)."""
    n = np.arange(STEP, PER_ARM + 1, STEP, dtype=float)
    at = (n - 1).astype(int)
    out = {(tuning, start): 0 for tuning in ("n*", "fixed τ²") for start in STARTS}
    for size in [CHUNK] * (runs // CHUNK) + ([runs % CHUNK] if runs % CHUNK else []):
        moments = []
        for _ in range(2):
            x = draw(rng, (size, PER_ARM))
            s, q = np.cumsum(x, axis=1)[:, at], np.cumsum(x * x, axis=1)[:, at]
            moments.append((s / n, (q - s * s / n) / (n - 1)))
        (mean_a, var_a), (mean_b, var_b) = moments
        v = var_a / n + var_b / n
        for tuning, tau2 in (
            ("n*", rho2_for(2 * PER_ARM, ALPHA) * 2 * n * v),
            ("fixed τ²", np.full_like(v, 0.1 * variance)),
        ):
            log_lambda, _ = mixture(mean_b - mean_a, v, tau2, 0.0, ALPHA)
            rejected = pvalue_of(log_lambda) <= ALPHA
            for start in STARTS:
                out[tuning, start] += int((rejected & (n >= start)).any(axis=1).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    begin = time.perf_counter()
    print(f"{args.runs} A/A runs, looks every {STEP} units per arm up to {PER_ARM}, α {ALPHA}")
    print(f"{'data':18} {'tuning':10} {'from unit 2':>18} {'from unit 100':>18}")
    for name, (draw, variance) in DATA.items():
        counts = rejections(rng, draw, variance, args.runs)
        for tuning in ("n*", "fixed τ²"):
            cells = []
            for start in STARTS:
                rate = counts[tuning, start] / args.runs
                se = math.sqrt(max(rate * (1 - rate), 1e-12) / args.runs)
                cells.append(f"{rate:.4f} ± {se:.4f}")
            print(f"{name:18} {tuning:10} {cells[0]:>18} {cells[1]:>18}")
    print(f"({time.perf_counter() - begin:.1f} s)")


if __name__ == "__main__":
    main()
