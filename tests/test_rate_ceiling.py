"""The ceiling test (analysis.rate_ceiling) against scipy's binomial probabilities, and its
error rates by simulation with fixed seeds: at the ceiling exactly, looked at every tick, it
rejects at most α of runs; at twice the ceiling it rejects nearly all."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.rate_ceiling import RateCeilingTest, log_bayes_factor
from analysis.rate_ratio import GRID, LOG_PRIOR


@pytest.mark.parametrize(("x", "n", "p0"), [(3, 100, 0.01), (0, 500, 0.05), (60, 1000, 0.05)])
def test_the_bayes_factor_is_the_binomial_mixture(x: int, n: int, p0: float) -> None:
    logit0 = math.log(p0 / (1 - p0))
    direct = sum(
        math.exp(w) * stats.binom.pmf(x, n, 1 / (1 + math.exp(-(logit0 + u))))
        / stats.binom.pmf(x, n, p0)
        for u, w in zip(GRID, LOG_PRIOR, strict=True)
    )
    assert math.exp(log_bayes_factor(x, n, p0)) == pytest.approx(direct, rel=1e-9)


def runs(seed: int, share: float, ceiling: float, count: int = 500) -> float:
    """The share of runs of 300 ticks (50 requests each) ever rejected at α = 0.01."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(count):
        test = RateCeilingTest(ceiling)
        for _ in range(300):
            test.update(50, rng.binomial(50, share))
            if test.pvalue < 0.01:
                rejected += 1
                break
    return rejected / count


def test_at_the_ceiling_exactly_looks_every_tick_stay_under_alpha() -> None:
    rate = runs(11, 0.05, 0.05)
    print(f"false: {rate:.4f}")
    assert rate <= 0.01


def test_twice_the_ceiling_is_caught() -> None:
    rate = runs(12, 0.10, 0.05, count=100)
    print(f"caught: {rate:.2f}")
    assert rate >= 0.99


def test_the_state_round_trips_and_events_are_capped() -> None:
    test = RateCeilingTest(0.01)
    test.update(10, 30)
    assert (test.requests, test.events, test.share) == (10.0, 10.0, 1.0)
    again = RateCeilingTest.from_dict(test.to_dict())
    assert again == test


def test_a_long_clean_run_keeps_p_at_one_without_overflow() -> None:
    """Millions of requests far under the ceiling: the log factor is hugely negative (scipy's
    binomial log-likelihood ratio at the ceiling says how much), and p stays 1."""
    events, requests, ceiling = 1_000.0, 5_000_000.0, 0.05
    assert float(log_bayes_factor(events, requests, ceiling)) < -700  # exp(-bf) would overflow
    assert stats.binom.logpmf(1_000, 5_000_000, 0.0002) - stats.binom.logpmf(
        1_000, 5_000_000, ceiling
    ) > 700  # the reference: the data favour the low rate overwhelmingly
    test = RateCeilingTest(ceiling)
    test.update(requests, events)
    test.update(1_000.0, 0.0)
    assert test.pvalue == 1.0
