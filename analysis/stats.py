"""Per-arm sufficient statistics: everything the tests need, without raw rows.

`ArmStats` holds, over an arm's units, `n`, `sum`, `sum_sq` and optionally the CUPED covariate
sums.  Variances are taken from `m2 = Σ(y − ȳ)²` when the store supplies it (computed stably
there, see experiments/folding.py); `sum_sq − sum²/n` cancels catastrophically for large
means (docs/statistics.md §3), so it is only the fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ArmStats:
    n: float
    sum: float
    sum_sq: float
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0
    m2: float | None = None  # Σ(y − ȳ)², if known stably
    m2_x: float | None = None  # Σ(x − x̄)², likewise
    c_xy: float | None = None  # Σ(x − x̄)(y − ȳ), likewise

    def __post_init__(self) -> None:
        for name in ("n", "sum", "sum_sq", "sum_x", "sum_x2", "sum_xy"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if self.n < 0:
            raise ValueError(f"n must not be negative, got {self.n}")
        if self.sum_sq < 0:
            raise ValueError(f"sum_sq must not be negative, got {self.sum_sq}")

    @property
    def mean(self) -> float:
        """ȳ; nan for an empty arm (0/0 has no mean)."""
        return self.sum / self.n if self.n else math.nan

    @property
    def centred_sum_sq(self) -> float:
        """Σ(y − ȳ)²: `m2` if given, else from the power sums (clipped at 0)."""
        if self.m2 is not None:
            return self.m2
        if not self.n:
            return 0.0
        return max(self.sum_sq - self.sum * self.sum / self.n, 0.0)

    @property
    def centred_sum_x2(self) -> float:
        """Σ(x − x̄)²: `m2_x` if given, else from the power sums (clipped at 0)."""
        if self.m2_x is not None:
            return self.m2_x
        return max(self.sum_x2 - self.sum_x * self.sum_x / self.n, 0.0) if self.n else 0.0

    @property
    def centred_sum_xy(self) -> float:
        """Σ(x − x̄)(y − ȳ): `c_xy` if given, else from the power sums."""
        if self.c_xy is not None:
            return self.c_xy
        return self.sum_xy - self.sum_x * self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance s² (ddof 1); nan below two units."""
        return self.centred_sum_sq / (self.n - 1) if self.n > 1 else math.nan

    @property
    def proportion_variance(self) -> float:
        """p̂(1 − p̂) (ddof 0), for conversion data where `sum` counts converted units."""
        p = self.mean
        return p * (1.0 - p)
