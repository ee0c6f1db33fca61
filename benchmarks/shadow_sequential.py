"""False stops and detection samples of the shadow phase's verdict, by seeded simulation.

    PYTHONPATH=. python3 benchmarks/shadow_sequential.py [--runs 1000] [--seed 16]

Each run feeds pairs to the phase's sums and is judged after every 100 pairs up to 20,000
(200 looks), stopping at its first pass or fail, with the default Shadow settings: α = 0.05
split over three gated tolerances (disagreement 0.01, score shift 0.02, CDF distance 0.1),
min_pairs 100.  The judging is analysis.shadow's, applied with its own kernels
(analysis.shadow_cs) to a thousand runs at once; the first runs are re-judged through
`judge_shadow` itself to show the two agree.

Scores: stable s ~ N(0.5, 0.25) clipped to [0, 1]; labels are s > 0.5.  Scenarios:
- identical: the candidate answers exactly as the stable model;
- equivalent: c = s + N(0, 0.05) clipped (same mean and nearly the same distribution, every
  pair different), labels copied with 0.5 % flipped at random;
- at tolerance: 1 % of labels flip (the disagreement tolerance exactly; truth within);
- 3 % flips: three times the disagreement tolerance;
- shift 0.1 sd: c = s + 0.025 + N(0, 0.05), clipped, a tenth of the stable sd (0.25) and
  above the 0.02 score-shift tolerance (the clip makes the true mean shift a little smaller:
  it is printed, from 10⁶ pairs).
"fail" is a false stop where the truth is within every tolerance.  Beside each detection
sample: the sample a one-sided fixed-horizon z-test at level α/3 needs for the same power
(50 % for the median, 90 % for the 90th percentile), from the normal approximation
n = ((z_{1−α/3} σ₀ + z_power σ₁)/(θ₁ − θ₀))², σ the per-pair sd under the tolerance (θ₀)
and under the truth (θ₁).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from analysis.shadow import judge_shadow
from analysis.shadow_cs import cdf_gaps, disagreement_log_mixture, dkw_radius, shift_log_mixtures
from experiments.shadow_sums import BINS, ShadowSums
from experiments.spec_rollout import Shadow

PHASE, STEP, HORIZON, CHECKED = Shadow(), 100, 20_000, 3
Draw = Callable[[np.random.Generator, int], tuple[NDArray[np.float64], ...]]


def scenario(shift: float, noise: float, flips: float) -> Draw:
    """Pairs (stable, candidate scores, label flipped?) for `n` pairs per run."""

    def draw(rng: np.random.Generator, n: int) -> tuple[NDArray[np.float64], ...]:
        s = np.clip(rng.normal(0.5, 0.25, n), 0, 1)
        c = np.clip(s + shift + rng.normal(0, noise, n), 0, 1) if shift or noise else s
        return s, c, (rng.random(n) < flips).astype(float)

    return draw


SCENARIOS = {
    "identical": (scenario(0, 0, 0), True),
    "equivalent": (scenario(0, 0.05, 0.005), True),
    "at tolerance (1 % flips)": (scenario(0, 0, 0.01), True),
    "3 % flips": (scenario(0, 0, 0.03), False),
    "shift 0.1 sd": (scenario(0.025, 0.05, 0), False),
}


class Runs:
    """The sums of many runs at once (the fields of ShadowSums the verdict reads)."""

    def __init__(self, runs: int) -> None:
        self.pairs, self.x = 0, np.zeros(runs)
        self.s1, self.s2, self.unequal = np.zeros(runs), np.zeros(runs), np.zeros(runs)
        self.hist = {arm: np.zeros((runs, BINS + 2)) for arm in ("stable", "candidate")}

    def add(self, s: NDArray[np.float64], c: NDArray[np.float64], f: NDArray[np.float64]) -> None:
        runs = len(self.x)
        self.pairs += s.shape[1]
        self.x += f.sum(axis=1)
        d = c - s
        self.s1 += d.sum(axis=1)
        self.s2 += (d * d).sum(axis=1)
        self.unequal += (d != 0).sum(axis=1)
        offset = np.arange(runs)[:, None] * (BINS + 2)
        for arm, scores in (("stable", s), ("candidate", c)):
            bins = 1 + np.minimum(BINS - 1, (scores * BINS).astype(int))
            bins = np.where(scores >= 1, BINS + 1, bins)
            self.hist[arm] += np.bincount((offset + bins).ravel(), minlength=runs * (BINS + 2)
                                          ).reshape(runs, BINS + 2)  # fmt: skip

    def judge(self) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """(fail, pass) per run, by the rules of analysis.shadow.judge_shadow."""
        tol, n = PHASE.tolerance, self.pairs
        alpha = PHASE.alpha / 3
        assert tol.disagreement is not None
        assert tol.score_shift is not None
        assert tol.distribution is not None
        shown = disagreement_log_mixture(self.x, n, tol.disagreement) >= math.log(1 / alpha)
        above = self.x / n > tol.disagreement
        t, level = tol.score_shift, math.log(2 / alpha)
        up, down = shift_log_mixtures(n, self.s1[:, None], self.s2[:, None], [-t, t], 1.0)
        gap, gap_plus = cdf_gaps(self.hist["stable"], self.hist["candidate"])
        gap_plus = np.minimum(gap_plus, self.unequal / n)
        radius = 2 * float(dkw_radius(n, alpha / 2))
        fail = (shown & above) | (up[:, 1] >= level) | (down[:, 0] >= level)
        fail |= gap - radius > tol.distribution
        within = (shown & ~above) & (up[:, 0] >= level) & (down[:, 1] >= level)
        within &= gap_plus + radius < tol.distribution
        return fail, within & ~fail & (n >= PHASE.min_pairs)

    def sums(self, run: int) -> ShadowSums:
        out = ShadowSums(pairs=self.pairs, labelled=self.pairs, scored=self.pairs)
        out.disagreements, out.sum_d, out.sum_d2 = int(self.x[run]), self.s1[run], self.s2[run]
        out.unequal = int(self.unequal[run])
        out.hist = {arm: h[run].astype(int).tolist() for arm, h in self.hist.items()}
        return out


def simulate(draw: Draw, runs: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    rng, state = np.random.default_rng(seed), Runs(runs)
    stop, status = np.full(runs, np.inf), np.full(runs, "none", dtype="<U8")
    for look in range(1, HORIZON // STEP + 1):
        s, c, f = draw(rng, runs * STEP)
        state.add(*(a.reshape(runs, STEP) for a in (s, c, f)))
        fail, passed = state.judge()
        for name, hit in (("fail", fail), ("pass", passed)):
            new = hit & (status == "none")
            stop[new], status[new] = look * STEP, name
        for run in range(CHECKED):  # the kernels against the verdict itself
            verdict = judge_shadow(state.sums(run), PHASE).status
            expect = "fail" if fail[run] else "pass" if passed[run] else "continue"
            assert verdict == expect, (look, run, verdict, expect)
    return stop, status


def fixed_n(theta0: float, sd0: float, theta1: float, sd1: float, power: float) -> float:
    za, zb = stats.norm.ppf(1 - PHASE.alpha / 3), stats.norm.ppf(power)
    return float(((za * sd0 + zb * sd1) / (theta1 - theta0)) ** 2)


def truth(draw: Draw) -> tuple[float, float, float]:
    """(flip share, mean and sd of d) of a scenario, from 10⁶ pairs."""
    s, c, f = draw(np.random.default_rng(0), 1_000_000)
    return float(f.mean()), float((c - s).mean()), float((c - s).std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    print(f"{args.runs} runs, a look every {STEP} pairs up to {HORIZON}, α = {PHASE.alpha}")
    print(f"{'scenario':<26}{'fail %':>14}{'pass %':>8}{'median':>8}{'p90':>8}"
          f"{'fixed n 50 %':>14}{'fixed n 90 %':>14}")  # fmt: skip
    tol = PHASE.tolerance
    for i, (name, (draw, within)) in enumerate(SCENARIOS.items()):
        began = time.perf_counter()
        stop, status = simulate(draw, args.runs, args.seed + i)
        fails = (status == "fail").mean()
        se = math.sqrt(fails * (1 - fails) / args.runs)
        target = "pass" if within else "fail"
        hit = stop[status == target]
        med, p90 = (np.percentile(hit, q) if len(hit) else math.nan for q in (50, 90))
        fixed = ["", ""]
        if not within:
            p, mean, sd = truth(draw)
            if p > 0:
                p0 = float(tol.disagreement or 0)
                args0 = (p0, math.sqrt(p0 * (1 - p0)), p, math.sqrt(p * (1 - p)))
            else:
                args0 = (float(tol.score_shift or 0), sd, mean, sd)
                print(f"  (shift 0.1 sd: mean d {mean:.4f}, sd d {sd:.4f})")
            fixed = [f"{fixed_n(*args0, pw):,.0f}" for pw in (0.5, 0.9)]
        passes = 100 * (status == "pass").mean()
        print(f"{name:<26}{100 * fails:>8.2f} ±{100 * se:4.2f}{passes:>8.1f}"
              f"{med:>8.0f}{p90:>8.0f}{fixed[0]:>14}{fixed[1]:>14}"
              f"   ({time.perf_counter() - began:.1f} s)")  # fmt: skip
    print("median/p90: pairs to the first pass (scenarios within tolerance) or fail (others)")


if __name__ == "__main__":
    main()
