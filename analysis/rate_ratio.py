"""Is the candidate's event rate (errors, requests slower than a bound) worse than the stable
arm's?  An anytime-valid test on counts read tick by tick, so a controller may look every few
seconds and still roll back a healthy candidate with probability at most α.

The test follows Lindon, Sanden and Shirikian, "Rapid Regression Detection in Software
Deployments through Sequential Testing" (KDD 2022, arXiv 2205.14762), for counts: with events
Poisson in each arm's requests, conditional on a tick's total events m_t the candidate's share
is Binomial(m_t, θ_t(δ)), θ_t(δ) = ρ_t δ / (ρ_t δ + 1 − ρ_t), where δ = r_B / r_A is the rate
ratio and ρ_t the candidate's share of the tick's requests (so a step that moves traffic, or
host noise that lifts both arms' rates alike, changes nothing).  Against δ₀ = 1 + tolerance the
log likelihood ratio of one tick simplifies to

    x_B,t · log(δ/δ₀) − m_t · log((ρ_t δ + 1 − ρ_t) / (ρ_t δ₀ + 1 − ρ_t)),

and the Bayes factor is its mixture over a discrete prior on log(δ/δ₀) > 0 (one-sided: only a
worse candidate is rolled back).  For every δ ≥ δ₀ the ratio is a nonnegative supermartingale
under any δ_true ≤ δ₀, so the mixture is too, and Ville's inequality bounds the chance it ever
reaches 1/α by α (docs/statistics.md §15).  The always-valid p-value is the running minimum of
1/BF.  Several event kinds (latency above several bucket bounds) are combined by the mean of
their Bayes factors, itself a test supermartingale whatever their dependence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The prior on u = log(δ/δ₀): half-normal with scale 2 (most mass on δ up to e⁴ ≈ 55 × δ₀),
# on a grid of midpoints.  A discrete prior makes the mixture exact, not an approximation.
PRIOR_SCALE = 2.0
GRID: NDArray[np.float64] = (np.arange(48, dtype=np.float64) + 0.5) * (8.0 / 48)
_DENSITY = -0.5 * (GRID / PRIOR_SCALE) ** 2
LOG_PRIOR = _DENSITY - np.log(np.exp(_DENSITY).sum())


def tick_log_lr(
    u: NDArray[np.float64], delta0: float, x_b: ArrayLike, m: ArrayLike, rho: ArrayLike
) -> NDArray[np.float64]:
    """One tick's log likelihood ratio at each δ = δ₀·e^u against δ₀ (module docstring).
    `x_b`, `m`, `rho` may be arrays (many runs at once, as the benchmark replays them): the
    result has their shape plus the grid's.  A tick without events, or with one arm without
    requests, carries no evidence (0)."""
    x, n, r = (np.asarray(a, dtype=np.float64)[..., None] for a in (x_b, m, rho))
    ok = (n > 0) & (r > 0) & (r < 1)
    r = np.where(ok, r, 0.5)
    delta = delta0 * np.exp(u)
    out = x * u - n * (np.log(r * delta + 1 - r) - np.log(r * delta0 + 1 - r))
    return np.asarray(np.where(ok, out, 0.0), dtype=np.float64).reshape(np.broadcast(x, u).shape)


def _log_mixture(log_lr: NDArray[np.float64]) -> float:
    """log of the prior-weighted mean of the likelihood ratios on the grid."""
    return float(np.logaddexp.reduce(LOG_PRIOR + log_lr))


@dataclass
class Arm:
    requests: float = 0.0
    events: dict[str, float] = field(default_factory=dict)


@dataclass
class RateRatioTest:
    """Counts since the test began and the log likelihood ratio per event kind on the grid."""

    tolerance: float  # δ₀ = 1 + tolerance
    candidate: Arm = field(default_factory=Arm)
    stable: Arm = field(default_factory=Arm)
    log_lr: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    pvalue: float = 1.0

    @property
    def delta0(self) -> float:
        return 1.0 + self.tolerance

    def update(
        self,
        candidate: tuple[float, Mapping[str, float]],
        stable: tuple[float, Mapping[str, float]],
    ) -> None:
        """Add one tick's increments: (requests, {event kind: events}) per arm.  Events are
        capped at the arm's requests (two counters read a moment apart can disagree)."""
        n_b, n_a = candidate[0], stable[0]
        rho = n_b / (n_a + n_b) if n_a + n_b > 0 else 0.0
        for kind in sorted(set(candidate[1]) | set(stable[1])):
            x_b = min(candidate[1].get(kind, 0.0), n_b)
            x_a = min(stable[1].get(kind, 0.0), n_a)
            old = self.log_lr.get(kind, np.zeros(GRID.shape))
            self.log_lr[kind] = old + tick_log_lr(GRID, self.delta0, x_b, x_a + x_b, rho)
            self.candidate.events[kind] = self.candidate.events.get(kind, 0.0) + x_b
            self.stable.events[kind] = self.stable.events.get(kind, 0.0) + x_a
        self.candidate.requests += n_b
        self.stable.requests += n_a
        self.pvalue = min(self.pvalue, math.exp(-min(self.log_bf, 700.0)))

    @property
    def log_bf(self) -> float:
        """log of the mean over event kinds of each kind's mixture Bayes factor."""
        if not self.log_lr:
            return 0.0
        each = [_log_mixture(v) for v in self.log_lr.values()]
        return float(np.logaddexp.reduce(each)) - math.log(len(each))

    def ratio(self, kind: str) -> float | None:
        """The observed rate ratio r_B / r_A of one event kind (None while undefined)."""
        n_a, n_b = self.stable.requests, self.candidate.requests
        x_a, x_b = self.stable.events.get(kind, 0.0), self.candidate.events.get(kind, 0.0)
        if n_a <= 0 or n_b <= 0 or (x_a <= 0 and x_b <= 0):
            return None
        return math.inf if x_a <= 0 else (x_b / n_b) / (x_a / n_a)

    def worst(self) -> tuple[str, float | None]:
        """The event kind with the most evidence of harm, and its observed ratio."""
        if not self.log_lr:
            return "", None
        kind = max(self.log_lr, key=lambda k: _log_mixture(self.log_lr[k]))
        return kind, self.ratio(kind)

    def to_dict(self) -> dict[str, Any]:
        def arm(a: Arm) -> dict[str, Any]:
            return {"requests": a.requests, "events": dict(a.events)}

        return {
            "tolerance": self.tolerance,
            "candidate": arm(self.candidate),
            "stable": arm(self.stable),
            # Rounded: 1e-4 on a log scale is far below what any decision depends on.
            "log_lr": {k: [round(float(x), 4) for x in v] for k, v in self.log_lr.items()},
            "pvalue": self.pvalue,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateRatioTest:
        def arm(d: Mapping[str, Any]) -> Arm:
            return Arm(float(d["requests"]), {k: float(v) for k, v in d["events"].items()})

        log_lr = {k: np.asarray(v, dtype=float) for k, v in data["log_lr"].items()}
        if any(v.shape != GRID.shape for v in log_lr.values()):
            raise ValueError("a saved rate-ratio test from another grid")
        return cls(
            float(data["tolerance"]), arm(data["candidate"]), arm(data["stable"]), log_lr,
            float(data["pvalue"]),
        )  # fmt: skip
