"""Per-arm statistics as data scientists read them: the JSON of the stats endpoint, snapshots,
and flat tables (one row per phase, variant and metric) for CSV, Parquet and pandas."""

from __future__ import annotations

import time
from typing import Any

from experiments.folding import FoldPlan, export
from experiments.store import ExperimentRecord, Snapshot, StatsStore


def record_data(record: ExperimentRecord, *, defaults: bool = True) -> dict[str, Any]:
    """An experiment as JSON: status, revision, phase and spec (without defaults, if asked)."""
    return {
        "name": record.name,
        "revision": record.revision,
        "status": record.status.value,
        "phase": record.phase,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "spec": record.spec.model_dump(mode="json", by_alias=True, exclude_defaults=not defaults),
    }


def phase_report(
    store: StatsStore, record: ExperimentRecord, phase: str | None = None
) -> dict[str, Any]:
    """`{"experiment", "phase", "phases", "arms": {variant: {"exposures", "metrics": {...}}}}`."""
    phase = phase or record.phase
    stats, shifts = store.phase_stats(record.name, phase)
    # A phase's statistics are read with the plan they were built with.
    plan = store.phase_plan(record.name, phase) or FoldPlan.from_spec(record.spec)
    return {
        "experiment": record.name,
        "phase": phase,
        "phases": store.phases(record.name),
        "arms": export(plan, stats, shifts),
    }


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
