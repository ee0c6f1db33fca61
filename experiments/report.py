"""An experiment's report as data: the headline and the decision with its reasons, every
metric per arm with its effect and always-valid interval, the same at every recorded look
(experiments.report_history), the traffic split and SRM, the rollout's stages, guardrail
readings and audit log.  Plain JSON (no nan or inf), which `experiments.report_html` draws."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from experiments.report_distributions import distributions_section
from experiments.report_history import basis_look, headline, num, over_time
from experiments.report_segments import segments_answer
from experiments.report_shadow import shadow_section
from experiments.reporting import phase_report
from experiments.store import ExperimentRecord, Store


def build_report(store: Store, name: str) -> dict[str, Any]:
    from analysis import ExperimentStats

    record = store.get_experiment(name)
    spec = record.spec
    rollout = record.status.rollout
    phase = record.phase  # the analysed phase: the current one, or the one it concluded with
    looks = store.looks(record.uid)
    current = phase_report(store, record, phase)  # one read: the look now, segments, bins
    look = basis_look(store, record, [x for x in looks if x["phase"] == phase], current)
    stats = ExperimentStats.from_report(look["arms"])
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
            {"variant": v, "units": a.n, "mean": num(a.mean)} for v, a in sorted(per_arm.items())
        ]
        comparisons = [c for c in look["comparisons"] if c["metric"] == metric]
        metrics_out.append({
            "metric": metric, "role": role, "arms": rows,
            "comparisons": [
                {"variant": c["variant"], "verdict": c["verdict"], "effect": c["effect"],
                 "low": c["low"], "high": c["high"], "pvalue": c["pvalue"],
                 "relative": point_lift(per_arm, control, c["variant"])}
                for c in comparisons
            ],
        })  # fmt: skip
    points = over_time(store, record, looks, kinds)
    audit = store.audit(record.uid)
    times = [e["at"] for e in audit if "at" in e] + [p["at"] for p in points]
    return {
        "experiment": name,
        "headline": headline(record, look),
        "status": record.state.value,
        "outcome": record.status.outcome.value if record.status.outcome else None,
        "phase": phase,
        "weights": record.served_weights,
        "decision": {"status": look["status"], "winner": look["winner"],
                     "reasons": list(look["reasons"]), "srm_pvalue": look["srm_pvalue"],
                     "look": look["look"], "at": look["at"], "by": look["by"],
                     "observational": look["observational"]},
        "metrics": metrics_out,
        "looks_recorded": len(looks),  # in every phase; the analysed one's are `decision`'s
        "over_time": points,
        "rollout": rollout,
        "routes": _routes(record),
        "group_sequential": _design(spec),
        "alpha": spec.analysis.alpha,
        "shadow": shadow_section(store, spec, phase, rollout),
        "segments": segments_answer(record, current) if spec.segments else None,
        "distributions": distributions_section(current),
        "audit": audit,
        # The time axes count from the first thing that happened, up to when this was built.
        "started_at": min(times, default=record.created_at),
        "built_at": time.time(),
    }  # fmt: skip


def _routes(record: ExperimentRecord) -> dict[str, Any]:
    """The route plan in force: the rollout's, or without one the weights served now."""
    from controlplane.rollout import RolloutState, route_plan
    from controlplane.routing.plan import plan_routes

    spec, rollout = record.effective_spec, record.status.rollout
    if rollout:
        plan = route_plan(spec, RolloutState.from_dict(rollout))
    else:
        plan = plan_routes(spec, {k: round(w) for k, w in record.served_weights.items()})
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
        "z": [num(z) for z in design.z],
        "max_units_per_arm": cfg.max_units_per_arm,
    }


def point_lift(per_arm: Mapping[str, Any], control: str, variant: str) -> float | None:
    """(b̄ − ā)/|ā|; None where it is undefined (an empty arm, a control mean of 0)."""
    a, b = per_arm.get(control), per_arm.get(variant)
    if a is None or b is None or not a.n or not b.n or a.mean == 0:
        return None
    return num((b.mean - a.mean) / abs(a.mean))
