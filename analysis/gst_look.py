"""The group-sequential primary comparison inside `decide`: looks happen only when the
information fraction (units per arm over `max_units_per_arm`) reaches the next planned
fraction k/K; the boundary is recomputed at the fractions actually reached (Lan–DeMets), a
crossed boundary stops that comparison for good, and the final look without a crossing means
no difference.  Between looks nothing is concluded: acting there would break the design
(docs/statistics.md §7)."""

from __future__ import annotations

import math

from scipy import special

from analysis.decision import Comparison, finite, fmt
from analysis.gst import Spending, gst_boundaries
from analysis.looks import Look, Pair
from experiments.spec import Direction
from experiments.spec_metrics import AnalysisSettings, SpendingKind

_EPS = 1e-12


def spending_of(cfg: AnalysisSettings) -> Spending:
    """The spec's spending setting as gst_boundaries takes it."""
    if cfg.spending is SpendingKind.POWER:
        return ("power", cfg.rho)
    return "pocock" if cfg.spending is SpendingKind.POCOCK else "obf"


class GroupSequentialLook:
    def __init__(self, look: Look) -> None:
        cfg = look.spec.analysis
        assert cfg.max_units_per_arm is not None  # the spec requires it for this method
        self.cap, self.looks = cfg.max_units_per_arm, cfg.looks
        self.state = look.state
        self.spending = spending_of(cfg)
        primaries = [p for p in look.pairs if p.role == "primary"]
        units = min((min(p.a.n, p.b.n) for p in primaries), default=0.0)
        self.fraction = units / self.cap  # above 1 after an over-run: gst.py spends the rest
        taken = self.state.gst_fractions
        planned = self._next(taken[-1] if taken else 0.0)
        self.looking = bool(primaries) and planned is not None and self.fraction >= planned - _EPS
        if self.looking:
            taken.append(self.fraction)
        self.upcoming = self._next(taken[-1] if taken else 0.0)
        # After the final look, whatever has not crossed is "no difference" (arms that were
        # still in burn-in then included): the design has no α left to spend on them.
        self.exhausted = bool(taken) and taken[-1] >= 1.0 - _EPS

    def _next(self, last: float) -> float | None:
        return next(
            (k / self.looks for k in range(1, self.looks + 1) if k / self.looks > last + _EPS), None
        )

    def compare(self, pair: Pair, est: float, v: float) -> Comparison:
        taken = self.state.gst_fractions
        z = est / math.sqrt(v) if v > 0 and math.isfinite(est) else math.nan
        if v == 0 and math.isfinite(est) and est != 0:
            z = math.copysign(math.inf, est)  # two constant arms: the difference is exact
        bound = math.nan
        if taken:
            design = gst_boundaries(taken, alpha=pair.alpha, spending=self.spending)
            bound = design.z[-1]
        verdict = self.state.stopped.get(pair.key, "inconclusive")
        if pair.key not in self.state.stopped:
            sign = 1.0 if pair.metric.direction is Direction.INCREASE else -1.0
            if self.looking and not math.isnan(z) and abs(z) >= bound:
                verdict = "better" if sign * z > 0 else "worse"
            elif self.exhausted:
                verdict = "no_difference"
            if verdict != "inconclusive":
                self.state.stopped[pair.key] = verdict
        radius = bound * math.sqrt(v) if math.isfinite(bound) and v > 0 else math.nan
        return Comparison(
            pair.metric.name, pair.role, pair.variant, pair.control,
            f"group-sequential ({self.spending if isinstance(self.spending, str) else 'power'})",
            verdict, finite(est), finite(est - radius), finite(est + radius),
            finite(2 * float(special.ndtr(-abs(z)))) if not math.isnan(z) else None,
            None, finite(bound), finite(z), pair.a.n, pair.b.n, pair.relative, pair.alpha,
        )  # fmt: skip

    def describe(self, c: Comparison) -> str:
        k, total = len(self.state.gst_fractions), self.looks
        head = f"{c.metric}: {c.variant} vs {c.control}"
        if not self.looking and c.verdict == "inconclusive":
            nxt = "none" if self.upcoming is None else f"{self.upcoming:.2f}"
            return (
                f"{head}: between group-sequential looks (information {self.fraction:.2f}, "
                f"{k} of {total} looks taken, next at {nxt} = "
                f"{(self.upcoming or 1.0) * self.cap:.0f} units per arm)"
            )
        return (
            f"{head}: look {k} of {total} at information {self.fraction:.2f}: "
            f"z {fmt(c.statistic)} against boundary ±{fmt(c.boundary)} (nominal p {fmt(c.pvalue)}, "
            f"effect {fmt(c.estimate)}, repeated CI [{fmt(c.ci_low)}, {fmt(c.ci_high)}]) — "
            f"{c.verdict.replace('_', ' ')}"
        )
