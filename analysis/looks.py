"""The first half of a decision, per experiment: guardrail readings, SRM, burn-in, and the
treatment-versus-control comparisons (with CUPED where asked) that the vectorised pass of
analysis.decide evaluates."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from analysis.cuped import cuped
from analysis.decision import DecisionState, GuardrailCheck
from analysis.degenerate import check_arm, lift_undefined
from analysis.guardrails import Threshold
from analysis.inputs import ExperimentStats
from analysis.msprt import Kind
from analysis.srm import planned_arms, srm_arrays
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
    plan: Plan
    state: DecisionState
    checks: tuple[GuardrailCheck, ...]
    reasons: list[str] = field(default_factory=list)
    srm_p: float | None = None
    seq_srm_p: float | None = None
    invalid: bool = False
    counts: list[float] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    burn_in: list[tuple[Role, Metric, str, float, float]] = field(default_factory=list)


def treatments_of(spec: ExperimentSpec) -> list[str]:
    """The arms compared with control: every other variant with traffic (a variant at weight 0
    is paused, and neither judged nor counted in the α split)."""
    control = spec.control_variant.key
    return [v.key for v in spec.variants if v.key != control and v.weight > 0]


def design_of(spec: ExperimentSpec) -> str:
    """What the state was computed for: the experiment, its arms and weights, its metrics and
    the analysis settings.  If any of it changes, the state starts afresh (a state passed in
    from another experiment, too)."""
    arms = ",".join(f"{v.key}={v.weight:g}" for v in spec.variants)
    metrics = ""
    if spec.metrics is not None:
        # An unset tolerance is left out, so states saved before the field existed still match;
        # where a metric's events are read (`source`) is not what its test was planned for.
        guards = spec.metrics.guardrails
        unset = {i: {"source"} | ({"tolerance"} if g.tolerance is None else set())
                 for i, g in enumerate(guards)}  # fmt: skip
        plain = {"tolerance", "source"}
        exclude = {"primary": plain, "secondary": {"__all__": plain}, "guardrails": unset}
        metrics = spec.metrics.model_dump_json(exclude=exclude)  # type: ignore[arg-type]
    # segment_harm only decides what a segment harm does: not part of the state's design.
    settings = spec.analysis.model_dump_json(exclude={"segment_harm"})
    text = f"{spec.name}|{arms}|{metrics}|{settings}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a spec fixes for every look: worked out once per spec object."""

    design: str
    control: str
    treatments: tuple[str, ...]
    keys: tuple[str, ...]
    weights: tuple[float, ...]
    # (role, metric, α, kind) per metric; Bonferroni over treatment arms for the primary,
    # and over arms × metrics for guardrails (each a chance of a false "harm").
    metrics: tuple[tuple[Role, Metric, float, Kind], ...]


_PLANS: dict[int, tuple[ExperimentSpec, Plan]] = {}


def plan_of(spec: ExperimentSpec) -> Plan:
    """The spec's Plan, cached by identity (hashing a spec costs more than a look)."""
    cached = _PLANS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    if len(_PLANS) >= 1024:
        _PLANS.clear()
    treatments = tuple(treatments_of(spec))
    cfg = spec.analysis
    metrics: list[tuple[Role, Metric, float, Kind]] = []
    if spec.metrics is not None and treatments:
        primary_alpha = cfg.alpha / len(treatments)
        guard_alpha = primary_alpha / max(len(spec.metrics.guardrails), 1)
        roles: list[tuple[Role, Metric, float]] = [("primary", spec.metrics.primary, primary_alpha)]
        roles += [("secondary", m, cfg.alpha) for m in spec.metrics.secondary]
        roles += [("guardrail", m, guard_alpha) for m in spec.metrics.guardrails]
        for role, metric, alpha in roles:
            kind: Kind = "proportion" if metric.kind is MetricKind.CONVERSION else "mean"
            metrics.append((role, metric, alpha, kind))
    plan = Plan(
        design_of(spec),
        spec.control_variant.key,
        treatments,
        tuple(v.key for v in spec.variants),
        tuple(v.weight for v in spec.variants),
        tuple(metrics),
    )
    _PLANS[id(spec)] = (spec, plan)
    return plan


def prepare(
    spec: ExperimentSpec,
    stats: ExperimentStats,
    guardrails: Sequence[Threshold],
    state: DecisionState | None,
) -> Look:
    previous = state or DecisionState()
    plan = plan_of(spec)
    design = plan.design
    fresh = previous.design != design
    new_state = DecisionState(
        looks=previous.looks + 1,
        srm_pvalue=1.0 if fresh else previous.srm_pvalue,
        srm_horizon_pvalue=None if fresh else previous.srm_horizon_pvalue,
        intervals={} if fresh else dict(previous.intervals),
        gst_fractions=[] if fresh else list(previous.gst_fractions),
        stopped={} if fresh else dict(previous.stopped),
        design=design,
    )
    look = Look(spec, plan, new_state, tuple(g.check() for g in guardrails))
    if fresh and previous.design:
        look.reasons.append(
            "the state passed in was for other settings, arms or metrics: it starts afresh"
        )
    look.counts = [float(stats.units.get(k, 0.0)) for k in plan.keys]
    for key, count in zip(plan.keys, look.counts, strict=True):
        if not (count >= 0 and math.isfinite(count)):
            raise ValueError(f"arm {key!r}: {count:g} assigned units is not a count")
    _pairs(look, stats)
    return look


def check_ratios(looks: Sequence[Look]) -> None:
    """SRM for every look in one vectorised pass per number of arms (zero-weight arms are left
    out; units in one are a certain mismatch)."""
    groups: dict[int, list[tuple[Look, list[float], list[float]]]] = {}
    for look in looks:
        _, arms = planned_arms(look.counts, look.plan.weights)  # refuses bad counts
        if sum(look.counts) == 0:
            continue
        if arms is None:
            _judge_srm(look, math.inf, 0.0, math.inf)
            continue
        groups.setdefault(len(arms[0]), []).append((look, *arms))
    for members in groups.values():
        chi2, p, log_bf = srm_arrays([m[1] for m in members], [m[2] for m in members])
        for (look, _, _), x, px, lb in zip(members, chi2, p, log_bf, strict=True):
            _judge_srm(look, float(x), float(px), float(lb))


def _judge_srm(look: Look, chi2: float, pvalue: float, log_bf: float) -> None:
    """Invalid when the sequential test's running p falls below `srm_alpha` at any look, or
    when Pearson's χ² does at the one look where the units first reach the horizon's total.
    Gating on χ² at every look was a peeking procedure: 1.8-2.9 % false alarms over 200 looks
    against a level of 0.1 %.  The two gates together keep false alarms ≤ 2 × srm_alpha
    however often decide is called, and the horizon look catches a small imbalance (50.5/49.5
    at 100,000 units) as often as a single χ² would (benchmarks/srm_looks.py).  Without a
    horizon only the sequential test gates; χ² at the current look is shown for information."""
    cfg, state = look.spec.analysis, look.state
    seq = min(state.srm_pvalue, math.exp(-log_bf) if log_bf > -700 else 1.0)
    state.srm_pvalue = seq
    look.srm_p, look.seq_srm_p = pvalue, seq
    cap, weights = cfg.max_units_per_arm, [w for w in look.plan.weights if w > 0]
    # The horizon look is fixed by the design: the total at which the smallest arm is planned
    # to reach the horizon (100,000 for 50/50 and 50,000 per arm), not by the counts under test.
    planned = cap * sum(weights) / min(weights) if cap is not None else math.inf
    if state.srm_horizon_pvalue is None and sum(look.counts) >= planned * (1 - 1e-12):
        state.srm_horizon_pvalue = pvalue
    horizon = state.srm_horizon_pvalue
    if seq < cfg.srm_alpha or (horizon is not None and horizon < cfg.srm_alpha):
        look.invalid = True
        keys = look.plan.keys
        units = ", ".join(f"{k} {c:g}" for k, c in zip(keys, look.counts, strict=True))
        shares = "/".join(f"{w:g}" for w in look.plan.weights)
        gate = (
            f"sequential p {seq:.3g}"
            if seq < cfg.srm_alpha
            else f"χ² p at the horizon look {horizon:.3g}"
        )
        look.reasons.append(
            f"sample ratio mismatch: units {units} for weights {shares}; {gate} is below"
            f" {cfg.srm_alpha:g} (χ² p {pvalue:.3g} at this look, sequential p {seq:.3g}): the"
            " comparisons are not trustworthy until the assignment or logging fault is found"
        )


def _pairs(look: Look, stats: ExperimentStats) -> None:
    cfg, control = look.spec.analysis, look.plan.control
    n_star, rel = float(cfg.mixture_n), cfg.relative
    for role, metric, alpha, kind in look.plan.metrics:
        arms = stats.metrics.get(metric.name, {})
        for variant, arm in arms.items():
            check_arm(metric, variant, arm)
        a = arms.get(control, _EMPTY)
        for variant in look.plan.treatments:
            b = arms.get(variant, _EMPTY)
            if not (
                _ready(a, kind, cfg.min_units_per_arm) and _ready(b, kind, cfg.min_units_per_arm)
            ):
                look.burn_in.append((role, metric, variant, a.n, b.n))
                continue
            a_adj, b_adj, pair_kind = a, b, kind
            if cfg.cuped and (a.sum_x2 > 0 or b.sum_x2 > 0):
                # Adjusted values are no longer 0/1: their variance is the adjusted m2.
                a_adj, b_adj = cuped(a, b)
                pair_kind = "mean"
            key, pair_rel = f"{metric.name}:{variant}", rel
            why = lift_undefined(a_adj, b_adj, pair_kind) if rel else None
            if why is not None:
                # The absolute difference keeps its own running interval: the two scales
                # must never be intersected.
                key, pair_rel = f"{key}:absolute", False
                look.reasons.append(f"{metric.name} ({variant}): {why}")
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
                    pair_kind,
                    a_adj,
                    b_adj,
                    alpha,
                    n_star,
                    pair_rel,
                    prior,
                )
            )


_EMPTY = ArmStats(0, 0, 0)


def _ready(arm: ArmStats, kind: Kind, minimum: int) -> bool:
    """Enough units for a verdict.  An arm with 0 % or 100 % conversions is ready too: its
    variance comes from a continuity prior (analysis.degenerate), so a dead model is judged."""
    return arm.n >= minimum
