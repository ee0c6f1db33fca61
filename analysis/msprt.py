"""The mixture sequential probability ratio test (Johari, Koomen, Pekelis, Walsh, "Always Valid
Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022), in the
two-sample normal form of stats-methods.md §2.

With Δ̂ ≈ N(Δ, v) and the mixture N(θ₀, τ²) over alternatives,

    Λ = sqrt(v / (v + τ²)) · exp(τ² (Δ̂ − θ₀)² / (2 v (v + τ²)))

and p = min(1, 1/Λ) is valid however often it is looked at (Ville's inequality); the interval
Δ̂ ± sqrt(v (v + τ²)/τ² · ln((v + τ²)/(v α²))) is the set of θ₀ the test keeps.  For the
p-value and interval to be always valid *over time*, keep the running minimum of p and the
running intersection of intervals across looks (analysis.sequences, SequentialMonitor).

τ² is given directly (`tau2`, in squared units of the metric), or through a planned total
sample size n* of both arms (GrowthBook's scale-free choice): ρ² = (−2 ln α + ln(1 − 2 ln α))/n*
and τ² = ρ² N v with N = n_a + n_b, so the interval is tightest near N = n*.
"""

from __future__ import annotations

import math
from typing import Literal

from analysis.results import InferenceResult
from analysis.stats import ArmStats


def rho2_for(n_star: float, alpha: float) -> float:
    """GrowthBook's ρ² for a planned total sample size n* (both arms together)."""
    if n_star <= 0:
        raise ValueError(f"n_star must be positive, got {n_star}")
    return (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / n_star


def effect_variance(a: ArmStats, b: ArmStats, kind: Literal["mean", "proportion"]) -> float:
    """Var(Δ̂): s²/n summed over arms (ddof 1), or p(1 − p)/n for proportions (ddof 0)."""
    if kind == "proportion":
        return a.proportion_variance / a.n + b.proportion_variance / b.n
    return a.variance / a.n + b.variance / b.n


def msprt(
    a: ArmStats,
    b: ArmStats,
    *,
    alpha: float,
    tau2: float | None = None,
    n_star: float | None = None,
    theta0: float = 0.0,
    kind: Literal["mean", "proportion"] = "mean",
) -> InferenceResult:
    """Always-valid test of H₀: Δ = θ₀ at one look.  `statistic` is the mixture likelihood
    ratio Λ.  With no variance (n < 2, or all-zero / all-one conversions) the look carries no
    information: Λ = 1, p = 1 and the interval is unbounded."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if (tau2 is None) == (n_star is None):
        raise ValueError("give exactly one of tau2 or n_star")
    if kind not in ("mean", "proportion"):
        raise ValueError(f"kind must be 'mean' or 'proportion', got {kind!r}")
    method = f"mSPRT ({kind})"
    estimate = b.mean - a.mean if a.n and b.n else math.nan
    small = a.n < 2 or b.n < 2
    v = math.nan if small else effect_variance(a, b, kind)
    if small or not v > 0:
        return InferenceResult(method, 1.0, 1.0, estimate, -math.inf, math.inf, alpha)
    if tau2 is None:
        assert n_star is not None
        tau2 = rho2_for(n_star, alpha) * (a.n + b.n) * v
    if not tau2 > 0:
        raise ValueError(f"tau2 must be positive, got {tau2}")
    log_lambda = 0.5 * math.log(v / (v + tau2)) + tau2 * (estimate - theta0) ** 2 / (
        2 * v * (v + tau2)
    )
    p = min(1.0, math.exp(-log_lambda))
    radius = math.sqrt(v * (v + tau2) / tau2 * math.log((v + tau2) / (v * alpha * alpha)))
    statistic = math.exp(log_lambda) if log_lambda < 700 else math.inf
    return InferenceResult(
        method, statistic, p, estimate, estimate - radius, estimate + radius, alpha
    )
