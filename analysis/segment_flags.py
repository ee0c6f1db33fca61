"""The second half of `analyse_segments`: segments below the burn-in, the per-segment SRM, the
Benjamini–Hochberg flags over every comparison tested, and the verdict for the rollout with
its reasons (analysis.segments explains the rules)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from analysis.decision import finite, fmt
from analysis.inputs import ExperimentStats
from analysis.looks import Look
from analysis.multiple import adjust_pvalues
from analysis.segment_result import SegmentAnalysis, SegmentComparison, SegmentResult, SegmentState
from experiments.spec import ExperimentSpec
from experiments.spec_metrics import Metric, SegmentHarm


def untested(
    stats: ExperimentStats, look: Look, role: str, metric: Metric, variant: str, na: float,
    nb: float,
) -> SegmentComparison:  # fmt: skip
    """A comparison below the burn-in: its units and point estimate, no p, no interval."""
    control, minimum = look.plan.control, look.spec.analysis.min_units_per_arm
    arms = stats.metrics.get(metric.name, {})
    a, b = arms.get(control), arms.get(variant)
    effect = lift = None
    if a is not None and b is not None and a.n and b.n:
        effect = finite(b.mean - a.mean)
        lift = finite((b.mean - a.mean) / abs(a.mean)) if a.mean else None
    note = (
        f"fewer than {minimum} units per arm ({na:g} in {control}, {nb:g} in {variant}):"
        " shown, not tested"
    )
    scale = "relative" if look.spec.analysis.relative else "absolute"
    return SegmentComparison(
        metric.name, role, variant, control, False, note, effect, lift, scale,
        n_control=na, n_treatment=nb,
    )  # fmt: skip


def segment_result(
    attribute: str, value: str, look: Look, comparisons: list[SegmentComparison], srm_family: int
) -> SegmentResult:
    """One segment with its SRM: the sequential test's running p (None without units) times the
    number of segments, against `srm_alpha`."""
    cfg = look.spec.analysis
    tested = any(c.tested for c in comparisons)
    note = None
    if not comparisons:
        note = "the spec names no metric or treatment arm to compare"
    elif not tested:
        note = f"fewer than {cfg.min_units_per_arm} units per arm: shown, not tested"
    p = look.seq_srm_p
    adjusted = None if p is None else min(1.0, p * srm_family)
    return SegmentResult(
        attribute,
        value,
        dict(zip(look.plan.keys, look.counts, strict=True)),
        tested,
        note,
        finite(p),
        finite(adjusted),
        finite(look.srm_p),
        adjusted is not None and adjusted < cfg.srm_alpha,
        tuple(comparisons),
    )


def flag(
    results: list[SegmentResult], alpha: float, harmful: set[tuple[str, str]] | None
) -> list[SegmentResult]:
    """Benjamini–Hochberg at `alpha` over every comparison tested.  A flagged harm is
    `confined` when the whole population (its harmful (metric, variant) pairs: `harmful`)
    shows no significant harm on that metric and arm, and stays `harm_confirmed` only if its
    Bonferroni-level interval lies wholly on the harmful side."""
    index = [
        (i, j)
        for i, s in enumerate(results)
        for j, c in enumerate(s.comparisons)
        if c.tested and c.pvalue is not None
    ]
    adjusted = adjust_pvalues([results[i].comparisons[j].pvalue or 0.0 for i, j in index],
                              method="bh")  # fmt: skip
    table = [list(s.comparisons) for s in results]
    for (i, j), q in zip(index, adjusted, strict=True):
        c = table[i][j]
        flagged = q <= alpha
        # The rollout acts only on a flagged harm that the Bonferroni level confirms too.
        confirmed = c.harm_confirmed and flagged and c.direction == "harm"
        confined = None
        if harmful is not None and c.direction == "harm" and flagged:
            confined = (c.metric, c.variant) not in harmful
        table[i][j] = replace(
            c, adjusted_pvalue=finite(q), flagged=flagged, harm_confirmed=confirmed,
            confined=confined,
        )  # fmt: skip
    return [replace(s, comparisons=tuple(t)) for s, t in zip(results, table, strict=True)]


def conclude(
    spec: ExperimentSpec,
    rule: SegmentHarm,
    results: list[SegmentResult],
    overall: tuple[SegmentComparison, ...],
    state: SegmentState,
) -> SegmentAnalysis:
    cfg = spec.analysis
    strict_alpha = cfg.alpha / state.family
    shown = [(s, c) for s in results for c in s.comparisons]
    flagged = tuple(_flag_entry(s.attribute, s.value, c) for s, c in shown if c.flagged)
    confirmed = [(s, c) for s, c in shown if c.harm_confirmed]
    reasons = [
        _harm_reason(f"{s.attribute}={s.value}", c, strict_alpha, rule) for s, c in confirmed
    ]
    reasons += [
        f"{s.attribute}={s.value}: {c.variant} is flagged as harm on {c.metric} (BH-adjusted p"
        f" {fmt(c.adjusted_pvalue)}) but not at the Bonferroni level α/{state.family}: shown,"
        " not acted on"
        for s, c in shown
        if c.flagged and c.direction == "harm" and not c.harm_confirmed
    ]
    if not confirmed:
        primary = spec.metrics.primary.name if spec.metrics is not None else "the primary metric"
        reasons.append(
            f"no segment's harm on {primary} excludes 0 at the Bonferroni level α/{state.family}"
            f" = {strict_alpha:.3g} ({state.family} segment comparisons)"
        )
    mismatched = tuple(f"{s.attribute}={s.value}" for s in results if s.srm_mismatch)
    reasons += [
        f"{s.attribute}={s.value}: sample ratio mismatch (sequential p {fmt(s.srm_pvalue)} ×"
        f" {state.srm_family} segments = {fmt(s.srm_adjusted_pvalue)} < srm_alpha"
        f" {cfg.srm_alpha:g}; units {', '.join(f'{k} {n:g}' for k, n in s.units.items())}):"
        " this segment's comparisons are not trustworthy"
        for s in results
        if s.srm_mismatch
    ]
    correction: dict[str, Any] = {
        "method": "confidence sequence (mixture, n* of the spec)",
        "flags": "benjamini-hochberg",
        "flags_family": sum(1 for _, c in shown if c.adjusted_pvalue is not None),
        "rollout": "bonferroni",
        "rollout_metric": spec.metrics.primary.name if spec.metrics is not None else None,
        "rollout_family": state.family,
        "rollout_alpha": strict_alpha,
        "srm": "sequential dirichlet-multinomial, bonferroni over segments",
        "srm_family": state.srm_family,
        "srm_alpha": cfg.srm_alpha / state.srm_family,
    }
    return SegmentAnalysis(
        cfg.alpha, correction, rule.value, tuple(results), overall, flagged,
        rule is SegmentHarm.ROLLBACK and bool(confirmed), tuple(reasons), mismatched, state,
    )  # fmt: skip


def _flag_entry(attribute: str, value: str, c: SegmentComparison) -> dict[str, Any]:
    return {
        "attribute": attribute,
        "value": value,
        "variant": c.variant,
        "metric": c.metric,
        "direction": c.direction,
        "effect": c.effect,
        "relative_effect": c.relative_effect,
        "adjusted_pvalue": c.adjusted_pvalue,
        "harm_confirmed": c.harm_confirmed,
        "confined": c.confined,
    }


def _harm_reason(segment: str, c: SegmentComparison, alpha: float, rule: SegmentHarm) -> str:
    show = _pct if c.scale == "relative" else fmt
    where = {True: ", while the whole population shows no significant harm", False: ", as in the"
             " whole population", None: ""}[c.confined]  # fmt: skip
    action = (
        "harm for the rollout (analysis.segment_harm: rollback)"
        if rule is SegmentHarm.ROLLBACK
        else "shown, not acted on (analysis.segment_harm: flag)"
    )
    estimate = c.relative_effect if c.scale == "relative" else c.effect
    return (
        f"{segment}: {c.variant} harms {c.metric}, effect {show(estimate)} with its confidence"
        f" sequence at α {alpha:.3g} [{show(c.bonferroni_low)}, {show(c.bonferroni_high)}]"
        f" wholly on the harmful side{where}: {action}"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2%}"
