"""The first half of a decision, per experiment: guardrail readings, SRM, burn-in, and the
treatment-versus-control comparisons (with CUPED where asked) that the vectorised pass of
analysis.decide evaluates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from analysis.cuped import cuped
from analysis.decision import DecisionState, GuardrailCheck
from analysis.guardrails import Threshold
from analysis.inputs import ExperimentStats
from analysis.msprt import Kind
from analysis.srm import sequential_srm, srm_test
from analysis.stats import ArmStats
from experiments.spec import ExperimentSpec, Metric, MetricKind

Role = Literal["primary", "secondary", "guardrail"]


@dataclass(slots=True)
class Pair:
    """One treatment against control on one metric, ready for the numpy pass."""

    key: str
    role: Role
    metric: Metric
    variant: str
    control: str
    kind: Kind
    a: ArmStats
    b: ArmStats
    alpha: float
    n_star: float
    relative: bool
    prior: tuple[float, float, float]  # running p, low, high before this look


@dataclass(slots=True)
class Look:
    spec: ExperimentSpec
    state: DecisionState
    checks: tuple[GuardrailCheck, ...]
    reasons: list[str] = field(default_factory=list)
    srm_p: float | None = None
    seq_srm_p: float | None = None
    invalid: bool = False
    pairs: list[Pair] = field(default_factory=list)
    burn_in: list[tuple[Role, Metric, str, float, float]] = field(default_factory=list)


def design_of(spec: ExperimentSpec) -> str:
    """The settings the running intervals depend on; if they change, the intervals restart."""
    a = spec.analysis
    arms = len(spec.variants) - 1
    return (
        f"{a.method.value}|{a.alpha:g}|{a.mixture_n}|{a.relative}|{a.cuped}|{arms}"
        f"|{a.looks}|{a.spending.value}|{a.rho:g}|{a.max_units_per_arm}"
    )


def prepare(
    spec: ExperimentSpec,
    stats: ExperimentStats,
    guardrails: Sequence[Threshold],
    state: DecisionState | None,
) -> Look:
    previous = state or DecisionState()
    design = design_of(spec)
    fresh = previous.design != design
    new_state = DecisionState(
        looks=previous.looks + 1,
        srm_pvalue=previous.srm_pvalue,
        intervals={} if fresh else dict(previous.intervals),
        gst_fractions=[] if fresh else list(previous.gst_fractions),
        stopped={} if fresh else dict(previous.stopped),
        design=design,
    )
    look = Look(spec, new_state, tuple(g.check() for g in guardrails))
    if fresh and previous.design:
        look.reasons.append("the analysis settings changed: the always-valid state starts afresh")
    _check_ratio(look, stats)
    if spec.metrics is not None:
        _pairs(look, stats)
    return look


def _check_ratio(look: Look, stats: ExperimentStats) -> None:
    spec, cfg = look.spec, look.spec.analysis
    keys = [v.key for v in spec.variants]
    counts = [float(stats.units.get(k, 0.0)) for k in keys]
    if sum(counts) == 0:
        return
    weights = [v.weight for v in spec.variants]
    fixed = srm_test(counts, weights)
    seq = sequential_srm(counts, weights, previous_pvalue=look.state.srm_pvalue)
    look.state.srm_pvalue = seq.pvalue
    look.srm_p, look.seq_srm_p = fixed.pvalue, seq.pvalue
    if fixed.pvalue < cfg.srm_alpha or seq.pvalue < cfg.srm_alpha:
        look.invalid = True
        units = ", ".join(f"{k} {c:g}" for k, c in zip(keys, counts, strict=True))
        shares = "/".join(f"{w:g}" for w in weights)
        look.reasons.append(
            f"sample ratio mismatch: units {units} for weights {shares}; χ² p {fixed.pvalue:.3g},"
            f" sequential p {seq.pvalue:.3g}, below {cfg.srm_alpha:g}: the comparisons are not"
            " trustworthy until the assignment or logging fault is found"
        )


def _pairs(look: Look, stats: ExperimentStats) -> None:
    spec, cfg = look.spec, look.spec.analysis
    assert spec.metrics is not None
    control = spec.control_variant.key
    treatments = [v.key for v in spec.variants if v.key != control]
    primary_alpha = cfg.alpha / len(treatments)
    n_star, rel = float(cfg.mixture_n), cfg.relative
    metrics: list[tuple[Role, Metric, float]] = [("primary", spec.metrics.primary, primary_alpha)]
    metrics += [("secondary", m, cfg.alpha) for m in spec.metrics.secondary]
    metrics += [("guardrail", m, cfg.alpha) for m in spec.metrics.guardrails]
    for role, metric, alpha in metrics:
        arms = stats.metrics.get(metric.name, {})
        kind: Kind = "proportion" if metric.kind is MetricKind.CONVERSION else "mean"
        a = arms.get(control, _EMPTY)
        for variant in treatments:
            b = arms.get(variant, _EMPTY)
            if not (
                _ready(a, kind, cfg.min_units_per_arm) and _ready(b, kind, cfg.min_units_per_arm)
            ):
                look.burn_in.append((role, metric, variant, a.n, b.n))
                continue
            if cfg.cuped and (a.sum_x2 > 0 or b.sum_x2 > 0):
                a_adj, b_adj = cuped(a, b)
            else:
                a_adj, b_adj = a, b
            key = f"{metric.name}:{variant}"
            stored = look.state.intervals.get(key)
            prior = (1.0, -math.inf, math.inf)
            if stored is not None:
                p, low, high = stored
                prior = (
                    1.0 if p is None else p,
                    -math.inf if low is None else low,
                    math.inf if high is None else high,
                )
            look.pairs.append(
                Pair(
                    key,
                    role,
                    metric,
                    variant,
                    control,
                    kind,
                    a_adj,
                    b_adj,
                    alpha,
                    n_star,
                    rel,
                    prior,
                )
            )


_EMPTY = ArmStats(0, 0, 0)


def _ready(arm: ArmStats, kind: Kind, minimum: int) -> bool:
    if arm.n < minimum:
        return False
    return kind != "proportion" or 0 < arm.sum < arm.n
