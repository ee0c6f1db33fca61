"""Sample ratio mismatch: are the arms' unit counts what the weights promise?  Pearson's χ²
for one look, and the sequential Dirichlet–multinomial test for continuous monitoring
(docs/statistics.md §8); abmesh flags p < 0.001.  Count assigned units, not events."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

Array = NDArray[np.float64]

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

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.summary())}</p>"


def planned_arms(
    counts: Sequence[float], weights: Sequence[float]
) -> tuple[tuple[float, ...], tuple[list[float], list[float]] | None]:
    """After checking the inputs: the expected count of every arm, and the observed counts and
    planned shares θ of the arms with weight — or None when units sit in an arm weighted 0,
    which is a certain mismatch."""
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("counts and weights need the same length, at least 2")
    if not all(c >= 0 and math.isfinite(c) for c in counts):
        raise ValueError(f"counts must be finite and non-negative, got {list(counts)}")
    weight_sum = sum(weights)
    if not (all(w >= 0 and math.isfinite(w) for w in weights) and weight_sum > 0):
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    total = sum(counts)
    expected = tuple(total * w / weight_sum for w in weights)
    if any(c > 0 and w == 0 for c, w in zip(counts, weights, strict=True)):
        return expected, None
    kept = [(c, w / weight_sum) for c, w in zip(counts, weights, strict=True) if w > 0]
    return expected, ([c for c, _ in kept], [t for _, t in kept])


def srm_test(counts: Sequence[float], weights: Sequence[float]) -> SRMResult:
    """Pearson χ² of observed unit counts against the weights (any positive scale)."""
    expected, arms = planned_arms(counts, weights)
    if arms is None:
        return SRMResult(math.inf, 0.0, len(counts) - 1, tuple(counts), expected)
    statistic, pvalue, _ = srm_arrays([arms[0]], [arms[1]])
    return SRMResult(
        float(statistic[0]), float(pvalue[0]), len(arms[0]) - 1, tuple(counts), expected
    )


def srm_arrays(counts: ArrayLike, theta: ArrayLike, k: float = 100.0) -> tuple[Array, Array, Array]:
    """For m count vectors at once (rows of `counts`; rows of `theta` positive, summing to 1):
    Pearson's χ², its p-value with arms − 1 degrees of freedom, and the log Bayes factor of
    the sequential test, ln BF = ln B(kθ + c) − ln B(kθ) − Σ cᵢ ln θᵢ."""
    c, th = np.asarray(counts, dtype=float), np.asarray(theta, dtype=float)
    n = c.sum(axis=1)
    expected = n[:, None] * th
    with np.errstate(all="ignore"):
        chi2 = np.where(n > 0, ((c - expected) ** 2 / expected).sum(axis=1), 0.0)
    arms = c.shape[1]
    # chdtrc is the χ² survival function as a plain ufunc (stats.chi2.sf costs ~50× more).
    pvalue = (
        np.where(chi2 > 0, special.chdtrc(max(arms - 1, 1), chi2), 1.0)
        if arms > 1
        else np.ones(len(c))
    )
    prior = k * th
    log_bf = (
        special.gammaln(prior + c).sum(axis=1) - special.gammaln(k + n)
        - special.gammaln(prior).sum(axis=1) + special.gammaln(k)
        - (c * np.log(th)).sum(axis=1)
    )  # fmt: skip
    return chi2, pvalue, log_bf


@dataclass(frozen=True, slots=True)
class SequentialSRMResult:
    """One look of the sequential SRM test: the Bayes factor against the planned ratio and its
    always-valid p-value (the running minimum when `previous_pvalue` is passed)."""

    statistic: float  # the Bayes factor BF_n (inf if it overflows)
    log_bayes_factor: float
    pvalue: float
    observed: tuple[float, ...]
    expected: tuple[float, ...]
    concentration: float

    @property
    def mismatch(self) -> bool:
        return self.pvalue < SRM_ALPHA

    def summary(self) -> str:
        verdict = "MISMATCH" if self.mismatch else "ok"
        return (
            f"sequential SRM Bayes factor {self.statistic:.4g}, p {self.pvalue:.4g}: {verdict}; "
            f"units {', '.join(f'{o:g}' for o in self.observed)}"
        )

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.summary())}</p>"


def sequential_srm(
    counts: Sequence[float],
    weights: Sequence[float],
    *,
    k: float = 100.0,
    previous_pvalue: float = 1.0,
) -> SequentialSRMResult:
    """Lindon & Malek's anytime-valid multinomial test (NeurIPS 2022) of the unit counts
    against the weights: a Dirichlet(k·θ₀) mixture over the alternatives,
    BF = [B(kθ₀ + c)/B(kθ₀)] / Π θ₀ᵢ^cᵢ, and p = min(previous p, 1/BF).  `k` is the prior's
    concentration (savvi's default 100; Optimizely's ssrm-test uses 10,000, which reacts
    later to small imbalances).  Units in an arm weighted 0 are a certain mismatch."""
    expected, arms = planned_arms(counts, weights)
    if not k > 0 or not math.isfinite(k):
        raise ValueError(f"k must be a positive number, got {k}")
    if not 0 <= previous_pvalue <= 1:
        raise ValueError(f"previous_pvalue must lie in [0, 1], got {previous_pvalue}")
    observed = tuple(counts)
    if arms is None:
        return SequentialSRMResult(math.inf, math.inf, 0.0, observed, expected, k)
    _, _, log_bfs = srm_arrays([arms[0]], [arms[1]], k)
    log_bf = float(log_bfs[0])
    pvalue = min(previous_pvalue, 1.0, math.exp(-log_bf) if log_bf > -700 else 1.0)
    statistic = math.exp(log_bf) if log_bf < 700 else math.inf
    return SequentialSRMResult(statistic, log_bf, pvalue, observed, expected, k)
