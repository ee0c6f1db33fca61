"""CUPED (Deng, Xu, Kohavi, Walker, WSDM 2013) with one θ pooled over both arms
(docs/statistics.md §9): θ = Cov(Y, X)/Var(X) over the units of both arms,
ȳ_cv = ȳ − θ (x̄_k − x̄), Var = s²_Y + θ² s²_X − 2θ s_XY per arm (θ treated as fixed).

`cuped(a, b)` returns the two arms as ArmStats of the adjusted values y − θ(x − x̄), so every
test (Welch, mSPRT, confidence sequences) takes them unchanged.  A separate θ per arm would
bias the effect; users without pre-period data have x = 0.
"""

from __future__ import annotations

import math

from analysis.stats import ArmStats


def pooled_theta(a: ArmStats, b: ArmStats) -> float:
    """θ over the union of both arms' units; 0 when the covariate does not vary.  The pooled
    co-moments are the arms' centred ones plus the between-arm term (Chan et al.'s merge), so
    large covariate means do not cancel."""
    n = a.n + b.n
    dx = a.sum_x / a.n - b.sum_x / b.n
    dy = a.mean - b.mean
    between = a.n * b.n / n
    s_xx = a.centred_sum_x2 + b.centred_sum_x2 + between * dx * dx
    s_xy = a.centred_sum_xy + b.centred_sum_xy + between * dx * dy
    return s_xy / s_xx if s_xx > 0 else 0.0


def _adjusted(arm: ArmStats, theta: float, mean_x: float) -> ArmStats:
    n = arm.n
    mean = arm.mean - theta * (arm.sum_x / n - mean_x)
    s_xx, s_xy = arm.centred_sum_x2, arm.centred_sum_xy
    m2 = max(arm.centred_sum_sq + theta * theta * s_xx - 2 * theta * s_xy, 0.0)
    total = mean * n
    return ArmStats(n, total, m2 + total * total / n, m2=m2)


def cuped(a: ArmStats, b: ArmStats) -> tuple[ArmStats, ArmStats]:
    """Both arms adjusted by the pooled θ (for the effect and its variance)."""
    if a.n < 2 or b.n < 2:
        raise ValueError(f"each arm needs at least 2 units, got {a.n:g} and {b.n:g}")
    theta = pooled_theta(a, b)
    mean_x = (a.sum_x + b.sum_x) / (a.n + b.n)
    if not math.isfinite(theta):
        return a, b
    return _adjusted(a, theta, mean_x), _adjusted(b, theta, mean_x)
