"""Group-sequential boundaries by Lan–DeMets alpha spending (docs/statistics.md §7).

At look k the z-statistic Z_k = Δ̂_k/√v_k has Cov(Z_j, Z_k) = √(t_j/t_k) for information
fractions t_j ≤ t_k.  A spending function α₁(t) says how much of the one-sided level has been
used by t; the boundary b_k solves P₀(no crossing before k, |Z_k| ≥ b_k) = spent increment,
with the densities of the continuation region carried from look to look by numerical
integration (Armitage, McPherson & Rowe 1969; the grid and Simpson weights of Jennison &
Turnbull 2000, ch. 19, r = 18).

Convention, explicit because packages differ: with `sides=2` the design is symmetric and
spends α/2 *per side* with the one-sided function (gsDesign `sfLDOF(alpha=0.025)`, ldbounds
`sides=2`), so `cumulative_alpha` is the two-sided total 2·α₁(t).  An over-run (information
fraction above 1) spends what is left of α — the spending function is capped at t = 1 — while
the correlations between looks use the fractions as they are, so the type-I error stays α.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

Spending = Literal["obf", "pocock"] | tuple[Literal["power"], float]
Vector = NDArray[np.float64]

_GRID_R = 18
_Z_MAX = 40.0  # beyond this a boundary is "never" crossed (P < 1e-300)


@dataclass(frozen=True, slots=True)
class GSTBoundaries:
    """Upper z boundaries per look (reject when |Z_k| ≥ z[k] with sides=2, Z_k ≥ z[k] with
    sides=1) and the cumulative α spent by each look."""

    information_fractions: tuple[float, ...]
    z: tuple[float, ...]
    cumulative_alpha: tuple[float, ...]
    alpha: float
    sides: int
    spending: str

    @property
    def nominal_p(self) -> tuple[float, ...]:
        """The fixed-horizon p-value each boundary corresponds to (2Φ̄(b) with sides=2)."""
        return tuple(self.sides * float(stats.norm.sf(b)) for b in self.z)

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (f"{k + 1}", f"{t:.4g}", f"{b:.4f}", f"{a:.6g}")
            for k, (t, b, a) in enumerate(
                zip(self.information_fractions, self.z, self.cumulative_alpha, strict=True)
            )
        ]

    def summary(self) -> str:
        head = (
            f"{self.spending} spending, alpha {self.alpha:g}, {self.sides}-sided\n"
            "look  fraction  z boundary  cumulative alpha"
        )
        return head + "".join(f"\n{k:>4}  {t:>8}  {b:>10}  {a:>16}" for k, t, b, a in self._rows())

    def _repr_html_(self) -> str:
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self._rows()
        )
        caption = html.escape(f"{self.spending} spending, α {self.alpha:g}, {self.sides}-sided")
        return (
            f"<table><caption>{caption}</caption><tr><th>look</th><th>fraction</th>"
            f"<th>z boundary</th><th>cumulative α</th></tr>{cells}</table>"
        )


def spent(t: float, alpha: float, spending: Spending) -> float:
    """α(t) of a spending function at level `alpha` (one side's level for two-sided designs)."""
    t = min(t, 1.0)
    if t <= 0:
        return 0.0
    if spending == "obf":
        return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(t)))
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    return alpha * float(t ** spending[1])


def _grid(mean: float, low: float, high: float) -> tuple[Vector, Vector]:
    """J&T's integration points on (low, high), dense near `mean`, with Simpson weights."""
    r = _GRID_R
    i = np.arange(1, 6 * r)
    x = np.where(
        i < r,
        mean - 3 - 4 * np.log(r / np.minimum(i, r)),
        np.where(
            i <= 5 * r,
            mean - 3 + 3 * (i - r) / (2 * r),
            mean + 3 + 4 * np.log(r / np.maximum(6 * r - i, 1)),
        ),
    )
    first, last = max(low, x[0]), min(high, x[-1])
    points = np.concatenate(([first], x[(x > first) & (x < last)], [last]))
    mids = (points[:-1] + points[1:]) / 2
    z = np.empty(2 * len(points) - 1)
    z[0::2], z[1::2] = points, mids
    steps = np.diff(points)
    w = np.zeros_like(z)
    w[0::2][:-1] += steps / 6
    w[0::2][1:] += steps / 6
    w[1::2] = 4 * steps / 6
    return z, w


def _crossing(h: Vector, u: Vector, t_prev: float, t: float, bound: float, sides: int) -> float:
    """P(the path continued to the previous look with density h on u, then crosses at t)."""
    d = math.sqrt(t - t_prev)
    shift = u * math.sqrt(t_prev)
    p = stats.norm.sf((bound * math.sqrt(t) - shift) / d)
    if sides == 2:
        p = p + stats.norm.cdf((-bound * math.sqrt(t) - shift) / d)
    return float(h @ p)


def _carry(
    h: Vector, u: Vector, t_prev: float, t: float, bound: float, sides: int
) -> tuple[Vector, Vector]:
    """The density of Z at t on the continuation region (−b, b) (or (−∞, b)), as weights × f."""
    z, w = _grid(0.0, -bound if sides == 2 else -_Z_MAX, bound)
    d = math.sqrt(t - t_prev)
    kernel = stats.norm.pdf((z[:, None] * math.sqrt(t) - u[None, :] * math.sqrt(t_prev)) / d)
    return w * (kernel @ h) * math.sqrt(t) / d, z


def _solve(h: Vector, u: Vector, t_prev: float, t: float, target: float, sides: int) -> float:
    if target <= 0:
        return math.inf
    if _crossing(h, u, t_prev, t, _Z_MAX, sides) >= target:
        return _Z_MAX
    return float(
        optimize.brentq(
            lambda b: _crossing(h, u, t_prev, t, b, sides) - target, 0.0, _Z_MAX, xtol=1e-10
        )
    )


@lru_cache(maxsize=256)
def _boundaries(
    fractions: tuple[float, ...], alpha: float, spending: Spending, sides: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    per_side = alpha / sides
    cumulative = [sides * spent(t, per_side, spending) for t in fractions]
    bounds: list[float] = []
    first = cumulative[0]
    bounds.append(float(stats.norm.isf(first / sides)) if first > 0 else math.inf)
    b1 = min(bounds[0], _Z_MAX)
    u, w = _grid(0.0, -b1 if sides == 2 else -_Z_MAX, b1)
    h = w * stats.norm.pdf(u)
    for k in range(1, len(fractions)):
        t_prev, t = fractions[k - 1], fractions[k]
        b = _solve(h, u, t_prev, t, cumulative[k] - cumulative[k - 1], sides)
        bounds.append(b)
        h, u = _carry(h, u, t_prev, t, min(b, _Z_MAX), sides)
    return tuple(bounds), tuple(cumulative)


def _check(alpha: float, spending: Spending, sides: int) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides}")
    if spending in ("obf", "pocock"):
        return
    if not (
        isinstance(spending, tuple)
        and len(spending) == 2
        and spending[0] == "power"
        and isinstance(spending[1], int | float)
        and spending[1] > 0
    ):
        raise ValueError(
            f"spending must be 'obf', 'pocock' or ('power', rho > 0), got {spending!r}"
        )


def gst_boundaries(
    information_fractions: Sequence[float],
    *,
    alpha: float = 0.05,
    spending: Spending = "obf",
    sides: int = 2,
) -> GSTBoundaries:
    """Lan–DeMets boundaries for looks at the given information fractions (increasing and
    positive; above 1 is an over-run, see the module's doc).  `spending` is "obf"
    (O'Brien–Fleming type, the default), "pocock" or ("power", ρ) for α·t^ρ (Kim & DeMets).
    Cached per design."""
    _check(alpha, spending, sides)
    fractions = tuple(float(t) for t in information_fractions)
    if not fractions:
        raise ValueError("information_fractions must not be empty")
    if not all(math.isfinite(t) and t > 0 for t in fractions):
        raise ValueError(f"information fractions must be positive, got {list(fractions)}")
    if any(b <= a for a, b in itertools.pairwise(fractions)):
        raise ValueError(f"information fractions must increase strictly: {list(fractions)}")
    if isinstance(spending, tuple):
        spending = ("power", float(spending[1]))
    z, cumulative = _boundaries(fractions, alpha, spending, sides)
    name = spending if isinstance(spending, str) else f"power (rho {spending[1]:g})"
    return GSTBoundaries(fractions, z, cumulative, alpha, sides, name)


def rejection_probability(
    bounds: Sequence[float], fractions: Sequence[float], sides: int = 2
) -> float:
    """P₀(some |Z_k| ≥ b_k) for given boundaries: the total type-I error of a design."""
    b1 = min(bounds[0], _Z_MAX)
    total = float(sides * stats.norm.sf(b1))
    u, w = _grid(0.0, -b1 if sides == 2 else -_Z_MAX, b1)
    h = w * stats.norm.pdf(u)
    for k in range(1, len(fractions)):
        b = min(bounds[k], _Z_MAX)
        total += _crossing(h, u, fractions[k - 1], fractions[k], b, sides)
        h, u = _carry(h, u, fractions[k - 1], fractions[k], b, sides)
    return total


@lru_cache(maxsize=64)
def classical_constant(looks: int, alpha: float = 0.05, design: str = "pocock") -> float:
    """Pocock's C_P(K, α) or O'Brien–Fleming's C_B(K, α) for K equally spaced two-sided looks
    (Jennison & Turnbull Tables 2.1, 2.3): boundaries C_P at every look, or C_B·√(K/k)."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    if design not in ("pocock", "obf"):
        raise ValueError(f"design must be 'pocock' or 'obf', got {design!r}")
    fractions = [k / looks for k in range(1, looks + 1)]

    def excess(c: float) -> float:
        scale = [1.0 if design == "pocock" else math.sqrt(looks / k) for k in range(1, looks + 1)]
        return rejection_probability([c * s for s in scale], fractions) - alpha

    return float(optimize.brentq(excess, 1.0, 10.0, xtol=1e-10))
