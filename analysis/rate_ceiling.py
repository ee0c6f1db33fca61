"""Is the candidate's share of bad requests (5xx, or slower than a bound) over an absolute
ceiling?  The one-sample companion of analysis.rate_ratio: anytime-valid, so a controller may
read it every tick.  "p99 ≤ 1 s" is the same ceiling as "at most 1 % of requests over 1 s",
which Envoy's and Istio's histograms count exactly at a bucket bound, with no interpolation.

With X events in N requests (Bernoulli, p the event share), the likelihood ratio of p against
the ceiling p₀ is (p/p₀)^X ((1 − p)/(1 − p₀))^(N − X); its mixture over a discrete prior on
logit(p) − logit(p₀) > 0 is a test supermartingale under any p ≤ p₀ (each ratio is monotone
in X), so Ville's inequality keeps the chance of ever reaching 1/α under α (docs/statistics.md
§16).  The ratio depends on the totals only, so the state is (X, N) and the running minimum p.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analysis.rate_ratio import GRID, LOG_PRIOR


def log_bayes_factor(events: ArrayLike, requests: ArrayLike, ceiling: float) -> NDArray[np.float64]:
    """log of the mixture Bayes factor for a share over `ceiling` after `events` of
    `requests` (arrays: one factor per element, as the benchmark replays many runs)."""
    logit0 = math.log(ceiling / (1 - ceiling))
    p = 1.0 / (1.0 + np.exp(-(logit0 + GRID)))
    x = np.asarray(events, dtype=np.float64)[..., None]
    n = np.asarray(requests, dtype=np.float64)[..., None]
    log_lr = x * np.log(p / ceiling) + (n - x) * (np.log1p(-p) - math.log1p(-ceiling))
    out = np.logaddexp.reduce(LOG_PRIOR + log_lr, axis=-1)
    return np.asarray(np.where(n[..., 0] > 0, out, 0.0), dtype=np.float64)


@dataclass
class RateCeilingTest:
    ceiling: float  # p₀, in (0, 1)
    requests: float = 0.0
    events: float = 0.0
    pvalue: float = 1.0

    def update(self, requests: float, events: float) -> None:
        """Add one tick's increments (events capped at the requests)."""
        self.requests += max(requests, 0.0)
        self.events += min(max(events, 0.0), max(requests, 0.0))
        bf = float(log_bayes_factor(self.events, self.requests, self.ceiling))
        # Evidence against harm (a negative log factor) bounds p by 1, which it already is;
        # exp of its negation would overflow once the counts are large.
        self.pvalue = min(self.pvalue, math.exp(-min(max(bf, 0.0), 700.0)))

    @property
    def share(self) -> float | None:
        return self.events / self.requests if self.requests > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"ceiling": self.ceiling, "requests": self.requests, "events": self.events,
                "pvalue": self.pvalue}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateCeilingTest:
        return cls(float(data["ceiling"]), float(data["requests"]), float(data["events"]),
                   float(data["pvalue"]))  # fmt: skip
