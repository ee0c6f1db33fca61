"""Ratio metrics (revenue per session, clicks per impression) by the delta method: the ratio of
two per-unit sums, R = Σy/Σx, is compared as the mean of the linearised values
z = R + (y − R x)/x̄, whose variance (s_y² − 2R s_xy + R² s_x²)/x̄² is the delta-method
variance of R̂ times n (Deng, Knoblich, Lu, "Applying the Delta Method in Metric Analytics",
KDD 2018; docs/statistics.md §10).  The result is an ArmStats, so every test takes ratio
metrics unchanged."""

from __future__ import annotations

from analysis.stats import ArmStats


def ratio_arm(numerator: ArmStats, denominator: ArmStats, comoment: float) -> ArmStats:
    """One arm's ratio metric from its numerator's and denominator's per-unit statistics and
    their co-moment Σ(y − ȳ)(x − x̄) over the same units."""
    n = numerator.n
    if denominator.n != n:
        raise ValueError(
            f"numerator and denominator must cover the same units ({n:g} vs {denominator.n:g})"
        )
    if n < 1 or denominator.sum == 0:
        # No denominator (e.g. sessions not logged in this arm): the ratio is unknown, and an
        # empty arm keeps the comparison in burn-in rather than reading it as 0.
        return ArmStats(0, 0.0, 0.0)
    ratio = numerator.sum / denominator.sum
    mean_x = denominator.sum / n
    m2 = (
        numerator.centred_sum_sq - 2 * ratio * comoment + ratio * ratio * denominator.centred_sum_sq
    ) / (mean_x * mean_x)
    m2 = max(m2, 0.0)
    return ArmStats(n, n * ratio, m2 + n * ratio * ratio, m2=m2)
