"""An experiment's report as data: the decision and its reasons, every metric per arm with its
effect and always-valid interval, the same over time from the snapshots, the traffic split
and SRM, the rollout's stages, guardrail readings and audit log.  Plain JSON (no nan or inf),
which `experiments.report_html` draws."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from experiments.report_shadow import shadow_section
from experiments.reporting import analysed_spec, phase_report
from experiments.store import Store


def _num(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def build_report(store: Store, name: str) -> dict[str, Any]:
    from analysis import ExperimentStats, SequentialMonitor, decide
    from analysis.decision import DecisionState

    record = store.get_experiment(name)
    spec = record.spec
    rollout = record.status.rollout
    phase = record.phase  # the analysed phase: the current one, or the one it concluded with
    arms = phase_report(store, record, phase)["arms"]
    stats = ExperimentStats.from_report(arms)
    saved = (rollout or {}).get("decision")
    previous = DecisionState.from_dict(saved) if saved else None
    decision = decide(analysed_spec(record, phase), stats, (), previous)
    control = spec.control_variant.key
    kinds: dict[str, tuple[str, str]] = {}
    if spec.metrics is not None:
        groups = [("primary", [spec.metrics.primary]), ("secondary", spec.metrics.secondary),
                  ("guardrail", spec.metrics.guardrails)]  # fmt: skip
        for role, metrics in groups:
            for m in metrics:
                kinds[m.name] = (role, "proportion" if m.kind.value == "conversion" else "mean")
    metrics_out = []
    for metric, (role, _) in kinds.items():
        per_arm = stats.metrics.get(metric, {})
        rows = [
            {"variant": v, "units": a.n, "mean": _num(a.mean)} for v, a in sorted(per_arm.items())
        ]
        comparisons = [c for c in decision.comparisons if c.metric == metric]
        metrics_out.append({
            "metric": metric, "role": role, "arms": rows,
            "comparisons": [
                {"variant": c.variant, "verdict": c.verdict, "effect": c.estimate,
                 "low": c.ci_low, "high": c.ci_high, "pvalue": c.pvalue,
                 "relative": _relative(per_arm, control, c.variant)}
                for c in comparisons
            ],
        })  # fmt: skip
    return {
        "experiment": name,
        "status": record.state.value,
        "outcome": record.status.outcome.value if record.status.outcome else None,
        "phase": phase,
        "weights": record.served_weights,
        "decision": {"status": decision.status.value, "winner": decision.winner,
                     "reasons": list(decision.reasons), "srm_pvalue": decision.srm_pvalue},
        "metrics": metrics_out,
        "over_time": _over_time(store, spec, phase, kinds, SequentialMonitor),
        "rollout": rollout,
        "routes": _routes(record.effective_spec, rollout),
        "group_sequential": _design(spec),
        "shadow": shadow_section(store, spec, phase, rollout),
        "audit": store.audit(record.uid),
    }  # fmt: skip


def _routes(spec: Any, rollout: dict[str, Any] | None) -> dict[str, Any]:
    """The route plan in force: the rollout's, or the spec's weights before any rollout."""
    from controlplane.rollout import RolloutState, route_plan
    from controlplane.routing.plan import plan_routes

    if rollout:
        plan = route_plan(spec, RolloutState.from_dict(rollout))
    else:
        plan = plan_routes(spec, {v.key: round(v.weight) for v in spec.variants})
    mirror = plan.mirror
    return {
        "rules": [{"name": r.name, "header": r.header, "value": r.value, "variant": r.variant}
                  for r in plan.rules],
        "weights": dict(plan.weights),
        "mirror": None if mirror is None else {"variant": mirror.variant,
                                               "percent": mirror.percent,
                                               "methods": list(mirror.methods)},
    }  # fmt: skip


def _design(spec: Any) -> dict[str, Any] | None:
    """The planned Lan–DeMets boundaries, for a group-sequential analysis."""
    from analysis import gst_boundaries
    from analysis.gst_look import spending_of

    cfg = spec.analysis
    if cfg.method.value != "group-sequential":
        return None
    design = gst_boundaries(
        [k / cfg.looks for k in range(1, cfg.looks + 1)], alpha=cfg.alpha, spending=spending_of(cfg)
    )
    return {
        "fractions": list(design.information_fractions),
        "z": [_num(z) for z in design.z],
        "max_units_per_arm": cfg.max_units_per_arm,
    }


def _relative(per_arm: Mapping[str, Any], control: str, variant: str) -> float | None:
    a, b = per_arm.get(control), per_arm.get(variant)
    if a is None or b is None or not a.n or not b.n or a.mean == 0:
        return None
    return _num((b.mean - a.mean) / abs(a.mean))


def _over_time(
    store: Store, spec: Any, phase: str, kinds: dict[str, tuple[str, str]], monitor_type: Any
) -> list[dict[str, Any]]:
    """Per snapshot: exposures per arm and, for the primary metric, each treatment's effect
    with the running (always-valid) interval and p-value as a monitor would have seen them."""
    from analysis import ExperimentStats
    from analysis.msprt import Kind, effect_variance

    control = spec.control_variant.key
    primary = spec.metrics.primary.name if spec.metrics else None
    cap = spec.analysis.max_units_per_arm
    monitors: dict[str, Any] = {}
    points = []
    for snap in store.snapshots(spec.name, phase):
        stats = ExperimentStats.from_report(snap.stats)
        point: dict[str, Any] = {"at": snap.at, "units": dict(stats.units), "effects": {}}
        per_arm = stats.metrics.get(primary or "", {})
        a = per_arm.get(control)
        for variant, b in per_arm.items():
            if variant == control or a is None or a.n < 2 or b.n < 2:
                continue
            kind: Kind = "proportion" if primary and kinds[primary][1] == "proportion" else "mean"
            monitor = monitors.setdefault(
                variant,
                monitor_type(alpha=spec.analysis.alpha, n_star=spec.analysis.mixture_n, kind=kind),
            )
            look = monitor.update(a, b)
            v = effect_variance(a, b, kind)
            z = look.estimate / math.sqrt(v) if v > 0 and math.isfinite(look.estimate) else None
            point["effects"][variant] = {
                "effect": _num(look.estimate), "low": _num(look.ci_low),
                "high": _num(look.ci_high), "pvalue": _num(look.pvalue), "z": _num(z),
                "information": _num(min(a.n, b.n) / cap) if cap else None,
            }  # fmt: skip
        points.append(point)
    return points
