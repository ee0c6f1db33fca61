"""Per-segment effects with false-discovery control: did the result hold for every country,
platform and input bucket, and is a harm hiding in one of them?

Each segment (attribute = value, e.g. country = DE) is analysed with the main analysis's own
machinery, not a copy of it: `analysis.looks.prepare` builds its comparisons (burn-in, CUPED,
relative or absolute, the continuity prior of analysis.degenerate for all-zero or all-one
conversions) and `analysis.decide.evaluate` computes them (the mixture confidence sequence
tuned to the spec's n*, at the level the main analysis uses for the metric's role), so a
segment holding the whole population gives exactly `decide`'s numbers.  Segments always use the
confidence sequence: a group-sequential design plans its looks for the whole population only.

Two corrections over the segments, for two purposes:
- the flags shown: Benjamini–Hochberg at α over every comparison tested (all attributes ×
  values × treatments × metrics) on the always-valid p-values — false discovery rate ≤ α for
  independent or positively dependent p-values;
- the stop decision: Bonferroni.  A flagged harm on the primary metric counts for the rollout
  only if the segment's confidence sequence read at level α / m (m = segments × treatments;
  the same mixture, so the same martingale, at the stricter level) lies wholly on the harmful
  side: family-wise error ≤ α under any dependence and at any stopping time.  It is acted on
  when the spec's `analysis.segment_harm` is `rollback`; with `flag` it is shown.
A flagged harm in a segment while the whole population shows no significant harm is marked
`confined`.  Sample ratio per segment: the sequential Dirichlet–multinomial test of
analysis.srm (the one `decide` gates on; a χ² at every look would be peeking), its running p
multiplied by the number of segments (Bonferroni) and compared with `srm_alpha`.

Across looks the running p and intervals are carried in `SegmentState` (the caller keeps
`result.state`), as `decide` carries `DecisionState`.  Without a state each look stands alone
and is still valid (each look's p and interval are always valid; the running minimum and
intersection only sharpen them).  The families only grow: m is the most segment comparisons
seen so far (or `family_size`, which fixes it in advance, e.g. from the declared values and
caps); when m grows the Bonferroni intervals restart at the new level.  See docs/segments.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

from analysis.decide import evaluate
from analysis.decision import DecisionState, finite
from analysis.inputs import ExperimentStats
from analysis.looks import Look, Pair, check_ratios, plan_of, prepare
from analysis.mixture import rho2_for
from analysis.segment_flags import conclude, flag, segment_result, untested
from analysis.segment_result import SegmentAnalysis, SegmentComparison, SegmentState
from experiments.spec import ExperimentSpec
from experiments.spec_metrics import Direction, SegmentHarm

Arms = Mapping[str, Any]  # {variant: {"exposures": n, "metrics": {...}}}, as phase_report gives
BONFERRONI = "|bonferroni"  # suffix of the Bonferroni-level intervals' keys in the state


def analyse_segments(
    cells: Mapping[str, Mapping[str, Arms]],
    spec: ExperimentSpec,
    *,
    overall: Arms | None = None,
    harm_rule: SegmentHarm | str | None = None,
    state: SegmentState | None = None,
    family_size: int | None = None,
) -> SegmentAnalysis:
    """One look at every segment of `cells` (attribute -> value -> arms, as `phase_report`'s
    "segments").  `overall` is the whole population's arms (its "arms"), needed to mark a harm
    confined to a segment; `harm_rule` defaults to the spec's `analysis.segment_harm`; `state`
    is the previous result's `state`; `family_size` fixes the Bonferroni family in advance."""
    rule = _rule(harm_rule, spec)
    previous = state or SegmentState()
    segments = _segment_looks(cells, spec, previous)
    looks = [look for _, _, _, look in segments]
    whole = None if overall is None else _look(spec, overall, previous.overall, "overall")[1]
    check_ratios(looks)  # the sequential SRM per segment, kept in each look's state
    cfg, treatments = spec.analysis, plan_of(spec).treatments
    family = _family(family_size, len(looks) * len(treatments), previous.family)
    srm_family = max(len(looks), previous.srm_family, 1)
    if family != previous.family:
        # An interval at another level must not be intersected with the new level's.
        for look in looks:
            kept = look.state.intervals.items()
            look.state.intervals = {k: v for k, v in kept if not k.endswith(BONFERRONI)}
    # One vectorised pass: every segment comparison, the primary's Bonferroni twins, and the
    # whole population.
    jobs = [(look.state, p) for look in looks for p in look.pairs]
    twins = {
        id(p): _twin(p, look.state, cfg.alpha / family)
        for look in looks
        for p in look.pairs
        if p.role == "primary"
    }
    jobs += [(look.state, twins[id(p)]) for look in looks for p in look.pairs if id(p) in twins]
    jobs += [(whole.state, p) for p in whole.pairs] if whole is not None else []
    values: list[list[float]] = evaluate([p for _, p in jobs]).T.tolist()
    row: dict[int, list[float]] = {}
    for (kept_in, p), v in zip(jobs, values, strict=True):
        kept_in.intervals[p.key] = [finite(v[2]), finite(v[3]), finite(v[4])]
        row[id(p)] = v
    whole_cmp = tuple(_comparison(p, row[id(p)]) for p in whole.pairs) if whole else ()
    harmful = None
    if whole is not None:
        harmful = {(p.metric.name, p.variant) for p in whole.pairs if _harmful(p, row[id(p)])}
    results = []
    for attribute, value, stats, look in segments:
        comparisons = []
        for p in look.pairs:
            c = _comparison(p, row[id(p)])
            if id(p) in twins:
                _, _, _, low, high = strict = row[id(twins[id(p)])]
                confirmed = c.tested and _harmful(p, strict)
                c = replace(c, bonferroni_low=finite(low), bonferroni_high=finite(high),
                            harm_confirmed=confirmed)  # fmt: skip
            comparisons.append(c)
        comparisons += [untested(stats, look, *b) for b in look.burn_in]
        results.append(segment_result(attribute, value, look, comparisons, srm_family))
    new_state = SegmentState(
        {f"{a}={v}": look.state for a, v, _, look in segments},
        whole.state if whole is not None else previous.overall,
        family,
        srm_family,
    )
    return conclude(spec, rule, flag(results, cfg.alpha, harmful), whole_cmp, new_state)


def _rule(harm_rule: SegmentHarm | str | None, spec: ExperimentSpec) -> SegmentHarm:
    if harm_rule is None:
        return spec.analysis.segment_harm
    try:
        return SegmentHarm(harm_rule)
    except ValueError:
        allowed = ", ".join(h.value for h in SegmentHarm)
        raise ValueError(f"harm_rule must be one of {allowed}, got {harm_rule!r}") from None


def _family(family_size: int | None, present: int, before: int) -> int:
    """The Bonferroni family: as fixed by the caller, else the most comparisons seen so far."""
    if family_size is None:
        return max(present, before, 1)
    if isinstance(family_size, bool) or not isinstance(family_size, int) or family_size < present:
        raise ValueError(
            f"family_size must be an integer at least the {present} segment comparisons present"
            f" (segments × treatment arms), got {family_size!r}"
        )
    return family_size


def _segment_looks(
    cells: Mapping[str, Mapping[str, Arms]], spec: ExperimentSpec, previous: SegmentState
) -> list[tuple[str, str, ExperimentStats, Look]]:
    if not isinstance(cells, Mapping):
        raise ValueError(f"cells must map attribute -> value -> arms, got {type(cells).__name__}")
    out = []
    for attribute, values in cells.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"segment attribute {attribute!r}: expected a mapping value -> arms")
        for value, arms in values.items():
            key = f"{attribute}={value}"
            stats, look = _look(spec, arms, previous.segments.get(key), f"segment {key}")
            out.append((str(attribute), str(value), stats, look))
    return out


def _look(
    spec: ExperimentSpec, arms: Arms, state: DecisionState | None, where: str
) -> tuple[ExperimentStats, Look]:
    """`prepare`'s look at one segment's arms, with errors naming the segment."""
    try:
        if not isinstance(arms, Mapping):
            raise ValueError(f"expected {{variant: {{exposures, metrics}}}}, got {arms!r:.80}")
        stats = ExperimentStats.from_report(arms)
        return stats, prepare(spec, stats, (), state)
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{where}: {what}") from None


def _twin(pair: Pair, state: DecisionState, alpha: float) -> Pair:
    """The pair again at the Bonferroni level `alpha`, with its own running interval.  Its n*
    is rescaled so that τ² stays the main analysis's (ρ² = g(α)/n* with g(α) = −2 ln α +
    ln(1 − 2 ln α)): the same mixture martingale read at a stricter level, so its interval
    excludes 0 exactly when the segment's running p is at most `alpha`, rather than a second
    test tuned differently."""
    key = pair.key + BONFERRONI
    p, low, high = state.intervals.get(key) or (None, None, None)
    prior = (
        1.0 if p is None else p,
        -math.inf if low is None else low,
        math.inf if high is None else high,
    )
    return replace(pair, key=key, alpha=alpha, n_star=pair.n_star * _rescale(pair.alpha, alpha),
                   prior=prior)  # fmt: skip


@lru_cache(maxsize=64)
def _rescale(alpha: float, stricter: float) -> float:
    """The factor on n* that keeps τ² when the level goes from `alpha` to `stricter`."""
    return float(rho2_for(1.0, stricter) / rho2_for(1.0, alpha))


def _harmful(pair: Pair, row: list[float]) -> bool:
    """The (non-empty) interval lies wholly on the metric's harmful side of 0."""
    _, _, _, low, high = row
    if not low <= high:
        return False
    return high < 0 if pair.metric.direction is Direction.INCREASE else low > 0


def _comparison(pair: Pair, row: list[float]) -> SegmentComparison:
    est, _, p, low, high = row
    effect = pair.b.mean - pair.a.mean
    # decide's lift where it tests one (the log ratio mapped back: the same number), else the
    # plain ratio where the control mean is not 0.
    lift = est if pair.relative else (effect / abs(pair.a.mean) if pair.a.mean else math.nan)
    stable = low <= high
    note = None if stable else "the running interval is empty (the looks contradict each other)"
    if pair.key.endswith(":absolute"):  # analysis.looks: the lift over a zero control fell back
        note = "the control mean is zero at the metric's scale: the difference is judged"
    sign = 1.0 if pair.metric.direction is Direction.INCREASE else -1.0
    signed = sign * est if math.isfinite(est) else 0.0
    return SegmentComparison(
        pair.metric.name, pair.role, pair.variant, pair.control, stable, note,
        finite(effect), finite(lift), "relative" if pair.relative else "absolute",
        finite(low), finite(high), finite(p),
        direction="harm" if signed < 0 else "benefit" if signed > 0 else None,
        n_control=pair.a.n, n_treatment=pair.b.n,
    )  # fmt: skip
