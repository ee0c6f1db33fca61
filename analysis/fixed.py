"""Fixed-horizon references: Welch's t-test and the two-proportion z-test (docs/statistics.md §4).

`a` is the control arm, `b` the treatment; every effect is b − a.  These are valid for one
look only: checked repeatedly they overstate significance (see analysis.msprt).
"""

from __future__ import annotations

import math
from typing import Literal

from scipy import stats

from analysis.results import InferenceResult
from analysis.stats import ArmStats

Alternative = Literal["two-sided", "greater", "less"]


def _check(alpha: float, alternative: str) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(
            f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}"
        )


def _p_and_ci(
    z_or_t: float,
    estimate: float,
    se: float,
    alpha: float,
    alternative: str,
    dist: stats.rv_continuous | stats.rv_frozen,
) -> tuple[float, float, float]:
    if alternative == "two-sided":
        p = 2 * dist.sf(abs(z_or_t))
        q = dist.ppf(1 - alpha / 2)
        return p, estimate - q * se, estimate + q * se
    q = dist.ppf(1 - alpha)
    if alternative == "greater":
        return dist.sf(z_or_t), estimate - q * se, math.inf
    return dist.cdf(z_or_t), -math.inf, estimate + q * se


def welch_ttest(
    a: ArmStats,
    b: ArmStats,
    *,
    theta0: float = 0.0,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
) -> InferenceResult:
    """Welch's unequal-variance t-test of H₀: mean(b) − mean(a) = theta0.  With zero variance in
    both arms the statistic and p-value are nan (0/0), as in scipy."""
    _check(alpha, alternative)
    if a.n < 2 or b.n < 2:
        raise ValueError(f"each arm needs at least 2 units, got {a.n:g} and {b.n:g}")
    va, vb = a.variance / a.n, b.variance / b.n
    v = va + vb
    estimate = b.mean - a.mean
    if v == 0:
        return InferenceResult(
            "Welch t-test", math.nan, math.nan, estimate, math.nan, math.nan, alpha
        )
    se = math.sqrt(v)
    t = (estimate - theta0) / se
    df = v * v / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    p, low, high = _p_and_ci(t, estimate, se, alpha, alternative, stats.t(df))
    return InferenceResult("Welch t-test", t, float(p), estimate, low, high, alpha)


def proportions_ztest(
    a: ArmStats,
    b: ArmStats,
    *,
    pooled: bool,
    theta0: float = 0.0,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
) -> InferenceResult:
    """Two-proportion z-test of H₀: p_b − p_a = theta0, where `sum` counts converted units.

    pooled=True is the classical test (equal to the 2×2 χ² without continuity correction; it
    needs theta0 = 0); pooled=False is the Wald test that spotify-confidence and gbstats use.
    The interval is Wald's (unpooled standard error) either way."""
    _check(alpha, alternative)
    if a.n < 1 or b.n < 1:
        raise ValueError(f"each arm needs at least 1 unit, got {a.n:g} and {b.n:g}")
    if pooled and theta0 != 0:
        raise ValueError("the pooled test assumes equal proportions: use pooled=False for theta0")
    for name, arm in (("a", a), ("b", b)):
        if not 0 <= arm.sum <= arm.n:
            raise ValueError(f"{name}: sum ({arm.sum:g}) must count converted units of n")
    pa, pb = a.mean, b.mean
    estimate = pb - pa
    se_wald = math.sqrt(pa * (1 - pa) / a.n + pb * (1 - pb) / b.n)
    if pooled:
        p_bar = (a.sum + b.sum) / (a.n + b.n)
        se_test = math.sqrt(p_bar * (1 - p_bar) * (1 / a.n + 1 / b.n))
    else:
        se_test = se_wald
    method = f"two-proportion z-test ({'pooled' if pooled else 'unpooled'})"
    if se_test == 0:  # all-zero or all-one conversions: 0/0
        return InferenceResult(method, math.nan, math.nan, estimate, math.nan, math.nan, alpha)
    z = (estimate - theta0) / se_test
    p, _, _ = _p_and_ci(z, estimate, se_test, alpha, alternative, stats.norm)
    _, low, high = _p_and_ci(z, estimate, se_wald, alpha, alternative, stats.norm)
    return InferenceResult(method, z, float(p), estimate, low, high, alpha)
