"""Fixed-horizon sample size and power (docs/statistics.md §13), two-sided, per arm.

Means: n/arm = (z₁₋α/₂ + z₁₋β)² (σ_a² + σ_b²)/δ² with allocation `ratio` = n_b/n_a handled as
σ_a² + σ_b²/ratio.  Proportions: the classic pooled-null form,
n_a = (z₁₋α/₂ √(p̄(1−p̄)(1 + 1/r)) + z₁₋β √(p_a(1−p_a) + p_b(1−p_b)/r))²/(p_b − p_a)².
Both count only the near rejection tail (the far one adds ~1e-6 of power), and are rounded up.
Sequential designs need more units at their maximum; for mSPRT and confidence sequences the
expected stopping time under the alternative is the figure to plan with (see the benchmark).
"""

from __future__ import annotations

import math

from scipy import stats


def _z(alpha: float, power: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    return float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))


def sample_size(
    *,
    mde: float,
    sd: float | None = None,
    sd_b: float | None = None,
    baseline: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> int:
    """Units in the control arm (the treatment gets `ratio` times as many) to detect an
    absolute effect `mde`: for means give `sd` (and `sd_b` if it differs); for proportions
    give the control rate `baseline`."""
    if mde == 0 or not math.isfinite(mde):
        raise ValueError(f"mde must be a non-zero number, got {mde}")
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    za, zb = _z(alpha, power)
    if (sd is None) == (baseline is None):
        raise ValueError("give sd (means) or baseline (proportions), not both")
    if sd is not None:
        var_b = (sd if sd_b is None else sd_b) ** 2
        n = (za + zb) ** 2 * (sd * sd + var_b / ratio) / (mde * mde)
    else:
        assert baseline is not None
        pa, pb = baseline, baseline + mde
        if not (0 < pa < 1 and 0 < pb < 1):
            raise ValueError(f"baseline and baseline + mde must be rates in (0, 1): {pa}, {pb}")
        p_bar = (pa + ratio * pb) / (1 + ratio)
        n = (
            za * math.sqrt(p_bar * (1 - p_bar) * (1 + 1 / ratio))
            + zb * math.sqrt(pa * (1 - pa) + pb * (1 - pb) / ratio)
        ) ** 2 / (mde * mde)
    return math.ceil(n - 1e-9)


def power(
    *,
    n: float,
    mde: float,
    sd: float,
    sd_b: float | None = None,
    alpha: float = 0.05,
    ratio: float = 1.0,
) -> float:
    """Power of the two-sided fixed-horizon test of means with n control units."""
    za, _ = _z(alpha, 0.5)
    var_b = (sd if sd_b is None else sd_b) ** 2
    se = math.sqrt(sd * sd / n + var_b / (ratio * n))
    shift = abs(mde) / se
    return float(stats.norm.sf(za - shift) + stats.norm.cdf(-za - shift))
