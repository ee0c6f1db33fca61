"""Per-arm statistics as data scientists read them: the JSON of the stats endpoint, snapshots,
and flat tables (one row per phase, variant and metric) for CSV, Parquet and pandas."""

from __future__ import annotations

import time
from typing import Any

from experiments.distributions import export_distributions
from experiments.folding import FoldPlan, export, export_segments
from experiments.spec import ExperimentSpec
from experiments.status import Status
from experiments.store import ExperimentRecord, Snapshot, StatsStore
from experiments.store.logfold import SETTLE_S
from experiments.warehouse.look import overlay, reads_sql, sql_report


def record_data(record: ExperimentRecord, *, defaults: bool = True) -> dict[str, Any]:
    """An experiment as `{"name", "generation", "created_at", "updated_at", "spec", "status"}`,
    as Kubernetes shows an object (the spec without defaults, if asked); `status.weights` is
    what assignment hands out now."""
    status = record.status.to_dict()
    status.pop("rollout")  # the controller's working state: `status.position` summarises it
    status["position"] = position(record)
    status["weights"] = record.served_weights
    return {
        "name": record.name,
        "generation": record.generation,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "spec": record.spec.model_dump(mode="json", by_alias=True, exclude_defaults=not defaults),
        "status": status,
    }


def position(record: ExperimentRecord) -> dict[str, Any] | None:
    """Where the rollout stands: phase (1-based, with its kind), canary step, its own status."""
    rollout, spec = record.status.rollout, record.spec
    if not rollout or spec.rollout is None:
        return None
    index = int(rollout["phase"])
    phases = spec.rollout.phases
    kind = phases[index].kind if index < len(phases) else "done"
    return {"phase": index + 1, "of": len(phases), "kind": kind, "step": int(rollout["step"]) + 1,
            "rollout": rollout["status"], "reason": rollout.get("reason", "")}  # fmt: skip


def analysed_spec(
    record: ExperimentRecord, phase: str | None = None, status: Status | None = None
) -> ExperimentSpec:
    """The spec as a phase's sample was planned: the arms at the phase's planned weights, which
    SRM is checked against, whatever the routes did after it (a promotion, a rollback).  A
    phase planned without fixed weights (the first, or a canary's) takes the weights in force."""
    status = status or record.status
    planned = status.phase_record(phase)
    if planned is not None and planned.weights is not None:
        return record.spec.with_weights(planned.weights)
    return record.effective_spec


def phase_report(
    store: StatsStore,
    record: ExperimentRecord,
    phase: str | None = None,
    *,
    settle: float = SETTLE_S,
) -> dict[str, Any]:
    """`{"experiment", "phase", "phases", "arms": {variant: {"exposures", "metrics": {...}}},
    "fold": {"pending", "lag_s", "folded_through"}}`, with `"segments": {attribute: {value:
    arms}}` and `"distributions"` (experiments.distributions) where the phase's plan has them,
    and `"sources"` (what ran) where metrics come from SQL (experiments.warehouse.look):
    the statistics after settling the log
    (`logfold`), and how far they are behind it still (everything appended before
    `folded_through`, unix s, is in them).  `settle` bounds the folding a read does first."""
    phase = phase or record.phase
    if record.spec.source is not None:  # every metric is read from SQL: the store holds none
        return sql_report(store, record, phase)
    fold = store.settle(record.name, timeout=settle)  # first: what it says is pending may be in
    stats, shifts = store.phase_stats(record.name, phase, settle=0)
    # A phase's statistics are read with the plan they were built with.
    plan = store.phase_plan(record.name, phase) or FoldPlan.from_spec(record.spec)
    report = {
        "experiment": record.name,
        "phase": phase,
        "phases": store.phases(record.name),
        "arms": export(plan, stats, shifts),
        "fold": fold.to_dict(),
    }
    if plan.segments:
        report["segments"] = export_segments(plan, stats, shifts)
    if plan.histograms:
        report["distributions"] = export_distributions(stats, plan.histograms)
    if reads_sql(record):  # some metrics name a SQL source of their own
        overlay(report, store, record, phase)
    return report


def take_snapshot(store: StatsStore, record: ExperimentRecord, *, bucket: float = 0.0) -> Snapshot:
    """Keep the current phase's statistics.  With `bucket` (seconds) the time is rounded down
    to it, so replicas snapshotting on the same schedule write one snapshot, not one each."""
    now = time.time()
    at = now - now % bucket if bucket > 0 else now
    report = phase_report(store, record)
    snapshot = Snapshot(record.name, report["phase"], at, report["arms"])
    store.save_snapshot(snapshot)
    return snapshot


STAT_COLUMNS = (
    "n",
    "sum",
    "sum_sq",
    "m2",
    "sum_x",
    "sum_x2",
    "sum_xy",
    "sum_num_den",
    "sum_num_x_den_x",
    "numerator",
    "denominator",
)


def stat_rows(
    experiment: str, phase: str, arms: dict[str, Any], at: float | None = None
) -> list[dict[str, Any]]:
    """One row per variant and metric, with every statistic as a column (missing: None)."""
    rows = []
    for variant, arm in arms.items():
        for metric, values in arm["metrics"].items():
            row: dict[str, Any] = {"experiment": experiment, "phase": phase}
            if at is not None:
                row["at"] = at
            row |= {"variant": variant, "metric": metric, "exposures": arm["exposures"]}
            row |= {column: values.get(column) for column in STAT_COLUMNS}
            rows.append(row)
    return rows


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """A raw event as a table row: its segment values as `segment.<attribute>` columns."""
    segments = event.pop("segments", None) or {}
    return event | {f"segment.{k}": v for k, v in segments.items()}
