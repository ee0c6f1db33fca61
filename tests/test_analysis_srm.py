"""The sequential SRM test against scipy's Dirichlet–multinomial and multinomial pmfs (the
Bayes factor is their ratio: an independent route to Lindon & Malek's closed form), and a seeded
simulation: watching the fixed χ² every 100 units raises false alarms, the sequential p does
not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from analysis import sequential_srm, srm_test


@pytest.mark.parametrize(
    ("counts", "weights", "k"),
    [
        ([1000, 1200], [50, 50], 100.0),
        ([310, 290, 420], [30, 30, 40], 100.0),
        ([480, 520], [1, 1], 10_000.0),
        ([95, 5], [95, 5], 50.0),
        ([0, 12], [50, 50], 100.0),
    ],
)
def test_bayes_factor_is_the_dirichlet_multinomial_over_the_multinomial(
    counts: list[int], weights: list[float], k: float
) -> None:
    theta = np.array(weights, dtype=float) / sum(weights)
    c = np.array(counts)
    expected = stats.dirichlet_multinomial.pmf(c, k * theta, c.sum()) / stats.multinomial.pmf(
        c, c.sum(), theta
    )
    result = sequential_srm(counts, weights, k=k)
    assert result.statistic == pytest.approx(expected, rel=1e-9)
    assert result.pvalue == pytest.approx(min(1.0, 1 / expected), rel=1e-9)


def test_pvalue_is_a_running_minimum_and_flags_a_clear_mismatch() -> None:
    first = sequential_srm([1000, 1200], [50, 50])
    assert first.mismatch
    assert first.pvalue < 0.001
    later = sequential_srm([5000, 5000], [50, 50], previous_pvalue=first.pvalue)
    assert later.pvalue == first.pvalue
    assert later.statistic < 1
    assert "MISMATCH" in first.summary()
    assert "MISMATCH" in first._repr_html_()
    assert "df 1" in srm_test([1000, 1200], [50, 50])._repr_html_()


def test_units_in_a_zero_weight_arm_are_a_certain_mismatch() -> None:
    result = sequential_srm([10, 10, 3], [50, 50, 0])
    assert result.pvalue == 0.0
    assert result.mismatch
    assert sequential_srm([10, 10, 0], [50, 50, 0]).pvalue == 1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="k must"):
        sequential_srm([1, 2], [1, 1], k=0)
    with pytest.raises(ValueError, match="previous_pvalue"):
        sequential_srm([1, 2], [1, 1], previous_pvalue=2)
    with pytest.raises(ValueError, match="same length"):
        sequential_srm([1, 2, 3], [1, 1])


def test_aa_simulation_sequential_srm_keeps_its_level_under_continuous_monitoring() -> None:
    """2,000 seeded 50/50 experiments, checked every 100 units up to 10,000 at level 0.05:
    the fixed χ² alarms in far more than 5 %, the sequential test in at most 5 %."""
    rng = np.random.default_rng(11)
    experiments, looks, step = 2000, 100, 100
    treated = rng.binomial(step, 0.5, size=(experiments, looks)).cumsum(axis=1)
    total = step * np.arange(1, looks + 1)
    chi2 = (2 * treated - total) ** 2 / total
    naive = float(np.mean((stats.chi2.sf(chi2, 1) < 0.05).any(axis=1)))
    # Two arms: BF = B(50 + c, 50 + n − c)/B(50, 50) / 0.5ⁿ, vectorised with betaln; one
    # experiment's path is checked against sequential_srm itself.
    log_bf = (
        special.betaln(50 + treated, 50 + total - treated) - special.betaln(50, 50)
        + total * math.log(2)
    )  # fmt: skip
    running = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_bf)), axis=1)
    p = 1.0
    for c, n in zip(treated[0], total, strict=True):
        p = sequential_srm([n - c, c], [1, 1], previous_pvalue=p).pvalue
    assert p == pytest.approx(running[0, -1], rel=1e-9)
    alarms = int((running[:, -1] < 0.05).sum())
    rate = alarms / experiments
    assert naive > 0.25
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / experiments)
    assert srm_test([5000, 5000], [1, 1]).pvalue == 1.0
