"""Sample ratio mismatch: are the arms' unit counts what the weights promise?  Pearson's χ²
(stats-methods.md §5); abmesh flags p < 0.001.  Count assigned units, not events."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

SRM_ALPHA = 0.001


@dataclass(frozen=True, slots=True)
class SRMResult:
    statistic: float
    pvalue: float
    df: int
    observed: tuple[float, ...]
    expected: tuple[float, ...]

    @property
    def mismatch(self) -> bool:
        return self.pvalue < SRM_ALPHA

    def summary(self) -> str:
        shares = ", ".join(
            f"{o:g} (expected {e:.1f})" for o, e in zip(self.observed, self.expected, strict=True)
        )
        verdict = "MISMATCH" if self.mismatch else "ok"
        return (
            f"SRM chi-square {self.statistic:.4g}, df {self.df}, p {self.pvalue:.4g}: "
            f"{verdict}; units {shares}"
        )


def srm_test(counts: Sequence[float], weights: Sequence[float]) -> SRMResult:
    """Pearson χ² of observed unit counts against the weights (any positive scale)."""
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("counts and weights need the same length, at least 2")
    if any(c < 0 or not math.isfinite(c) for c in counts):
        raise ValueError(f"counts must be finite and non-negative, got {list(counts)}")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    total, weight_sum = sum(counts), sum(weights)
    pairs = [(c, total * w / weight_sum) for c, w in zip(counts, weights, strict=True)]
    if any(e == 0 and c > 0 for c, e in pairs):  # units in an arm weighted 0: certain mismatch
        return SRMResult(math.inf, 0.0, len(pairs) - 1, tuple(counts), tuple(e for _, e in pairs))
    kept = [(c, e) for c, e in pairs if e > 0]
    statistic = sum((c - e) ** 2 / e for c, e in kept) if total else 0.0
    df = len(kept) - 1
    pvalue = float(stats.chi2.sf(statistic, df)) if df > 0 else 1.0
    return SRMResult(statistic, pvalue, df, tuple(counts), tuple(e for _, e in pairs))
