"""SQLite part of the store for exposures, events, folded statistics and snapshots.

The log is two append tables in WAL mode, `exposure_log` (one row per unit and phase: the first
exposure) and `event_log` (one row per event id), each numbered by an AUTOINCREMENT `seq` that
is never reused.  An append is one short BEGIN IMMEDIATE transaction; a fold reads the rows past
the experiment's `fold_position`, folds them (`foldbatch`), and writes the units' states, the
statistics and the new position in one transaction, so it is applied whole or not at all and a
fold that dies is redone from the same position.  SQLite has one writer at a time: its log is a
single partition.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments.foldbatch import Exposure, UnitState, fold_batch
from experiments.folding import Event, FoldPlan
from experiments.segments import decode_pairs, encode_pairs
from experiments.store.logfold import FOLD_BATCH, SETTLE_S, Settling
from experiments.store.protocol import FoldState, IngestResult, Snapshot
from experiments.store.sqlite_base import SQLiteBase, chunks

STATS_TABLES = (
    "exposure_log",
    "event_log",
    "unit_state",
    "fold_position",
    "stats",
    "shifts",
    "phases",
    "snapshots",
)


class SQLiteStats(Settling, SQLiteBase):
    def append_exposures(
        self, experiment: str, phase: str, plan: FoldPlan, exposures: Sequence[Exposure]
    ) -> int:
        with self._write() as db:
            _register(db, experiment, phase, plan)
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO exposure_log (experiment, phase, unit, variant, at,"
                " generation, segments) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (experiment, phase, x.unit, x.variant, x.at, x.generation,
                     encode_pairs(x.segments))
                    for x in exposures
                ],
            )
            return db.total_changes - before

    def append_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        received = time.time()
        with self._write() as db:
            _register(db, experiment, phase, plan)
            seen = _seen(db, experiment, [e.event_id for e in events])
            # One pass: each new event's row, ready for executemany, or its position if seen.
            rows: list[tuple[str, str, str, str, str, float, float, float, str]] = []
            duplicates: list[int] = []
            for i, e in enumerate(events):
                if e.event_id in seen:
                    duplicates.append(i)
                else:
                    seen.add(e.event_id)
                    rows.append(
                        (experiment, e.event_id, phase, e.unit, e.series, e.value, e.timestamp,
                         received, encode_pairs(e.segments))
                    )  # fmt: skip
            db.executemany(
                "INSERT INTO event_log (experiment, event_id, phase, unit, metric, value,"
                " timestamp, received_at, segments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return IngestResult(len(rows), duplicates)

    def fold(self, experiment: str, *, limit: int = FOLD_BATCH) -> int:
        """Read and fold in a read transaction (WAL: appends go on meanwhile), then write in a
        short write transaction if the position has not moved; else another folder did it."""
        with self._snapshot() as db:
            position = _position(db, experiment)
            x_rows = db.execute(
                "SELECT seq, phase, unit, variant, at, generation, segments FROM exposure_log"
                " WHERE experiment = ? AND seq > ? ORDER BY seq LIMIT ?",
                (experiment, position[0], limit),
            ).fetchall()
            e_rows = db.execute(
                "SELECT seq, phase, unit, metric, value, timestamp, event_id, segments"
                " FROM event_log"
                " WHERE experiment = ? AND seq > ? ORDER BY seq LIMIT ?",
                (experiment, position[1], limit),
            ).fetchall()
            if not x_rows and not e_rows:
                return 0
            by_phase: dict[str, tuple[list[Exposure], list[Event]]] = {}
            for _, phase, unit, variant, at, generation, segs in x_rows:
                by_phase.setdefault(phase, ([], []))[0].append(
                    Exposure(unit, variant, at, generation, decode_pairs(segs))
                )
            for _, phase, unit, series, value, at, event_id, segs in e_rows:
                by_phase.setdefault(phase, ([], []))[1].append(
                    Event(event_id, unit, series, value, at, decode_pairs(segs))
                )
            folds = [_fold_phase(db, experiment, p, *todo) for p, todo in by_phase.items()]
        writes = [fold() for fold in folds]
        moved = (x_rows[-1][0] if x_rows else position[0], e_rows[-1][0] if e_rows else position[1])
        with self._write() as db:
            if _position(db, experiment) != position:
                return 0
            for write in writes:
                write(db)
            db.execute(
                "INSERT OR REPLACE INTO fold_position VALUES (?, ?, ?)", (experiment, *moved)
            )
        return len(x_rows) + len(e_rows)

    def fold_state(self, experiment: str) -> FoldState:
        with self._read() as db:
            x_pos, e_pos = _position(db, experiment)
            x_count, x_oldest = db.execute(
                "SELECT count(*), min(at) FROM exposure_log WHERE experiment = ? AND seq > ?",
                (experiment, x_pos),
            ).fetchone()
            e_count, e_oldest = db.execute(
                "SELECT count(*), min(received_at) FROM event_log WHERE experiment = ? AND seq > ?",
                (experiment, e_pos),
            ).fetchone()
        times = [t for t in (x_oldest, e_oldest) if t is not None]
        return FoldState(x_count + e_count, min(times) if times else None)

    def log_length(self, experiment: str) -> int:
        with self._read() as db:
            row = db.execute(
                "SELECT (SELECT count(*) FROM exposure_log WHERE experiment = ?)"
                " + (SELECT count(*) FROM event_log WHERE experiment = ?)",
                (experiment, experiment),
            ).fetchone()
        return int(row[0])

    def phase_stats(
        self, experiment: str, phase: str, *, settle: float = SETTLE_S
    ) -> tuple[dict[str, float], dict[str, float]]:
        if settle > 0:
            self.settle(experiment, timeout=settle)
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
            return _plan(db, experiment, phase)

    def unit_exposures(self, experiment: str, phase: str, units: Sequence[str]) -> dict[str, Any]:
        """The logged first exposure of each unit that has one: variant, time, generation."""
        out: dict[str, Any] = {}
        with self._read() as db:
            for chunk in chunks(units):
                marks = ",".join("?" * len(chunk))
                for unit, variant, at, generation in db.execute(
                    "SELECT unit, variant, at, generation FROM exposure_log"
                    f" WHERE experiment = ? AND phase = ? AND unit IN ({marks})",
                    (experiment, phase, *chunk),
                ):
                    out[unit] = {"variant": variant, "at": at, "generation": generation}
        return out

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
                "SELECT event_id, phase, unit, metric, value, timestamp, received_at, segments"
                " FROM event_log WHERE experiment = ?"
                " AND (received_at > ? OR (received_at = ? AND event_id > ?))"
                " ORDER BY received_at, event_id LIMIT ?",
                (experiment, since, since, "" if after is None else after, limit),
            ).fetchall()
        names = ("event_id", "phase", "unit", "metric", "value", "timestamp", "received_at")
        return [
            {**dict(zip(names, row[:-1], strict=True)), "segments": dict(decode_pairs(row[-1]))}
            for row in rows
        ]

    def raw_exposures(
        self, experiment: str, phase: str, *, after: str = "", limit: int = 100_000
    ) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT unit, variant, at, generation, segments FROM exposure_log"
                " WHERE experiment = ? AND phase = ? AND unit > ? ORDER BY unit LIMIT ?",
                (experiment, phase, after, limit),
            ).fetchall()
        names = ("unit", "variant", "at", "generation")
        return [
            {**dict(zip(names, row[:-1], strict=True)), "segments": dict(decode_pairs(row[-1]))}
            for row in rows
        ]

    def purge_events(self, received_before: float) -> int:
        with self._write() as db:
            return db.execute(
                "DELETE FROM event_log WHERE received_at < ? AND seq <= coalesce("
                " (SELECT events FROM fold_position f WHERE f.experiment = event_log.experiment),"
                " 0)",
                (received_before,),
            ).rowcount


def _register(db: sqlite3.Connection, experiment: str, phase: str, plan: FoldPlan) -> None:
    """The phase and the plan its statistics are folded with (the first plan stays)."""
    db.execute(
        "INSERT OR IGNORE INTO phases VALUES (?, ?, ?, ?)",
        (experiment, phase, time.time(), plan.to_json()),
    )


def _seen(db: sqlite3.Connection, experiment: str, event_ids: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    for chunk in chunks(list(dict.fromkeys(event_ids))):
        marks = ",".join("?" * len(chunk))
        seen.update(
            row[0]
            for row in db.execute(
                f"SELECT event_id FROM event_log WHERE experiment = ? AND event_id IN ({marks})",
                (experiment, *chunk),
            )
        )
    return seen


def _position(db: sqlite3.Connection, experiment: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT exposures, events FROM fold_position WHERE experiment = ?", (experiment,)
    ).fetchone()
    return (0, 0) if row is None else (row[0], row[1])


def _plan(db: sqlite3.Connection, experiment: str, phase: str) -> FoldPlan | None:
    row = db.execute(
        "SELECT plan FROM phases WHERE experiment = ? AND phase = ?", (experiment, phase)
    ).fetchone()
    return None if row is None else FoldPlan.from_json(row[0])


def _fold_phase(
    db: sqlite3.Connection,
    experiment: str,
    phase: str,
    exposures: list[Exposure],
    events: list[Event],
) -> Callable[[], Callable[[sqlite3.Connection], None]]:
    """Read what folding one phase's entries needs; returns the fold, to run after the read
    transaction (and the connection's lock: appends go on meanwhile), which returns what
    writes the result."""
    plan = _plan(db, experiment, phase)
    assert plan is not None  # registered with the first append of the phase
    units = list(dict.fromkeys([x.unit for x in exposures] + [e.unit for e in events]))
    states = dict.fromkeys(units, "")
    for chunk in chunks(units):
        marks = ",".join("?" * len(chunk))
        states.update(
            db.execute(
                "SELECT unit, state FROM unit_state WHERE experiment = ? AND phase = ?"
                f" AND unit IN ({marks})",
                (experiment, phase, *chunk),
            ).fetchall()
        )
    stats, shifts = _phase_state(db, experiment, phase)

    def fold() -> Callable[[sqlite3.Connection], None]:
        decoded = {u: UnitState.decode(text or None) for u, text in states.items()}
        result = fold_batch(plan, decoded, exposures, events, stats, shifts)
        records = [(experiment, phase, u, s.encode()) for u, s in decoded.items()]
        changed = [(experiment, phase, k, stats[k]) for k in result.changed_stats]
        moved = [(experiment, phase, s, shifts[s]) for s in result.changed_shifts]

        def write(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO unit_state VALUES (?, ?, ?, ?)", records)
            db.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?)", changed)
            db.executemany("INSERT OR REPLACE INTO shifts VALUES (?, ?, ?, ?)", moved)

        return write

    return fold


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
