"""SQLite part of the store for exposures, events, folded statistics and snapshots.

Every batch is one BEGIN IMMEDIATE transaction: read the state of the batch's units and of the
phase, fold in Python (`experiments.folding`), write back what changed.  A batch is therefore
applied whole or not at all, and a retried batch finds its event ids and changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.folding import Event, Folder, FoldPlan, Loaded, fold_events, fold_exposures
from experiments.store.protocol import IngestResult, Snapshot
from experiments.store.sqlite_base import SQLiteBase, chunks

STATS_TABLES = ("exposures", "unit_totals", "stats", "shifts", "phases", "events", "snapshots")


class SQLiteStats(SQLiteBase):
    def record_exposures(
        self,
        experiment: str,
        phase: str,
        plan: FoldPlan,
        exposures: Mapping[str, tuple[str, float]],
    ) -> int:
        with self._write() as db:
            loaded = _load(db, experiment, phase, list(exposures), [])
            folder = fold_exposures(plan, loaded, exposures)
            db.executemany(
                "INSERT INTO exposures VALUES (?, ?, ?, ?, ?)",
                [
                    (experiment, phase, u, v, exposures[u][1])
                    for u, v in folder.new_exposures.items()
                ],
            )
            _write_back(db, experiment, phase, folder)
        return len(folder.new_exposures)

    def ingest_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        received = time.time()
        units = list(dict.fromkeys(e.unit for e in events))
        with self._write() as db:
            loaded = _load(db, experiment, phase, units, [e.event_id for e in events])
            folder, new, duplicates = fold_events(plan, loaded, events)
            db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        experiment,
                        e.event_id,
                        phase,
                        e.unit,
                        e.series,
                        e.value,
                        e.timestamp,
                        received,
                    )
                    for e in new
                ],
            )
            _write_back(db, experiment, phase, folder)
        return IngestResult(len(new), duplicates)

    def phase_stats(self, experiment: str, phase: str) -> tuple[dict[str, float], dict[str, float]]:
        with self._read() as db:
            return _phase_state(db, experiment, phase)

    def phases(self, experiment: str) -> list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT phase FROM phases WHERE experiment = ? ORDER BY first_seen", (experiment,)
            ).fetchall()
        return [row[0] for row in rows]

    def phase_plan(self, experiment: str, phase: str) -> FoldPlan | None:
        with self._read() as db:
            row = db.execute(
                "SELECT plan FROM phases WHERE experiment = ? AND phase = ?", (experiment, phase)
            ).fetchone()
        return None if row is None else FoldPlan.from_json(row[0])

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
                (snapshot.experiment, snapshot.phase, snapshot.at, json.dumps(snapshot.stats)),
            )

    def snapshots(self, experiment: str, phase: str | None = None) -> list[Snapshot]:
        query = "SELECT phase, at, stats FROM snapshots WHERE experiment = ?"
        args: tuple[str, ...] = (experiment,)
        if phase is not None:
            query, args = query + " AND phase = ?", (experiment, phase)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY at", args).fetchall()
        return [Snapshot(experiment, p, at, json.loads(stats)) for p, at, stats in rows]

    def raw_events(
        self,
        experiment: str,
        *,
        since: float = 0.0,
        after: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT event_id, phase, unit, metric, value, timestamp, received_at FROM events"
                " WHERE experiment = ? AND (received_at > ? OR (received_at = ? AND event_id > ?))"
                " ORDER BY received_at, event_id LIMIT ?",
                (experiment, since, since, "" if after is None else after, limit),
            ).fetchall()
        names = ("event_id", "phase", "unit", "metric", "value", "timestamp", "received_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def purge_events(self, received_before: float) -> int:
        with self._write() as db:
            return db.execute(
                "DELETE FROM events WHERE received_at < ?", (received_before,)
            ).rowcount


def _load(
    db: sqlite3.Connection,
    experiment: str,
    phase: str,
    units: Sequence[str],
    event_ids: Sequence[str],
) -> Loaded:
    seen: set[str] = set()
    for chunk in chunks(list(dict.fromkeys(event_ids))):
        marks = ",".join("?" * len(chunk))
        seen.update(
            row[0]
            for row in db.execute(
                f"SELECT event_id FROM events WHERE experiment = ? AND event_id IN ({marks})",
                (experiment, *chunk),
            )
        )
    totals: dict[tuple[str, str], float] = {}
    exposed: dict[str, str] = {}
    for chunk in chunks(units):
        marks = ",".join("?" * len(chunk))
        for unit, series, total in db.execute(
            "SELECT unit, series, total FROM unit_totals WHERE experiment = ? AND phase = ?"
            f" AND unit IN ({marks})",
            (experiment, phase, *chunk),
        ):
            totals[unit, series] = total
        exposed.update(
            db.execute(
                "SELECT unit, variant FROM exposures WHERE experiment = ? AND phase = ?"
                f" AND unit IN ({marks})",
                (experiment, phase, *chunk),
            ).fetchall()
        )
    stats, shifts = _phase_state(db, experiment, phase)
    return Loaded(seen, totals, exposed, stats, shifts)


def _phase_state(
    db: sqlite3.Connection, experiment: str, phase: str
) -> tuple[dict[str, float], dict[str, float]]:
    key = (experiment, phase)
    stats = dict(
        db.execute(
            "SELECT key, value FROM stats WHERE experiment = ? AND phase = ?", key
        ).fetchall()
    )
    shifts = dict(
        db.execute(
            "SELECT series, k FROM shifts WHERE experiment = ? AND phase = ?", key
        ).fetchall()
    )
    return stats, shifts


def _write_back(db: sqlite3.Connection, experiment: str, phase: str, folder: Folder) -> None:
    db.executemany(
        "INSERT INTO unit_totals VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
        " SET total = excluded.total",
        [(experiment, phase, u, s, folder.totals[u, s]) for u, s in folder.changed_totals],
    )
    db.executemany(
        "INSERT INTO stats VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
        [(experiment, phase, k, folder.stats[k]) for k in folder.changed_stats],
    )
    db.executemany(
        "INSERT INTO shifts VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET k = excluded.k",
        [(experiment, phase, s, folder.shifts[s]) for s in folder.changed_shifts],
    )
    if folder.changed_totals or folder.new_exposures:
        db.execute(
            "INSERT OR IGNORE INTO phases VALUES (?, ?, ?, ?)",
            (experiment, phase, time.time(), folder.plan.to_json()),
        )
