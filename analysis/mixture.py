"""The normal-mixture kernel shared by the mSPRT, the confidence sequences and `decide`,
written on numpy arrays so that one call serves one comparison or a thousand.

With Δ̂ ≈ N(Δ, v) and a N(θ₀, τ²) mixture over the alternatives (docs/statistics.md §5):

    ln Λ = ½ ln(v/(v + τ²)) + τ² (Δ̂ − θ₀)² / (2 v (v + τ²))
    radius = sqrt(v (v + τ²)/τ² · ln((v + τ²)/(v α²)))

p = min(1, 1/Λ).  Where v is not positive or not finite the look carries no information:
ln Λ = 0 (p = 1) and the radius is infinite.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def rho2_for(n_star: ArrayLike, alpha: ArrayLike) -> Array:
    """GrowthBook's ρ² for a planned total sample size n* (both arms together)."""
    n, a = np.asarray(n_star, dtype=float), np.asarray(alpha, dtype=float)
    if np.any(n <= 0):
        raise ValueError(f"n_star must be positive, got {n_star!r}")
    rho2: Array = (-2 * np.log(a) + np.log(1 - 2 * np.log(a))) / n
    return rho2


def effect_and_variance(
    mean_a: ArrayLike,
    var_a: ArrayLike,
    n_a: ArrayLike,
    mean_b: ArrayLike,
    var_b: ArrayLike,
    n_b: ArrayLike,
    *,
    relative: bool,
) -> tuple[Array, Array]:
    """Δ̂ = ȳ_b − ȳ_a with v = s_a²/n_a + s_b²/n_b, or the lift (ȳ_b − ȳ_a)/|ȳ_a| (= ȳ_b/ȳ_a − 1
    for a positive control mean; the absolute value keeps "up is up" when the control mean is
    negative) with the delta-method v = s_b²/(ȳ_a² n_b) + s_a² ȳ_b²/(ȳ_a⁴ n_a) (nan where
    ȳ_a = 0)."""
    ma, va, na = (np.asarray(x, dtype=float) for x in (mean_a, var_a, n_a))
    mb, vb, nb = (np.asarray(x, dtype=float) for x in (mean_b, var_b, n_b))
    with np.errstate(all="ignore"):
        if not relative:
            return mb - ma, va / na + vb / nb
        safe = np.where(ma == 0, np.nan, ma)
        return (mb - ma) / np.abs(safe), vb / (safe**2 * nb) + va * mb**2 / (safe**4 * na)


def mixture(
    estimate: ArrayLike, v: ArrayLike, tau2: ArrayLike, theta0: ArrayLike, alpha: ArrayLike
) -> tuple[Array, Array]:
    """(ln Λ, radius) of the mixture test at each look."""
    est, var, t2 = (np.asarray(x, dtype=float) for x in (estimate, v, tau2))
    level = np.asarray(alpha, dtype=float)
    with np.errstate(all="ignore"):
        total = var + t2
        log_lambda = 0.5 * np.log(var / total) + t2 * (est - theta0) ** 2 / (2 * var * total)
        radius = np.sqrt(var * total / t2 * np.log(total / (var * level * level)))
    # Comparisons with nan are False, so this is "v and τ² positive, v and Δ̂ finite".
    informative = (var > 0) & (var < np.inf) & (t2 > 0) & (np.abs(est) < np.inf)
    informative &= ~(np.isnan(log_lambda) | np.isnan(radius))  # v so small that 0/0 arose
    if informative.all():
        return log_lambda, radius
    return np.where(informative, log_lambda, 0.0), np.where(informative, radius, np.inf)


def pvalue_of(log_lambda: Array) -> Array:
    """p = min(1, 1/Λ), computed in logs so a huge Λ gives 0, not an overflow."""
    with np.errstate(over="ignore"):
        return np.minimum(1.0, np.exp(-log_lambda))
