"""The rate-ratio test of relative guardrails (analysis.rate_ratio) against independent
references: each tick's likelihood ratio against scipy's binomial probabilities, the mixture
against a direct sum, and its error rates by simulation with fixed seeds (Poisson requests,
binomial events, host noise shared by both arms, steps that change the traffic share)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.rate_ratio import GRID, LOG_PRIOR, RateRatioTest, tick_log_lr

ALPHA = 0.01


def theta(delta: float, rho: float) -> float:
    return rho * delta / (rho * delta + 1 - rho)


@pytest.mark.parametrize(("x_b", "m", "rho"), [(3, 10, 0.05), (0, 7, 0.2), (40, 40, 0.5)])
def test_one_tick_is_the_binomial_likelihood_ratio(x_b: int, m: int, rho: float) -> None:
    """Conditional on m events, the candidate's count is Binomial(m, θ(δ)): scipy's pmf."""
    delta0 = 1.2
    deltas = delta0 * np.exp(GRID)
    expected = [
        stats.binom.logpmf(x_b, m, theta(d, rho)) - stats.binom.logpmf(x_b, m, theta(delta0, rho))
        for d in deltas
    ]
    assert tick_log_lr(GRID, delta0, x_b, m, rho) == pytest.approx(expected, abs=1e-9)


def test_the_bayes_factor_is_the_prior_mixture_and_path_independent_at_a_fixed_share() -> None:
    test = RateRatioTest(0.2)
    ticks = [(100, 3, 1900, 2), (120, 0, 2280, 5), (90, 4, 1710, 1)]
    for n_b, x_b, n_a, x_a in ticks:
        test.update((n_b, {"errors": x_b}), (n_a, {"errors": x_a}))
    x_b, m = 7, 7 + 8  # at the same ρ = 0.05 the ticks add up to one
    direct = sum(
        math.exp(w) * stats.binom.pmf(x_b, m, theta(1.2 * math.exp(u), 0.05))
        / stats.binom.pmf(x_b, m, theta(1.2, 0.05))
        for u, w in zip(GRID, LOG_PRIOR, strict=True)
    )
    assert math.exp(test.log_bf) == pytest.approx(direct, rel=1e-9)
    assert test.ratio("errors") == pytest.approx((7 / 310) / (8 / 5890))
    again = RateRatioTest.from_dict(test.to_dict())
    assert again.log_bf == pytest.approx(test.log_bf, abs=1e-3)
    assert (again.pvalue, again.candidate, again.stable) == (
        test.pvalue, test.candidate, test.stable)  # fmt: skip


def simulate(
    rng: np.random.Generator, runs: int, ticks: int, rate_a: float, rate_b: float,
    shares: list[float], rps: float = 1000.0, noise: float = 0.5, tolerance: float = 0.2,
) -> list[int | None]:  # fmt: skip
    """Runs of 2-second ticks at `rps`; each run's first tick with p < α, or None."""
    out: list[int | None] = []
    for _ in range(runs):
        test, hit = RateRatioTest(tolerance), None
        for t in range(ticks):
            share = shares[min(t * len(shares) // ticks, len(shares) - 1)]
            host = rng.lognormal(0.0, noise)  # a busy host: more errors on both arms alike
            n_b, n_a = rng.poisson(2 * rps * share), rng.poisson(2 * rps * (1 - share))
            x_b = rng.binomial(n_b, min(1.0, rate_b * host))
            x_a = rng.binomial(n_a, min(1.0, rate_a * host))
            test.update((n_b, {"errors": x_b}), (n_a, {"errors": x_a}))
            if test.pvalue < ALPHA and min(test.candidate.requests, test.stable.requests) >= 100:
                hit = t
                break
        out.append(hit)
    return out


@pytest.mark.parametrize("tolerance", [0.0, 0.2])
def test_identical_arms_looked_at_every_tick_are_rarely_rolled_back(tolerance: float) -> None:
    """A/A, 300 looks (10 minutes at 2 s), host noise, and steps 5 → 20 → 50 %: the share of
    runs ever rejected stays under α (simulation, seed 7), even with no tolerance at all, where
    the null hypothesis is exactly true (δ = δ₀ = 1: 0.2 % in 1,000 runs when written)."""
    rng = np.random.default_rng(7)
    hits = simulate(rng, 500, 300, 0.002, 0.002, [0.05, 0.2, 0.5], tolerance=tolerance)
    rate = sum(h is not None for h in hits) / len(hits)
    print(f"tolerance {tolerance}: false rollbacks {rate:.4f} (α {ALPHA})")
    assert rate <= ALPHA


def test_a_tenfold_error_rate_at_a_five_percent_share_is_caught_within_a_minute() -> None:
    hits = simulate(np.random.default_rng(8), 100, 300, 0.001, 0.01, [0.05])
    seconds = sorted(2 * (h + 1) for h in hits if h is not None)
    print(f"caught in {len(seconds)}/100 runs; median {np.median(seconds):.0f} s")
    assert len(seconds) == 100
    assert np.median(seconds) <= 60


def test_a_better_candidate_and_one_within_the_tolerance_are_kept() -> None:
    """One-sided: fewer errors never roll back; 10 % more stays within a 20 % tolerance."""
    rng = np.random.default_rng(9)
    assert simulate(rng, 50, 300, 0.01, 0.002, [0.5]) == [None] * 50
    within = simulate(rng, 100, 300, 0.01, 0.011, [0.5])
    assert sum(h is not None for h in within) <= 2


def test_several_event_kinds_average_their_evidence() -> None:
    """The Bayes factor of two kinds is the mean of each alone (any dependence is fine)."""
    both, one, other = RateRatioTest(0.2), RateRatioTest(0.2), RateRatioTest(0.2)
    for n_b, a, b, n_a, c, d in [(100, 5, 1, 1900, 10, 20), (100, 6, 0, 1900, 8, 19)]:
        both.update((n_b, {"gt_100": a, "gt_250": b}), (n_a, {"gt_100": c, "gt_250": d}))
        one.update((n_b, {"gt_100": a}), (n_a, {"gt_100": c}))
        other.update((n_b, {"gt_250": b}), (n_a, {"gt_250": d}))
    mean = (math.exp(one.log_bf) + math.exp(other.log_bf)) / 2
    assert math.exp(both.log_bf) == pytest.approx(mean, rel=1e-12)
    assert both.worst()[0] == "gt_100"


def test_degenerate_ticks_carry_no_evidence() -> None:
    """No events, or one arm without requests, leave the test where it was; events beyond the
    requests read a moment apart are capped."""
    test = RateRatioTest(0.0)
    test.update((0, {"errors": 3}), (100, {"errors": 0}))
    test.update((100, {"errors": 0}), (100, {"errors": 0}))
    assert (test.log_bf, test.pvalue) == pytest.approx((0.0, 1.0), abs=1e-12)
    test.update((5, {"errors": 9}), (100, {"errors": 0}))
    assert test.candidate.events["errors"] == 5
