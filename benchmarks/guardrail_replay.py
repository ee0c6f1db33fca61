"""Operational guardrails replayed tick by tick: false rollbacks of healthy canaries and the
time to roll back a regressing one, for the default plan (relative guardrails + ceilings) and
for the single-threshold rule it replaces.

    python benchmarks/guardrail_replay.py [--runs 1000] [--minutes 10] [--seed 20261128]

Each run is a canary at a 5 % share of 1,000 requests/s, looked at every 2 s (300 looks in 10
minutes).  Each tick replays what Envoy's counters would add: Poisson requests per arm, 5xx
answers, and the latency histogram's bucket counts (Envoy's default bounds) drawn from a
lognormal latency with median 20 ms and p99 100 ms.  Host noise hits both arms alike: each tick
multiplies latencies by a lognormal factor (σ 0.15) and the error rate by another (σ 0.5), and
one tick in ten stalls 2 % of requests by 150 ms.  Scenarios:
- A/A: both arms identical (5xx 0.1 %), the whole run;
- 5xx: the candidate answers 1 % 5xx from the start;
- p99: the candidate's latencies are doubled (p99 100 → 200 ms) from the start.
Rules (a run's rollback is its first look at which the rule fails):
- relative only: errors_vs_stable and latency_vs_stable (analysis.rate_ratio, tolerance 0.2,
  α 0.01 each; the minimum sample gates passes, not failures);
- default plan: those plus the ceilings on the candidate alone (analysis.rate_ceiling,
  α 0.01 each): p99 ≤ 1 s as at most 1 % of requests over 1000 ms, 5xx ≤ 5 %;
- threshold: the old default, one reading over a 30 s window, p99 (interpolated in the
  histogram as Prometheus' histogram_quantile does) ≤ 150 ms and 5xx ratio ≤ 0.1 %.
The relative tests go through analysis.rate_ratio's own tick kernel over all runs at once; the
first runs are replayed through RateRatioTest too, and must agree.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from analysis.rate_ceiling import log_bayes_factor
from analysis.rate_ratio import GRID, LOG_PRIOR, RateRatioTest, tick_log_lr

BOUNDS = np.array([0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, np.inf])
CUTS = (50.0, 100.0, 250.0, 500.0, 1000.0)  # the default latency_vs_stable above_ms
TICK_S, RPS, SHARE, WINDOW = 2.0, 1000.0, 0.05, 15  # 15 ticks = a 30 s rate window
MEDIAN_MS, SIGMA = 20.0, math.log(100.0 / 20.0) / stats.norm.ppf(0.99)  # p99 = 100 ms
ALPHA, TOLERANCE = 0.01, 0.2


@dataclass(frozen=True)
class Scenario:
    name: str
    error_b: float = 0.001
    scale_b: float = 1.0  # the candidate's latency multiplier


def bucket_probs(scale: NDArray[np.float64], stalled: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Per run, the probability of each histogram bucket: lognormal latency times `scale`,
    2 % of requests 150 ms slower where the host stalled (the extra time shifts the CDF)."""
    edges = BOUNDS[None, :]
    scales = MEDIAN_MS * scale[:, None]
    cdf = stats.lognorm.cdf(edges, SIGMA, scale=scales)
    late = stats.lognorm.cdf(np.maximum(edges - 150.0, 0.0), SIGMA, scale=scales)
    mix = np.where(stalled[:, None], 0.98 * cdf + 0.02 * late, cdf)
    return np.diff(np.concatenate([np.zeros((len(scale), 1)), mix], axis=1), axis=1)


def draw(
    rng: np.random.Generator, n: NDArray[np.int64], probs: NDArray[np.float64]
) -> NDArray[np.int64]:
    return np.stack([rng.multinomial(k, p) for k, p in zip(n, probs, strict=True)])


def p99(window: NDArray[np.float64]) -> NDArray[np.float64]:
    """histogram_quantile(0.99) per run: linear within the bucket, as Prometheus does."""
    cum = np.cumsum(window, axis=1)
    total = cum[:, -1]
    rank = 0.99 * total
    j = np.argmax(cum >= rank[:, None], axis=1)
    lower = np.where(j > 0, BOUNDS[np.maximum(j - 1, 0)], 0.0)
    upper = BOUNDS[j]
    below = np.where(j > 0, cum[np.arange(len(j)), np.maximum(j - 1, 0)], 0.0)
    inside = window[np.arange(len(j)), j]
    frac = np.where(inside > 0, (rank - below) / np.maximum(inside, 1), 0.0)
    value = np.where(np.isinf(upper), BOUNDS[-2], lower + (upper - lower) * frac)
    return np.where(total > 0, value, np.nan)


def replay(
    rng: np.random.Generator, s: Scenario, runs: int, ticks: int, check: int
) -> dict[str, NDArray[np.float64]]:
    """Per rule, each run's rollback time in seconds (inf: never)."""
    shape = (runs, len(BOUNDS))
    hist = {arm: np.zeros((ticks, *shape)) for arm in ("a", "b")}
    errs = {arm: np.zeros((ticks, runs)) for arm in ("a", "b")}
    reqs = {arm: np.zeros((ticks, runs)) for arm in ("a", "b")}
    for t in range(ticks):
        host = rng.lognormal(0.0, 0.15, runs)
        stalled = rng.random(runs) < 0.1
        err_noise = rng.lognormal(0.0, 0.5, runs)
        arms = (("a", 1 - SHARE, 1.0, 0.001), ("b", SHARE, s.scale_b, s.error_b))
        for arm, share, scale, rate in arms:
            n = rng.poisson(RPS * TICK_S * share, runs)
            hist[arm][t] = draw(rng, n, bucket_probs(host * scale, stalled))
            errs[arm][t] = rng.binomial(n, np.minimum(1.0, rate * err_noise))
            reqs[arm][t] = n
    rules = ("default plan", "relative only", "threshold", "threshold p99", "threshold 5xx")
    out = {rule: np.full(runs, np.inf) for rule in rules}
    relative_fail = relative(hist, errs, reqs, runs, ticks, check)
    counted, bad_5xx, over_1s = np.zeros(runs), np.zeros(runs), np.zeros(runs)
    ceiling = np.zeros(runs, bool)
    for t in range(ticks):
        lo = max(0, t - WINDOW + 1)
        win_b = hist["b"][lo : t + 1].sum(axis=0)
        n_win = reqs["b"][lo : t + 1].sum(axis=0)
        errors = errs["b"][lo : t + 1].sum(axis=0)
        ratio = np.where(n_win > 0, errors / np.maximum(n_win, 1), np.nan)
        q = p99(win_b)
        if t > 0:  # the ceilings' counts start at the first reading, as the relative ones'
            counted += reqs["b"][t]
            bad_5xx += errs["b"][t]
            over_1s += hist["b"][t][:, int(np.searchsorted(BOUNDS, 1000.0)) + 1 :].sum(axis=1)
        bf_5xx = log_bayes_factor(bad_5xx, counted, 0.05)
        bf_1s = log_bayes_factor(over_1s, counted, 0.01)
        ceiling |= (bf_5xx > -math.log(ALPHA)) | (bf_1s > -math.log(ALPHA))
        when = (t + 1) * TICK_S
        for rule, failed in (
            ("threshold", (q > 150.0) | (ratio > 0.001)),
            ("threshold p99", q > 150.0),
            ("threshold 5xx", ratio > 0.001),
            ("relative only", relative_fail[t]),
            ("default plan", relative_fail[t] | ceiling),
        ):
            hit = failed & np.isinf(out[rule])
            out[rule][hit] = when
    return out


def relative(
    hist: dict[str, NDArray[np.float64]], errs: dict[str, NDArray[np.float64]],
    reqs: dict[str, NDArray[np.float64]], runs: int, ticks: int, check: int,
) -> NDArray[np.bool_]:  # fmt: skip
    """Per tick and run, whether either relative guardrail has failed by then."""
    delta0 = 1.0 + TOLERANCE
    log_err = np.zeros((runs, len(GRID)))
    log_lat = np.zeros((len(CUTS), runs, len(GRID)))
    p_err, p_lat = np.ones(runs), np.ones(runs)
    n = {"a": np.zeros(runs), "b": np.zeros(runs)}
    classes = [(RateRatioTest(TOLERANCE), RateRatioTest(TOLERANCE)) for _ in range(check)]
    failed = np.zeros((ticks, runs), bool)
    after = [int(np.searchsorted(BOUNDS, c)) + 1 for c in CUTS]  # buckets above each cut
    for t in range(1, ticks):  # the first reading starts the count
        n_a, n_b = reqs["a"][t], reqs["b"][t]
        rho = np.where(n_a + n_b > 0, n_b / np.maximum(n_a + n_b, 1), 0.0)
        x_a, x_b = errs["a"][t], errs["b"][t]
        log_err += tick_log_lr(GRID, delta0, x_b, x_a + x_b, rho)
        slow_a = np.stack([hist["a"][t][:, j:].sum(axis=1) for j in after])
        slow_b = np.stack([hist["b"][t][:, j:].sum(axis=1) for j in after])
        log_lat += tick_log_lr(GRID, delta0, slow_b, slow_a + slow_b, rho[None, :])
        n["a"] += n_a
        n["b"] += n_b
        bf_err = np.logaddexp.reduce(LOG_PRIOR + log_err, axis=1)
        each = np.logaddexp.reduce(LOG_PRIOR + log_lat, axis=2)
        bf_lat = np.logaddexp.reduce(each, axis=0) - math.log(len(CUTS))
        p_err = np.minimum(p_err, np.exp(-np.minimum(bf_err, 700)))
        p_lat = np.minimum(p_lat, np.exp(-np.minimum(bf_lat, 700)))
        failed[t] = (p_err < ALPHA) | (p_lat < ALPHA)  # the minimum sample gates passes only
        for i, (errors, latency) in enumerate(classes):  # the first runs through the class
            errors.update((n_b[i], {"errors": x_b[i]}), (n_a[i], {"errors": x_a[i]}))
            kinds = [f"gt_{c:g}" for c in CUTS]
            latency.update((n_b[i], dict(zip(kinds, slow_b[:, i], strict=True))),
                           (n_a[i], dict(zip(kinds, slow_a[:, i], strict=True))))  # fmt: skip
            for test, p in ((errors, p_err[i]), (latency, p_lat[i])):
                assert math.isclose(test.pvalue, p, rel_tol=1e-6, abs_tol=1e-300), (t, i)
    return np.maximum.accumulate(failed, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    ticks = int(args.minutes * 60 / TICK_S)
    scenarios = [
        Scenario("A/A"),
        Scenario("5xx 0.1 → 1 %", error_b=0.01),
        Scenario("p99 100 → 200 ms", scale_b=2.0),
    ]
    print(
        f"{args.runs} runs × {ticks} looks every {TICK_S:g} s; canary share {SHARE:.0%} of"
        f" {RPS:g} req/s; α {ALPHA} per relative guardrail"
    )
    print(f"{'scenario':<18} {'rule':<14} {'rolled back':>12} {'median s':>9} {'p90 s':>7}")
    for i, s in enumerate(scenarios):
        started = time.perf_counter()
        rng = np.random.default_rng(args.seed + i)
        results = replay(rng, s, args.runs, ticks, check=min(20, args.runs))
        for rule, at in results.items():
            hit = np.isfinite(at)
            rate, se = hit.mean(), math.sqrt(hit.mean() * (1 - hit.mean()) / len(at))
            med = f"{np.median(at[hit]):.0f}" if hit.any() else "-"
            p90 = f"{np.sort(at)[int(0.9 * len(at))]:.0f}" if hit.mean() > 0.9 else "-"
            print(f"{s.name:<18} {rule:<14} {rate:>7.2%} ±{se:.1%} {med:>9} {p90:>7}")
        print(f"{'':<18} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
