"""Asymptotic confidence sequences (Waudby-Smith, Arbour, Sinha, Kennedy, Ramdas, "Time-uniform
central limit theory and asymptotic confidence sequences", Ann. Statist. 2024) and the monitor
that keeps an always-valid state across looks.

For the difference of means the CS is the mSPRT interval with τ² = ρ² N v (docs/statistics.md §6:
the identities are exact), so `confidence_sequence` reuses analysis.msprt.  The relative lift
r = (ȳ_b − ȳ_a)/|ȳ_a| (ȳ_b/ȳ_a − 1 for a positive control mean) uses the delta-method variance
Var(r̂) = s_b²/(ȳ_a² n_b) + s_a² ȳ_b²/(ȳ_a⁴ n_a).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from analysis.mixture import effect_and_variance, rho2_for
from analysis.msprt import Kind, arm_variance, check_settings, look, msprt
from analysis.results import InferenceResult
from analysis.stats import ArmStats


def confidence_sequence(
    a: ArmStats,
    b: ArmStats,
    *,
    alpha: float,
    n_star: float,
    relative: bool = False,
    theta0: float = 0.0,
    kind: Kind = "mean",
) -> InferenceResult:
    """One look of the asymptotic CS for b − a (or for the relative lift b/a − 1), tightest
    near a total sample of n* units; with its always-valid p-value for H₀: effect = θ₀."""
    if not relative:
        return replace(
            msprt(a, b, alpha=alpha, n_star=n_star, theta0=theta0, kind=kind),
            method=f"confidence sequence ({kind})",
        )
    check_settings(alpha, kind)
    method = f"confidence sequence (relative lift, {kind})"
    if a.n < 2 or b.n < 2:
        return InferenceResult(method, 1.0, 1.0, math.nan, -math.inf, math.inf, alpha)
    # A zero control mean leaves the lift undefined: nan estimate, no information.
    estimate, v = (
        float(x)
        for x in effect_and_variance(
            a.mean, arm_variance(a, kind), a.n, b.mean, arm_variance(b, kind), b.n, relative=True
        )
    )
    tau2 = float(rho2_for(n_star, alpha)) * (a.n + b.n) * v if v > 0 else 1.0
    return look(method, estimate, v, tau2, theta0, alpha)


@dataclass
class SequentialMonitor:
    """The always-valid state of one comparison across looks: the running minimum of the
    p-value and the running intersection of the intervals (a p recomputed from cumulative sums
    alone is not monotone).  `to_dict`/`from_dict` let the store keep it across restarts;
    changing alpha, n_star or theta0 mid-experiment voids the guarantee, so they are fixed."""

    alpha: float
    n_star: float
    relative: bool = False
    theta0: float = 0.0
    kind: Kind = "mean"
    pvalue: float = 1.0
    low: float = -math.inf
    high: float = math.inf
    looks: int = 0

    def update(self, a: ArmStats, b: ArmStats) -> InferenceResult:
        """Take one look; returns it with the running p-value and interval."""
        look = confidence_sequence(
            a,
            b,
            alpha=self.alpha,
            n_star=self.n_star,
            relative=self.relative,
            theta0=self.theta0,
            kind=self.kind,
        )
        self.pvalue = min(self.pvalue, look.pvalue)
        self.low, self.high = max(self.low, look.ci_low), min(self.high, look.ci_high)
        self.looks += 1
        return replace(look, pvalue=self.pvalue, ci_low=self.low, ci_high=self.high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequentialMonitor:
        return cls(**data)
