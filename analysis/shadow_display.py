"""What a person reads next to the shadow phase's verdict, never gated: PSI, the Kolmogorov
statistic and the Wasserstein-1 distance of the two arms' score histograms, each arm's mean
and quantiles, and each arm's mean latency.  All come from experiments.shadow_sums, so they carry
the binning error of its BINS bins over score_range: the Kolmogorov statistic is exact at the
edges (off by at most one bin's mass between them), Wasserstein-1 and the quantiles by at most
a bin's width for scores inside the range.  Scores outside the range sit in the two outer
bins, placed at the range's ends.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analysis.shadow_cs import cdf_gaps
from experiments.shadow_sums import BINS, ShadowSums

Array = NDArray[np.float64]
PSI_GROUPS = 10
PSI_EPSILON = 1e-4  # floor on a group's share: an empty group would make PSI infinite
QUANTILES = (0.1, 0.5, 0.9)


def support(sums: ShadowSums) -> Array:
    """Where each bin's scores are taken to be: the bin's midpoint, the range's ends outside."""
    width = (sums.high - sums.low) / BINS
    mids = sums.low + (np.arange(BINS) + 0.5) * width
    return np.concatenate(([sums.low], mids, [sums.high]))


def psi(stable: Array, candidate: Array, groups: int = PSI_GROUPS) -> float:
    """Population stability index Σ (c − s) ln(c/s) over ~`groups` groups of bins holding about
    equal shares of the stable arm (the usual deciles; bins too heavy to split make fewer)."""
    s_cum = np.cumsum(stable) / stable.sum()
    # Group g takes the bins whose cumulative stable share falls in ((g − 1)/G, g/G].
    group = np.minimum(np.ceil(s_cum * groups - 1e-9), groups).astype(int)
    s = np.bincount(group, weights=stable, minlength=groups + 1) / stable.sum()
    c = np.bincount(group, weights=candidate, minlength=groups + 1) / candidate.sum()
    used = (s > 0) | (c > 0)
    s, c = np.maximum(s[used], PSI_EPSILON), np.maximum(c[used], PSI_EPSILON)
    return float(np.sum((c - s) * np.log(c / s)))


def wasserstein(stable: Array, candidate: Array, points: Array) -> float:
    """W₁ = ∫ |F_s − F_c| of the two histograms placed at `points`."""
    gap = np.abs(np.cumsum(stable) / stable.sum() - np.cumsum(candidate) / candidate.sum())
    return float(np.sum(gap[:-1] * np.diff(points)))


def quantile(hist: Array, sums: ShadowSums, q: float) -> float:
    """The q-quantile, linear inside the bin where the cumulative count crosses q·n."""
    cum = np.cumsum(hist)
    k = int(np.searchsorted(cum, q * cum[-1], side="left"))
    if k == 0 or k == BINS + 1:  # an outer bin: its scores' spread is unknown
        return sums.low if k == 0 else sums.high
    below = cum[k - 1]
    width = (sums.high - sums.low) / BINS
    return float(sums.low + (k - 1 + (q * cum[-1] - below) / hist[k]) * width)


def display_measures(sums: ShadowSums) -> dict[str, Any]:
    """The display block of the verdict; measures without data are None."""
    out: dict[str, Any] = {"psi": None, "ks": None, "wasserstein": None}
    arms: dict[str, dict[str, Any]] = {}
    hists = {arm: np.asarray(sums.hist.get(arm, [0] * (BINS + 2)), float) for arm in
             ("stable", "candidate")}  # fmt: skip
    scored = sums.scored > 0 and all(h.sum() > 0 for h in hists.values())
    if scored:
        s, c = hists["stable"], hists["candidate"]
        out["psi"] = psi(s, c)
        out["ks"] = float(cdf_gaps(s, c)[0])
        out["wasserstein"] = wasserstein(s, c, support(sums))
    means = {"stable": sums.sum_stable, "candidate": sums.sum_stable + sums.sum_d}
    for arm, hist in hists.items():
        n, total, _ = sums.latency.get(arm, [0.0, 0.0, 0.0])
        arms[arm] = {
            "mean": means[arm] / sums.scored if sums.scored else None,
            "quantiles": {
                f"p{round(q * 100)}": quantile(hist, sums, q) if scored else None for q in QUANTILES
            },
            "latency_ms_mean": total / n if n else None,
            "latency_n": int(n),
        }
    out["arms"] = arms
    return {k: _finite(v) for k, v in out.items()}


def _finite(value: Any) -> Any:
    """JSON has no inf or nan: those become None, in nested dicts too."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
