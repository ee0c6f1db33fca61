"""False `invalid` under continuous monitoring, and the power against a small SRM bug, of the
SRM gates `decide` could use.

    python benchmarks/srm_looks.py [--runs 2000] [--looks 500] [--seed 20261128]

Two arms weighted 50/50, looked at `looks` times, equally spaced, up to 100,000 units in
total; the horizon (max_units_per_arm) is 50,000, reached at the last look.  srm_alpha 0.001.
A/A: the assignment is fair.  Bug: each unit lands in control with probability 0.505.
Gates, each acting on the first look below srm_alpha:
- χ² every look: Pearson's test at every look (the old gate: a peeking procedure);
- sequential: the Dirichlet-multinomial test's running p (k = 100, analysis.srm);
- decide: sequential at every look, plus χ² at the one look where the units reach the
  horizon's planned total, 100,000 (analysis.looks, _judge_srm): false alarms ≤ 2 × srm_alpha
  by the union bound, and every alarm of a single χ² at 100,000 is one of its alarms;
- χ² once: Pearson's test at 100,000 units only (the power reference).
Rates come with their Monte-Carlo standard error.  The counts go through analysis.srm_arrays,
the kernel decide uses; tests/test_analysis_srm_looks.py checks decide against this rule.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from numpy.typing import NDArray

from analysis.srm import srm_arrays

ALPHA, TOTAL, HORIZON = 0.001, 100_000, 50_000


def gates(
    rng: np.random.Generator, share: float, runs: int, looks: int
) -> dict[str, NDArray[np.bool_]]:
    """Per run, whether each gate raised an alarm by the last look."""
    step = TOTAL // looks
    control = np.cumsum(rng.binomial(step, share, (runs, looks)), axis=1).astype(float)
    n = step * np.arange(1, looks + 1, dtype=float)
    counts = np.stack([control.ravel(), (n - control).ravel()], axis=1)
    _, p, log_bf = srm_arrays(counts, np.full_like(counts, 0.5))
    p, log_bf = p.reshape(runs, looks), log_bf.reshape(runs, looks)
    seq = log_bf.max(axis=1) > -math.log(ALPHA)  # running p = min over looks of 1/BF
    # decide's horizon look: the first with 2 × HORIZON units (the planned total), the last
    first = int(np.argmax(n >= 2 * HORIZON))
    horizon_p = p[:, first]
    return {
        "χ² every look": (p < ALPHA).any(axis=1),
        "sequential": seq,
        "decide (seq + χ² at horizon)": seq | (horizon_p < ALPHA),
        "χ² once at 100k": p[:, -1] < ALPHA,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--looks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    aa = gates(rng, 0.5, args.runs, args.looks)
    bug = gates(rng, 0.505, args.runs, args.looks)
    print(f"{args.runs} runs × {args.looks} looks up to {TOTAL} units, srm_alpha {ALPHA}")
    print(f"{'gate':32} {'A/A false invalid':>22} {'50.5/49.5 caught':>22}")
    for name in aa:
        cells = []
        for rate in (aa[name].mean(), bug[name].mean()):
            se = math.sqrt(max(rate * (1 - rate), 1e-12) / args.runs)
            cells.append(f"{rate:.4f} ± {se:.4f}")
        print(f"{name:32} {cells[0]:>22} {cells[1]:>22}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
