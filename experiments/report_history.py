"""The report's story: which look it is told from, its headline, and the phase over time.

One story, from one source.  A concluded experiment is told from the look that concluded it
(the last one recorded in its analysed phase), so its effects are the numbers the decision
was taken on; the headline is the outcome (promoted, rolled back, stopped, no difference),
never the verdict of a look taken after the routes moved.  A running one is told from a look
taken now, exactly as the controller would take it (gating in an A/B phase, observational in a
canary), headed by that verdict and the rollout phase it belongs to.  Over time, every
recorded look of every analysis phase is one point (a canary's observed looks, then the A/B
test's, on one clock); a phase with no recorded looks (one analysed before looks were kept)
falls back to its snapshots, replayed through a sequential monitor.
"""

from __future__ import annotations

import math
import time
from typing import Any

from experiments.looks_log import look_of, observe
from experiments.reporting import analysed_spec, phase_report, position
from experiments.status import Outcome, State
from experiments.store import ExperimentRecord, Store

VERDICT_TEXT = {
    "continue": "inconclusive",
    "winner_pending_guardrails": "better, guardrails not shown yet",
    "harm": "harm",
    "no_difference": "no difference",
    "invalid": "invalid",
}


def observational(record: ExperimentRecord, phase: str) -> bool:
    """A rollout's phase planned without a fixed split (a canary): looked at, not gated."""
    planned = record.status.phase_record(phase)
    return record.status.rollout is not None and planned is not None and planned.weights is None


def basis_look(
    store: Store,
    record: ExperimentRecord,
    looks: list[dict[str, Any]],
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The look the report is told from: the concluding look, or one taken now (on `current`,
    the phase's report, if the caller has read it already)."""
    from analysis import DecisionState, ExperimentStats, decide

    if record.state is State.CONCLUDED and looks:
        return looks[-1]
    phase, rollout = record.phase, record.status.rollout or {}
    arms = (current or phase_report(store, record, phase))["arms"]
    if observational(record, phase):
        saved = rollout.get("observed")
        decision = observe(record, arms, DecisionState.from_dict(saved) if saved else None)
    else:
        saved = rollout.get("decision")
        previous = DecisionState.from_dict(saved) if saved else None
        stats = ExperimentStats.from_report(arms)
        decision = decide(analysed_spec(record, phase), stats, (), previous)
    return look_of(decision, arms, record=record, phase=phase, at=time.time(), by="report",
                   observational=observational(record, phase))  # fmt: skip


def headline(record: ExperimentRecord, look: dict[str, Any]) -> str:
    """The outcome once concluded; else the verdict now and the phase it belongs to."""
    rollout = record.status.rollout or {}
    outcome = record.status.outcome
    if record.state is State.CONCLUDED:
        if outcome is Outcome.PROMOTED:
            served = next((k for k, w in record.served_weights.items() if w == 100), None)
            return f"promoted: {rollout.get('winner') or served}"
        if outcome is Outcome.ROLLED_BACK:
            return f"rolled back: {rollout.get('reason') or 'by the rollout'}"
        if outcome is Outcome.NO_DIFFERENCE:
            return f"no difference: {record.spec.control_variant.key} kept"
        return "stopped"
    verdict = VERDICT_TEXT.get(look["status"], look["status"])
    if look["status"] == "winner":
        verdict = f"winner: {look['winner']}"
    if look["observational"]:
        verdict += " (observed, not gated)"
    where = position(record)
    text = f"phase {record.phase}" if where is None else (
        f"phase {where['phase']} of {where['of']} ({where['kind']})")  # fmt: skip
    prefix = {State.PAUSED: "paused, ", State.DRAFT: "draft, "}.get(record.state, "")
    return f"{prefix}{text}: {verdict}"


def over_time(
    store: Store, record: ExperimentRecord, looks: list[dict[str, Any]],
    kinds: dict[str, tuple[str, str]],
) -> list[dict[str, Any]]:  # fmt: skip
    """Every phase's points, oldest phase first: its looks, or else its snapshots."""
    spec = record.spec
    primary = spec.metrics.primary.name if spec.metrics else None
    phases = [p.name for p in record.status.phases]
    phases += sorted({x["phase"] for x in looks} - set(phases))  # e.g. `decide --phase` of one
    points = []
    for phase in phases:
        mine = [x for x in looks if x["phase"] == phase]
        points += look_points(mine, primary) if mine else snapshot_points(store, spec, phase, kinds)
    return points


def look_points(looks: list[dict[str, Any]], primary: str | None) -> list[dict[str, Any]]:
    """One point per recorded look: exposures per arm and each treatment's primary effect."""
    points = []
    for look in looks:
        effects = {
            c["variant"]: {k: c.get(k) for k in
                           ("effect", "low", "high", "pvalue", "z", "information", "boundary")}
            for c in look["comparisons"] if c["metric"] == primary
        }  # fmt: skip
        points.append({
            "at": look["at"], "phase": look["phase"], "look": look["look"], "by": look["by"],
            "observational": look["observational"], "status": look["status"],
            "units": {v: a["exposures"] for v, a in look["arms"].items()}, "effects": effects,
        })  # fmt: skip
    return points


def snapshot_points(
    store: Store, spec: Any, phase: str, kinds: dict[str, tuple[str, str]]
) -> list[dict[str, Any]]:
    """Per snapshot: exposures per arm and, for the primary metric, each treatment's effect
    with the running (always-valid) interval and p-value as a monitor would have seen them."""
    from analysis import ExperimentStats, SequentialMonitor
    from analysis.msprt import Kind, effect_variance

    control = spec.control_variant.key
    primary = spec.metrics.primary.name if spec.metrics else None
    cap = spec.analysis.max_units_per_arm
    monitors: dict[str, Any] = {}
    points = []
    for snap in store.snapshots(spec.name, phase):
        stats = ExperimentStats.from_report(snap.stats)
        point: dict[str, Any] = {"at": snap.at, "phase": phase, "units": dict(stats.units),
                                 "effects": {}}  # fmt: skip
        per_arm = stats.metrics.get(primary or "", {})
        a = per_arm.get(control)
        for variant, b in per_arm.items():
            if variant == control or a is None or a.n < 2 or b.n < 2:
                continue
            kind: Kind = "proportion" if primary and kinds[primary][1] == "proportion" else "mean"
            monitor = monitors.setdefault(
                variant,
                SequentialMonitor(alpha=spec.analysis.alpha, n_star=spec.analysis.mixture_n,
                                  kind=kind),
            )  # fmt: skip
            look = monitor.update(a, b)
            v = effect_variance(a, b, kind)
            z = look.estimate / math.sqrt(v) if v > 0 and math.isfinite(look.estimate) else None
            point["effects"][variant] = {
                "effect": num(look.estimate), "low": num(look.ci_low),
                "high": num(look.ci_high), "pvalue": num(look.pvalue), "z": num(z),
                "information": num(min(a.n, b.n) / cap) if cap else None, "boundary": None,
            }  # fmt: skip
        points.append(point)
    return points


def num(value: float | None) -> float | None:
    """The value if finite, else None: the report is plain JSON (no nan or inf)."""
    return value if value is not None and math.isfinite(value) else None
