"""A phase report whose metrics come, in whole or in part, from SQL sources: each source's
answer (experiments.warehouse.read) put into the report where the built-in store's folded
statistics would be.  The spec's top-level source gives the exposures (SRM's counts) and every
metric not naming another; a metric's own source gives that metric alone, beside exposures
from wherever the others come.  What ran is kept in the report's `sources`, which the look's
history records (experiments.looks_log)."""

from __future__ import annotations

import time
from typing import Any

from experiments.errors import InvalidInputError
from experiments.store.protocol import ControlStore, ExperimentRecord, StatsStore
from experiments.warehouse.read import read_source, sql_sources


def reads_sql(record: ExperimentRecord) -> bool:
    return bool(sql_sources(record.spec))


def sql_report(
    store: StatsStore, record: ExperimentRecord, phase: str, *, now: float | None = None
) -> dict[str, Any]:
    """The report of a spec whose top-level source is SQL: no statistics read from the store
    (it only shares the answers, experiments.warehouse.read)."""
    report: dict[str, Any] = {
        "experiment": record.name, "phase": phase,
        "phases": [p.name for p in record.status.phases], "arms": {},
    }  # fmt: skip
    overlay(report, store, record, phase, now=now)
    at = min((r["at"] for r in report["sources"]), default=time.time())
    report["fold"] = {"pending": 0, "lag_s": max(time.time() - at, 0.0), "folded_through": at}
    return report


def overlay(
    report: dict[str, Any],
    store: StatsStore,
    record: ExperimentRecord,
    phase: str,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Put the SQL sources' statistics into `report` (in place), and what ran in `sources`."""
    planned = record.status.phase_record(phase)
    if planned is None:
        raise InvalidInputError(f"experiment {record.name!r} has no phase {phase!r}")
    spec, now = record.spec, time.time() if now is None else now
    shared = store if isinstance(store, ControlStore) else None
    ran = []
    for source, metrics in sql_sources(spec):
        answer = read_source(
            spec,
            source,
            metrics,
            key=(record.uid, phase),
            phase=planned,
            now=now,
            shared=shared,
        )
        ran.append(answer.ran)
        if answer.distributions:
            report.setdefault("distributions", {}).update(answer.distributions)
        counts = source == spec.source
        _merge(report["arms"], answer.arms, exposures=counts)
        for attribute, values in answer.segments.items():
            cells = report.setdefault("segments", {}).setdefault(attribute, {})
            for value, arms in values.items():
                _merge(cells.setdefault(value, {}), arms, exposures=counts)
    report["sources"] = ran
    return report


def _merge(into: dict[str, Any], arms: dict[str, Any], *, exposures: bool) -> None:
    for variant, arm in arms.items():
        held = into.setdefault(variant, {"exposures": arm["exposures"], "metrics": {}})
        if exposures:
            held["exposures"] = arm["exposures"]
        held["metrics"].update(arm["metrics"])
