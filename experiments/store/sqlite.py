"""SQLite store: the embedded default.  One file, WAL mode, no set-up.

This part holds experiments and sticky records; `sqlite_stats` the exposures, events and
statistics; `sqlite_base` the connection.  A read-check-write such as the layer-overlap check
runs inside one BEGIN IMMEDIATE transaction, so it cannot interleave with another process.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from experiments.errors import NotFoundError
from experiments.loader import dump_spec, spec_from_mapping
from experiments.spec import ExperimentSpec
from experiments.status import Status
from experiments.store.protocol import (
    ExperimentRecord,
    PutResult,
    Reaction,
    check_commit,
    check_layer_conflicts,
)
from experiments.store.sqlite_base import chunks
from experiments.store.sqlite_control import SQLiteControl
from experiments.store.sqlite_predictions import PREDICTION_TABLES, SQLitePredictions
from experiments.store.sqlite_stats import STATS_TABLES, SQLiteStats


class SQLiteStore(SQLiteStats, SQLitePredictions, SQLiteControl):
    # experiments

    def put_experiment(self, spec: ExperimentSpec, *, react: Reaction | None = None) -> PutResult:
        text, now = dump_spec(spec), time.time()
        with self._write() as db:
            others = [
                _spec(row[0])
                for row in db.execute(_CURRENT_SPECS + " WHERE e.name != ?", (spec.name,))
            ]
            check_layer_conflicts(spec, others)
            row = db.execute(_CURRENT_SPECS + " WHERE e.name = ?", (spec.name,)).fetchone()
            # Compared as specs, not as text: a spec stored before a field existed reads with
            # its default, and is the same spec.
            if row is not None and _spec(row[0]) == spec:
                return PutResult(self._record(db, spec.name), changed=False)
            if row is None:
                before, status = None, Status.new(now)
                db.execute(
                    "INSERT INTO experiments VALUES (?, ?, 0, ?, ?, '{}')",
                    (spec.name, status.uid, now, now),
                )
            else:
                before, status = _spec(row[0]), self._record(db, spec.name).status
            db.execute(
                "UPDATE experiments SET revision = revision + 1, updated_at = ? WHERE name = ?",
                (now, spec.name),
            )
            db.execute(
                "INSERT INTO experiment_revisions SELECT name, revision, ?, ?"
                " FROM experiments WHERE name = ?",
                (text, now, spec.name),
            )
            revision = db.execute(
                "SELECT revision FROM experiments WHERE name = ?", (spec.name,)
            ).fetchone()[0]
            new = react(before, status, revision) if react is not None else status
            if before is None or new != status:
                self._put_status(db, spec.name, replace(new, version=status.version + 1))
            self._bump_epoch(db)
            return PutResult(self._record(db, spec.name), changed=True)

    def get_experiment(self, name: str, revision: int | None = None) -> ExperimentRecord:
        with self._read() as db:
            record = self._record(db, name)
            if revision is None or revision == record.revision:
                return record
            row = db.execute(
                "SELECT spec, created_at FROM experiment_revisions WHERE name = ? AND revision = ?",
                (name, revision),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"experiment {name!r} has no revision {revision}")
        return ExperimentRecord(_spec(row[0]), revision, record.status, record.created_at, row[1])

    def list_experiments(self) -> list[ExperimentRecord]:
        with self._read() as db:
            rows = db.execute(_RECORDS + " ORDER BY e.name").fetchall()
        return [_from_row(row) for row in rows]

    def experiment_history(self, name: str) -> list[ExperimentRecord]:
        with self._read() as db:
            current = self._record(db, name)
            rows = db.execute(
                "SELECT spec, revision, created_at FROM experiment_revisions"
                " WHERE name = ? ORDER BY revision",
                (name,),
            ).fetchall()
        return [
            ExperimentRecord(_spec(text), rev, current.status, current.created_at, at)
            for text, rev, at in rows
        ]

    def commit_status(
        self,
        name: str,
        status: Status,
        *,
        expected_version: int,
        audit: Sequence[dict[str, Any]] = (),
    ) -> ExperimentRecord:
        with self._write() as db:
            stored = self._record(db, name).status
            check_commit(name, stored, status, expected_version)
            new = replace(status, version=expected_version + 1)
            self._put_status(db, name, new)
            self._append_audit(db, status.uid, audit)
            if new.assignment_view() != stored.assignment_view():
                self._bump_epoch(db)
            return self._record(db, name)

    def _put_status(self, db: sqlite3.Connection, name: str, status: Status) -> None:
        db.execute(
            "UPDATE experiments SET status = ?, updated_at = ? WHERE name = ?",
            (json.dumps(status.to_dict(), allow_nan=False), time.time(), name),
        )

    def delete_experiment(self, name: str, *, keep_history: bool = False) -> str:
        with self._write() as db:
            uid = self._record(db, name).uid
            db.execute("DELETE FROM experiments WHERE name = ?", (name,))
            db.execute("DELETE FROM experiment_revisions WHERE name = ?", (name,))
            for table in ("sticky", *STATS_TABLES, *PREDICTION_TABLES):
                db.execute(f"DELETE FROM {table} WHERE experiment = ?", (name,))
            self._forget_uid(db, uid, keep_history=keep_history)
            self._bump_epoch(db)
        return uid

    def config_epoch(self) -> int:
        with self._read() as db:
            row = db.execute("SELECT value FROM counters WHERE name = 'epoch'").fetchone()
        return int(row[0]) if row else 0

    def _bump_epoch(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO counters VALUES ('epoch', 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1"
        )

    def _record(self, db: sqlite3.Connection, name: str) -> ExperimentRecord:
        row = db.execute(_RECORDS + " WHERE e.name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"experiment {name!r} does not exist")
        return _from_row(row)

    # sticky assignments

    def get_sticky(self, experiment: str, salt: str, units: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._read() as db:
            for chunk in chunks(units):
                marks = ",".join("?" * len(chunk))
                found.update(
                    db.execute(
                        f"SELECT unit, variant FROM sticky WHERE experiment = ? AND salt = ?"
                        f" AND unit IN ({marks})",
                        (experiment, salt, *chunk),
                    ).fetchall()
                )
        return found

    def put_sticky(
        self,
        experiment: str,
        salt: str,
        variants: Mapping[str, str],
        *,
        current: Collection[str] | None = None,
    ) -> dict[str, str]:
        rows = [(experiment, salt, u, v) for u, v in variants.items()]
        with self._write() as db:
            if current is None:
                db.executemany("INSERT OR IGNORE INTO sticky VALUES (?, ?, ?, ?)", rows)
            else:
                keep = json.dumps(sorted(current))
                db.executemany(
                    "INSERT INTO sticky VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
                    " SET variant = excluded.variant"
                    " WHERE sticky.variant NOT IN (SELECT value FROM json_each(?))",
                    [(*row, keep) for row in rows],
                )
        return self.get_sticky(experiment, salt, list(variants))


_RECORDS = (
    "SELECT r.spec, e.revision, e.status, e.created_at, e.updated_at FROM experiments e"
    " JOIN experiment_revisions r ON r.name = e.name AND r.revision = e.revision"
)
_CURRENT_SPECS = (
    "SELECT r.spec FROM experiments e JOIN experiment_revisions r"
    " ON r.name = e.name AND r.revision = e.revision"
)


def _spec(text: str) -> ExperimentSpec:
    return spec_from_mapping(json.loads(text))


def _from_row(row: tuple[str, int, str, float, float]) -> ExperimentRecord:
    text, revision, status, created, updated = row
    return ExperimentRecord(
        _spec(text), revision, Status.from_dict(json.loads(status)), created, updated
    )
