"""The shadow phase's verdict: is the candidate, on the same requests, within the phase's
tolerances of the stable model?  A pure function of the phase's sums (experiments.shadow_sums)
and settings (experiments.spec_rollout.Shadow); the sequences are analysis.shadow_cs
(docs/statistics.md §18).

Gated measures are those whose tolerance is not null: the disagreement rate, the mean score
shift and the largest distance between the two arms' score CDFs.  The phase's α is split
equally among them (Bonferroni), and each confidence sequence holds at every look with
probability ≥ 1 − α/k; so with probability ≥ 1 − α all of them hold for the whole phase, and
then neither a pass nor a fail can be wrong.  That bounds the phase's false-stop rate (a fail
while every tolerance holds) and its false-pass rate by α, however often it is judged.

- `invalid` (hold for a person): the unpaired share, unpaired/(2·pairs + unpaired), is above
  tolerance.unpaired once there are as many predictions as min_pairs pairs bring — a plain
  point estimate, not a sequential test, as for a sample-ratio alarm; or a score fell outside
  score_range while the score shift is gated (its sequence assumes bounded scores).
- `fail`: a gated measure is shown over its tolerance; no minimum sample, the sequences being
  valid from the first pair.
- `pass`: pairs ≥ min_pairs and every gated measure shown within tolerance.  A measure with no
  data (no pair with labels on both sides, or with scores) is "not measured": it blocks a pass
  only when its tolerance is set.
- `continue` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from analysis.shadow_cs import (
    cdf_gaps,
    disagreement_cs,
    disagreement_log_mixture,
    dkw_radius,
    shift_cs,
    shift_log_mixtures,
)
from analysis.shadow_display import display_measures
from experiments.shadow_sums import BINS, ShadowSums
from experiments.spec_rollout import Shadow

ShadowStatus = Literal["pass", "fail", "continue", "invalid"]
State = Literal["within", "violated", "undecided", "not measured"]


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    tolerance: float | None  # None: shown, not gated
    alpha: float  # this measure's share of the phase's α (its sequence holds at 1 − alpha)
    n: int  # the pairs it is measured on
    estimate: float | None
    low: float | None  # the confidence sequence at this look
    high: float | None
    state: State
    radius: float | None = None  # distribution: the two DKW radii added

    def sentence(self) -> str:
        """The measure, its estimate, its bounds and its tolerance, for a reason."""
        if self.state == "not measured":
            return f"{self.name} not measured (no pair carries it yet)"
        bounds = f"{1 - self.alpha:.2%} CS [{self.low:.4g}, {self.high:.4g}]"
        limit = "not gated" if self.tolerance is None else f"tolerance {self.tolerance:.4g}"
        return f"{self.name} {self.estimate:.4g} ({bounds}, n = {self.n}; {limit})"

    def to_dict(self) -> dict[str, Any]:
        return {name: _json(getattr(self, name)) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    status: ShadowStatus
    reasons: tuple[str, ...]
    measures: tuple[Measure, ...]
    pairs: int
    unpaired_share: float | None
    alpha: float
    display: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "pairs": self.pairs,
            "unpaired_share": _json(self.unpaired_share),
            "alpha": self.alpha,
            "measures": {m.name: m.to_dict() for m in self.measures},
            "display": self.display,
        }


def judge_shadow(sums: ShadowSums, phase: Shadow) -> ShadowVerdict:
    tol = phase.tolerance
    gated = [t for t in (tol.disagreement, tol.score_shift, tol.distribution) if t is not None]
    share = phase.alpha / max(len(gated), 1)
    measures = (
        disagreement(sums, _opt(tol.disagreement), share),
        score_shift(sums, _opt(tol.score_shift), share),
        distribution(sums, _opt(tol.distribution), share),
    )
    unpaired = sum(sums.unpaired.values())
    predictions = 2 * sums.pairs + unpaired
    unpaired_share = unpaired / predictions if predictions else None

    def verdict(status: ShadowStatus, reasons: list[str]) -> ShadowVerdict:
        return ShadowVerdict(status, tuple(reasons), measures, sums.pairs, unpaired_share,
                             phase.alpha, display_measures(sums))  # fmt: skip

    invalid = []
    seen = unpaired_share is not None and predictions >= 2 * phase.min_pairs
    if seen and unpaired / predictions > tol.unpaired:
        invalid.append(f"unpaired share {unpaired / predictions:.4g} ({unpaired} of "
                       f"{predictions} predictions) is above the tolerance {tol.unpaired:.4g}: "
                       "the pairs may not represent the traffic (point estimate)")  # fmt: skip
    if sums.outside and tol.score_shift is not None:
        invalid.append(f"{sums.outside} of {sums.scored} scored pairs have a score outside "
                       f"score_range {list(phase.score_range)}: the score-shift sequence needs "
                       "bounded scores; widen score_range")  # fmt: skip
    if invalid:
        return verdict("invalid", invalid)
    broken = [m for m in measures if m.tolerance is not None and m.state == "violated"]
    if broken:
        return verdict("fail", [f"{m.sentence()} is shown over its tolerance" for m in broken])
    pending = [m for m in measures if m.tolerance is not None and m.state != "within"]
    reasons = [f"{m.sentence()}: not yet shown within tolerance" for m in pending]
    if sums.pairs < phase.min_pairs:
        reasons.insert(0, f"{sums.pairs} pairs, fewer than min_pairs {phase.min_pairs}")
    if reasons:
        return verdict("continue", reasons)
    shown = [f"{m.sentence()} is shown within tolerance" for m in measures
             if m.tolerance is not None]  # fmt: skip
    return verdict("pass", shown or [f"{sums.pairs} pairs and no tolerance is gated"])


def disagreement(sums: ShadowSums, tol: float | None, alpha: float) -> Measure:
    x, n = sums.disagreements, sums.labelled
    if n == 0:
        return Measure("disagreement", tol, alpha, 0, None, None, None, "not measured")
    low, high = disagreement_cs(x, n, alpha)
    state: State = "undecided"
    if tol is not None and float(disagreement_log_mixture(x, n, tol)) >= math.log(1 / alpha):
        state = "violated" if x / n > tol else "within"  # tol is outside the CS: which side?
    return Measure("disagreement", tol, alpha, n, x / n, low, high, state)


def score_shift(sums: ShadowSums, tol: float | None, alpha: float) -> Measure:
    n, span = sums.scored, sums.high - sums.low
    if n == 0:
        return Measure("score_shift", tol, alpha, 0, None, None, None, "not measured")
    low, high = shift_cs(n, sums.sum_d, sums.sum_d2, span, alpha)
    state: State = "undecided"
    if tol is not None:
        # Tested at ±tol (within [−R, R]): M⁺ falls and M⁻ rises with μ, so rejecting μ = t
        # rejects every μ on the far side of t too.
        t, level = min(tol, span), math.log(2 / alpha)
        up, down = shift_log_mixtures(n, sums.sum_d, sums.sum_d2, [-t, t], span)
        if up[1] >= level or down[0] >= level:
            state = "violated"
        elif tol >= span or (up[0] >= level and down[1] >= level):
            state = "within"
    return Measure("score_shift", tol, alpha, n, sums.sum_d / n, low, high, state)


def distribution(sums: ShadowSums, tol: float | None, alpha: float) -> Measure:
    """The Kolmogorov distance of the arms' score CDFs, each arm's band at α/2."""
    empty = [0] * (BINS + 2)
    n = sums.scored
    if n == 0:
        return Measure("distribution", tol, alpha, 0, None, None, None, "not measured")
    gap, gap_plus = (float(g) for g in cdf_gaps(sums.hist.get("stable", empty),
                                                sums.hist.get("candidate", empty)))  # fmt: skip
    # With every pair's two scores equal the empirical CDFs coincide everywhere.
    gap_plus = min(gap_plus, sums.unequal / n)
    radius = 2 * float(dkw_radius(n, alpha / 2))
    low, high = max(gap - radius, 0.0), min(gap_plus + radius, 1.0)
    state: State = "undecided"
    if tol is not None and gap - radius > tol:
        state = "violated"
    elif tol is not None and gap_plus + radius < tol:
        state = "within"
    return Measure("distribution", tol, alpha, n, gap, low, high, state, radius)


def _opt(value: float | None) -> float | None:
    return None if value is None else float(value)


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
