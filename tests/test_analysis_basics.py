"""ArmStats, Welch, two-proportion z, mSPRT and SRM against independent references: scipy,
statsmodels, and direct numerical integration of the mSPRT mixture (docs/statistics.md §4, §5, §8).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from statsmodels.stats import proportion as sm_proportion

from analysis import ArmStats, msprt, proportions_ztest, srm_test, welch_ttest


def arm(values: np.ndarray) -> ArmStats:
    return ArmStats(len(values), float(values.sum()), float((values**2).sum()))


RNG = np.random.default_rng(2026)
CONTROL = RNG.normal(10.0, 2.0, size=400)
TREATMENT = RNG.normal(10.4, 3.0, size=650)  # unequal sizes and variances


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("theta0", [0.0, 0.25])
def test_welch_matches_scipy(alternative: str, theta0: float) -> None:
    result = welch_ttest(arm(CONTROL), arm(TREATMENT), theta0=theta0, alternative=alternative)  # type: ignore[arg-type]
    # scipy on the raw data; θ₀ by shifting the treatment values.
    ref = stats.ttest_ind(TREATMENT - theta0, CONTROL, equal_var=False, alternative=alternative)
    assert result.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert result.pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    low, high = ref.confidence_interval(0.95)
    got_low, got_high = result.confidence_interval()
    assert got_low == pytest.approx(low + theta0, rel=1e-9, abs=1e-12)
    assert got_high == pytest.approx(high + theta0, rel=1e-9, abs=1e-12)
    assert result.estimate == pytest.approx(TREATMENT.mean() - CONTROL.mean(), rel=1e-12)


def test_welch_with_huge_means_keeps_its_variance() -> None:
    # Values near 1e9: the power sums alone lose the variance; the stable m2 keeps it.
    a_values, b_values = 1e9 + CONTROL, 1e9 + TREATMENT
    stable = [
        ArmStats(len(v), float(v.sum()), float((v**2).sum()), m2=float(((v - v.mean()) ** 2).sum()))
        for v in (a_values, b_values)
    ]
    result = welch_ttest(*stable)
    ref = stats.ttest_ind(b_values, a_values, equal_var=False)
    assert result.pvalue == pytest.approx(ref.pvalue, rel=1e-6)


def test_welch_edge_cases() -> None:
    flat = ArmStats(10, 50.0, 250.0)  # every value 5: zero variance
    result = welch_ttest(flat, flat)
    assert math.isnan(result.pvalue)  # 0/0, as scipy
    with pytest.raises(ValueError, match="at least 2 units"):
        welch_ttest(ArmStats(1, 1.0, 1.0), flat)
    with pytest.raises(ValueError, match="alpha"):
        welch_ttest(flat, flat, alpha=1.5)
    with pytest.raises(ValueError, match="finite"):
        ArmStats(10, math.nan, 1.0)


@pytest.mark.parametrize(
    ("ca", "na", "cb", "nb"), [(120, 1000, 150, 1000), (30, 2000, 61, 1500), (5, 80, 1, 90)]
)
def test_proportions_match_statsmodels(ca: int, na: int, cb: int, nb: int) -> None:
    a, b = ArmStats(na, ca, ca), ArmStats(nb, cb, cb)  # 0/1 values: sum_sq = sum
    pooled = proportions_ztest(a, b, pooled=True)
    z, p = sm_proportion.proportions_ztest(count=[cb, ca], nobs=[nb, na])
    assert (pooled.statistic, pooled.pvalue) == (
        pytest.approx(z, rel=1e-10),
        pytest.approx(p, rel=1e-10),
    )
    chi2 = stats.chi2_contingency([[cb, nb - cb], [ca, na - ca]], correction=False)
    assert pooled.pvalue == pytest.approx(chi2.pvalue, rel=1e-9)  # the classical identity
    wald = proportions_ztest(a, b, pooled=False)
    ref = sm_proportion.test_proportions_2indep(cb, nb, ca, na, method="wald", compare="diff")
    assert (wald.statistic, wald.pvalue) == (
        pytest.approx(ref.statistic, rel=1e-10),
        pytest.approx(ref.pvalue, rel=1e-10),
    )
    shifted = proportions_ztest(a, b, pooled=False, theta0=0.01)
    ref0 = sm_proportion.test_proportions_2indep(
        cb, nb, ca, na, method="wald", compare="diff", value=0.01
    )
    assert shifted.pvalue == pytest.approx(ref0.pvalue, rel=1e-9)


def test_proportions_all_zero_is_nan_not_an_error() -> None:
    zero = ArmStats(100, 0.0, 0.0)
    assert math.isnan(proportions_ztest(zero, zero, pooled=True).pvalue)
    with pytest.raises(ValueError, match="pooled test"):
        proportions_ztest(zero, zero, pooled=True, theta0=0.1)


def _log_mixture_lambda(delta: float, v: float, tau2: float, theta0: float) -> float:
    """log Λ by integrating the likelihood ratio over the N(θ₀, τ²) mixture numerically:
    Λ = ∫ exp(−(Δ̂ − θ)²/2v) φ(θ; θ₀, τ²) dθ · exp((Δ̂ − θ₀)²/2v).  quad integrates in
    z = (θ − Δ̂)/√v with the exponent's value at z = 0 factored out, so nothing under- or
    overflows."""
    sd, root_v = math.sqrt(tau2), math.sqrt(v)
    peak = stats.norm.logpdf(delta, theta0, sd)

    def integrand(z: float) -> float:
        return math.exp(-z * z / 2 + stats.norm.logpdf(delta + root_v * z, theta0, sd) - peak)

    value, _ = integrate.quad(integrand, -60, 60, limit=500, epsabs=0, epsrel=1e-13)
    return math.log(value * root_v) + peak + (delta - theta0) ** 2 / (2 * v)


@pytest.mark.parametrize("theta0", [0.0, 0.2])
@pytest.mark.parametrize("n", [100, 1000, 20000])
def test_msprt_matches_the_mixture_integral(theta0: float, n: int) -> None:
    rng = np.random.default_rng(n)
    a_values, b_values = rng.normal(0, 1, size=n), rng.normal(0.1, 1.2, size=n + 37)
    a, b = arm(a_values), arm(b_values)
    tau2, alpha = 0.05, 0.05
    result = msprt(a, b, alpha=alpha, tau2=tau2, theta0=theta0)
    v = a_values.var(ddof=1) / len(a_values) + b_values.var(ddof=1) / len(b_values)
    delta = b_values.mean() - a_values.mean()
    log_lam = _log_mixture_lambda(delta, v, tau2, theta0)
    assert math.log(result.statistic) == pytest.approx(log_lam, rel=1e-7, abs=1e-9)
    assert result.pvalue == pytest.approx(min(1.0, math.exp(-log_lam)), rel=1e-6, abs=1e-300)

    # The interval's ends are the θ₀ where Λ(θ₀) = 1/α, found by root-finding.
    def excess(t0: float) -> float:
        return _log_mixture_lambda(delta, v, tau2, t0) - math.log(1 / alpha)

    width = 50 * math.sqrt(v + tau2)
    low = optimize.brentq(excess, delta - width, delta)
    high = optimize.brentq(excess, delta, delta + width)
    assert result.confidence_interval() == (
        pytest.approx(low, rel=1e-6, abs=1e-9),
        pytest.approx(high, rel=1e-6, abs=1e-9),
    )


def test_msprt_n_star_is_gbstats_tau2() -> None:
    # τ² = ρ² N v with ρ² = (−2 ln α + ln(1 − 2 ln α))/n* (docs/statistics.md §6).
    a, b = arm(CONTROL), arm(TREATMENT)
    alpha, n_star = 0.05, 5000
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / n_star
    v = CONTROL.var(ddof=1) / len(CONTROL) + TREATMENT.var(ddof=1) / len(TREATMENT)
    by_n_star = msprt(a, b, alpha=alpha, n_star=n_star)
    direct = msprt(a, b, alpha=alpha, tau2=rho2 * (len(CONTROL) + len(TREATMENT)) * v)
    assert by_n_star.pvalue == pytest.approx(direct.pvalue, rel=1e-12)
    assert by_n_star.confidence_interval() == pytest.approx(direct.confidence_interval())


def test_msprt_proportions_and_degenerate_looks() -> None:
    a, b = ArmStats(1000, 100, 100), ArmStats(1000, 140, 140)
    result = msprt(a, b, alpha=0.05, tau2=1e-3, kind="proportion")
    v = 0.1 * 0.9 / 1000 + 0.14 * 0.86 / 1000  # p(1 − p)/n, ddof 0
    expected = min(1.0, math.exp(-_log_mixture_lambda(0.04, v, 1e-3, 0.0)))
    assert result.pvalue == pytest.approx(expected, rel=1e-7)
    none = msprt(ArmStats(50, 0, 0), ArmStats(50, 0, 0), alpha=0.05, tau2=1e-3, kind="proportion")
    assert (none.pvalue, none.confidence_interval()) == (1.0, (-math.inf, math.inf))
    with pytest.raises(ValueError, match="exactly one"):
        msprt(a, b, alpha=0.05)


def test_srm_matches_scipy_chisquare() -> None:
    counts, weights = [5120, 4880], [50, 50]
    result = srm_test(counts, weights)
    ref = stats.chisquare(counts, [5000, 5000])
    assert (result.statistic, result.pvalue) == (
        pytest.approx(ref.statistic),
        pytest.approx(ref.pvalue),
    )
    skewed = srm_test([9700, 300], [95, 5])
    assert skewed.mismatch  # 300 against an expected 500
    assert skewed.pvalue == pytest.approx(stats.chisquare([9700, 300], [9500, 500]).pvalue)
    assert not srm_test([9510, 490], [95, 5]).mismatch
    assert srm_test([10, 1], [100, 0]).pvalue == 0.0  # units in an arm weighted 0
    assert "MISMATCH" in skewed.summary()


def test_results_render_as_text_and_html() -> None:
    result = welch_ttest(arm(CONTROL), arm(TREATMENT))
    text = result.summary()
    assert "Welch t-test" in text
    assert "95% interval" in text
    assert result._repr_html_().startswith("<table>")
