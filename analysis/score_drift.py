"""The score-drift guardrail of the canary and A/B phases: do the candidate's prediction scores,
on its own users' requests, stay within a Kolmogorov distance `tolerance` of the stable
model's on theirs?  The arms are different requests (not pairs, as in the shadow phase), both
random samples of the same traffic because assignment is random, so each arm's empirical CDF
gets its own time-uniform DKW band (Howard & Ramdas, Bernoulli 2022; docs/statistics.md §19) at
α/2: the distance is shown over the tolerance once D − r_stable − r_candidate > tolerance, at
any look, however often looked at.  Only harm is acted on: an undecided or a within-tolerance
reading lets the rollout go on."""

from __future__ import annotations

from analysis.shadow import Measure, State
from analysis.shadow_cs import cdf_gaps, dkw_radius
from experiments.shadow_sums import BINS, ShadowSums


def score_drift(sums: ShadowSums, tolerance: float, alpha: float, min_each: int) -> Measure:
    """The distance between the arms' traffic score CDFs with its band; "not measured" until
    each arm has `min_each` scored predictions (the band is valid before, but the reading
    would only say "undecided")."""
    empty = [0] * (BINS + 2)
    stable, candidate = sums.traffic.get("stable", empty), sums.traffic.get("candidate", empty)
    n_stable, n_candidate = sum(stable), sum(candidate)
    n = min(n_stable, n_candidate)
    if n < max(min_each, 1):
        return Measure("score_drift", tolerance, alpha, n, None, None, None, "not measured")
    gap, gap_plus = (float(g) for g in cdf_gaps(stable, candidate))
    radius = float(dkw_radius(n_stable, alpha / 2)) + float(dkw_radius(n_candidate, alpha / 2))
    low, high = max(gap - radius, 0.0), min(gap_plus + radius, 1.0)
    state: State = "violated" if low > tolerance else "within" if high < tolerance else "undecided"
    return Measure("score_drift", tolerance, alpha, n, gap, low, high, state, radius)
