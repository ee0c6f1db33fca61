"""Confidence sequences, the sequential monitor and CUPED against independent computations,
and a seeded A/A simulation: peeking at a fixed-horizon test inflates α, the always-valid
methods do not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis import (
    ArmStats,
    SequentialMonitor,
    confidence_sequence,
    cuped,
    msprt,
    pooled_theta,
    welch_ttest,
)


def arm(y: np.ndarray, x: np.ndarray | None = None) -> ArmStats:
    x = np.zeros_like(y) if x is None else x
    return ArmStats(
        len(y),
        float(y.sum()),
        float((y * y).sum()),
        float(x.sum()),
        float((x * x).sum()),
        float((x * y).sum()),
    )


RNG = np.random.default_rng(7)
A = RNG.lognormal(2.0, 0.5, size=800)
B = RNG.lognormal(2.05, 0.5, size=900)


def _waudby_smith(
    estimate: float, v: float, n_total: float, alpha: float, n_star: float
) -> tuple[float, float]:
    """The CS as written in Waudby-Smith et al. (docs/statistics.md §6): μ̂ ± σ̂ sqrt(2(tρ²+1)/
    (t²ρ²) ln(sqrt(tρ²+1)/α)) with t = N and σ̂² = N v — a different algebra from the mSPRT."""
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / n_star
    t, sigma = n_total, math.sqrt(n_total * v)
    radius = sigma * math.sqrt(
        2 * (t * rho2 + 1) / (t * t * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha)
    )
    return estimate - radius, estimate + radius


def test_absolute_cs_is_the_waudby_smith_interval() -> None:
    result = confidence_sequence(arm(A), arm(B), alpha=0.05, n_star=5000)
    v = A.var(ddof=1) / len(A) + B.var(ddof=1) / len(B)
    expected = _waudby_smith(B.mean() - A.mean(), v, len(A) + len(B), 0.05, 5000)
    assert result.confidence_interval() == pytest.approx(expected, rel=1e-12)


def test_relative_cs_uses_the_delta_method() -> None:
    result = confidence_sequence(arm(A), arm(B), alpha=0.05, n_star=5000, relative=True)
    ma, mb = A.mean(), B.mean()
    v = B.var(ddof=1) / (ma**2 * len(B)) + A.var(ddof=1) * mb**2 / (ma**4 * len(A))
    expected = _waudby_smith(mb / ma - 1, v, len(A) + len(B), 0.05, 5000)
    assert result.estimate == pytest.approx(mb / ma - 1, rel=1e-12)
    assert result.confidence_interval() == pytest.approx(expected, rel=1e-12)
    zero = confidence_sequence(ArmStats(10, 0, 0), arm(B), alpha=0.05, n_star=5000, relative=True)
    assert (zero.pvalue, zero.confidence_interval()) == (1.0, (-math.inf, math.inf))


def test_monitor_keeps_a_monotone_state_and_survives_a_round_trip() -> None:
    monitor = SequentialMonitor(alpha=0.05, n_star=2000)
    pvalues, widths = [], []
    for n in range(100, 801, 100):
        look = monitor.update(arm(A[:n]), arm(B[:n]))
        pvalues.append(look.pvalue)
        widths.append(look.ci_high - look.ci_low)
        direct = msprt(arm(A[:n]), arm(B[:n]), alpha=0.05, n_star=2000)
        assert look.pvalue <= direct.pvalue
    assert pvalues == sorted(pvalues, reverse=True)
    assert widths == sorted(widths, reverse=True)
    restored = SequentialMonitor.from_dict(monitor.to_dict())
    assert restored == monitor
    assert restored.looks == 8


def test_cuped_equals_welch_on_adjusted_values() -> None:
    rng = np.random.default_rng(11)
    x_a, x_b = rng.normal(50, 10, size=700), rng.normal(50, 10, size=750)
    y_a = 0.8 * x_a + rng.normal(0, 5, size=700)
    y_b = 0.8 * x_b + 1.0 + rng.normal(0, 5, size=750)
    a, b = arm(y_a, x_a), arm(y_b, x_b)
    x_all, y_all = np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])
    theta = np.cov(y_all, x_all)[0, 1] / np.var(x_all, ddof=1)  # pooled over both arms
    assert pooled_theta(a, b) == pytest.approx(theta, rel=1e-10)
    adjusted_a, adjusted_b = cuped(a, b)
    ref = stats.ttest_ind(
        y_b - theta * (x_b - x_all.mean()), y_a - theta * (x_a - x_all.mean()), equal_var=False
    )
    result = welch_ttest(adjusted_a, adjusted_b)
    assert result.pvalue == pytest.approx(ref.pvalue, rel=1e-8)
    plain = welch_ttest(a, b)
    assert (result.ci_high - result.ci_low) < 0.7 * (plain.ci_high - plain.ci_low)


def test_aa_simulation_peeking_inflates_alpha_but_not_the_sequential_tests() -> None:
    # 400 A/A experiments with a look every 50 units per arm up to 2,000 (40 looks), normal
    # data, seed fixed.  A fixed-horizon Welch test checked at every look rejects far more
    # often than α = 0.05; mSPRT (n* = 4,000) and the CS monitor stay at or below it.
    rng = np.random.default_rng(20261126)
    experiments, step, looks, alpha = 400, 50, 40, 0.05
    naive = sequential = 0
    for _ in range(experiments):
        ya, yb = rng.normal(0, 1, size=step * looks), rng.normal(0, 1, size=step * looks)
        ca, cb = np.cumsum(ya), np.cumsum(yb)
        qa, qb = np.cumsum(ya * ya), np.cumsum(yb * yb)
        monitor = SequentialMonitor(alpha=alpha, n_star=4000)
        rejected_naive = rejected_seq = False
        for k in range(1, looks + 1):
            n = k * step
            a = ArmStats(n, float(ca[n - 1]), float(qa[n - 1]))
            b = ArmStats(n, float(cb[n - 1]), float(qb[n - 1]))
            rejected_naive |= welch_ttest(a, b).pvalue < alpha
            rejected_seq |= monitor.update(a, b).pvalue < alpha
        naive += rejected_naive
        sequential += rejected_seq
    naive_rate, seq_rate = naive / experiments, sequential / experiments
    mc_se = math.sqrt(alpha * (1 - alpha) / experiments)  # ≈ 0.011
    assert naive_rate > alpha + 3 * mc_se  # peeking: well above 5 %
    assert seq_rate <= alpha + 2 * mc_se  # always valid: at most 5 % within MC error
