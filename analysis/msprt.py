"""The mixture sequential probability ratio test (Johari, Koomen, Pekelis, Walsh, "Always Valid
Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022), in the
two-sample normal form of docs/statistics.md §5 (the kernel is analysis.mixture).

p = min(1, 1/Λ) is valid however often it is looked at (Ville's inequality), and the interval
Δ̂ ± radius is the set of θ₀ the test keeps.  For the p-value and interval to be always valid
*over time*, keep the running minimum of p and the running intersection of intervals across
looks (analysis.sequences, SequentialMonitor).

τ² is given directly (`tau2`, in squared units of the metric), or through a planned total
sample size n* of both arms (GrowthBook's scale-free choice): ρ² = (−2 ln α + ln(1 − 2 ln α))/n*
and τ² = ρ² N v with N = n_a + n_b, so the interval is tightest near N = n*.
"""

from __future__ import annotations

import math
from typing import Literal

from analysis.mixture import mixture, rho2_for
from analysis.results import InferenceResult
from analysis.stats import ArmStats

Kind = Literal["mean", "proportion"]


def arm_variance(arm: ArmStats, kind: Kind) -> float:
    """s² (ddof 1) for means, p̂(1 − p̂) (ddof 0) for conversions."""
    return arm.proportion_variance if kind == "proportion" else arm.variance


def effect_variance(a: ArmStats, b: ArmStats, kind: Kind) -> float:
    """Var(Δ̂): the arms' variances over their sizes."""
    return arm_variance(a, kind) / a.n + arm_variance(b, kind) / b.n


def check_settings(alpha: float, kind: str) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if kind not in ("mean", "proportion"):
        raise ValueError(f"kind must be 'mean' or 'proportion', got {kind!r}")


def look(
    method: str, estimate: float, v: float, tau2: float, theta0: float, alpha: float
) -> InferenceResult:
    """One look of the mixture test as a result; statistic Λ (inf past overflow)."""
    log_lambda, radius = (float(x) for x in mixture(estimate, v, tau2, theta0, alpha))
    bounded = math.isfinite(radius) and math.isfinite(estimate)
    return InferenceResult(
        method,
        math.exp(log_lambda) if log_lambda < 700 else math.inf,
        min(1.0, math.exp(-log_lambda)),
        estimate,
        estimate - radius if bounded else -math.inf,
        estimate + radius if bounded else math.inf,
        alpha,
    )


def msprt(
    a: ArmStats,
    b: ArmStats,
    *,
    alpha: float,
    tau2: float | None = None,
    n_star: float | None = None,
    theta0: float = 0.0,
    kind: Kind = "mean",
) -> InferenceResult:
    """Always-valid test of H₀: Δ = θ₀ at one look.  `statistic` is the mixture likelihood
    ratio Λ.  With no variance (n < 2, or all-zero / all-one conversions) the look carries no
    information: Λ = 1, p = 1 and the interval is unbounded."""
    check_settings(alpha, kind)
    if (tau2 is None) == (n_star is None):
        raise ValueError("give exactly one of tau2 or n_star")
    if tau2 is not None and not tau2 > 0:
        raise ValueError(f"tau2 must be positive, got {tau2}")
    method = f"mSPRT ({kind})"
    estimate = b.mean - a.mean if a.n and b.n else math.nan
    v = math.nan if a.n < 2 or b.n < 2 else effect_variance(a, b, kind)
    if tau2 is None:
        assert n_star is not None
        tau2 = float(rho2_for(n_star, alpha)) * (a.n + b.n) * v if v > 0 else 1.0
    return look(method, estimate, v, tau2, theta0, alpha)
