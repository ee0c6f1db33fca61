"""SQLite store: the embedded default.  One file, WAL mode, no set-up.

One connection per store object, serialised by a lock (the service runs its store calls off the
event loop); writes take the database lock up front (BEGIN IMMEDIATE) so that a read-check-write
such as the layer-overlap check cannot interleave with another process's write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from experiments.errors import NotFoundError, StoreError
from experiments.loader import dump_spec, spec_from_mapping
from experiments.spec import ExperimentSpec
from experiments.store.protocol import (
    ExperimentRecord,
    ExperimentStatus,
    PutResult,
    check_layer_conflicts,
    check_status,
)

SCHEMA_VERSION = 2  # 2: exposures
_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, revision INTEGER NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS experiment_revisions (
    name TEXT NOT NULL, revision INTEGER NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, revision));
CREATE TABLE IF NOT EXISTS sticky (
    experiment TEXT NOT NULL, salt TEXT NOT NULL, unit TEXT NOT NULL, variant TEXT NOT NULL,
    PRIMARY KEY (experiment, salt, unit)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS exposures (
    experiment TEXT NOT NULL, unit TEXT NOT NULL, variant TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (experiment, unit)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exposure_counts (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, units INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant));
"""
_SQLITE_MAX_VARIABLES = 900  # below SQLite's historical limit of 999 bound parameters


class SQLiteStore:
    def __init__(self, path: str | Path, *, url: str | None = None) -> None:
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        if not self.path.parent.is_dir():
            raise StoreError(f"SQLite store {str(self.path)!r}: its directory does not exist")
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {str(self.path)!r}: {exc}") from None
        try:
            self._migrate()
        except (sqlite3.Error, StoreError) as exc:
            self._db.close()
            message = str(exc) if isinstance(exc, StoreError) else f"cannot open it: {exc}"
            raise StoreError(f"SQLite store {str(self.path)!r}: {message}") from None

    def _migrate(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"schema version {version}; this abmesh knows up to {SCHEMA_VERSION}: upgrade it"
            )
        if version < SCHEMA_VERSION:
            # executescript commits on its own, so the transaction is spelled out in the script;
            # every statement is idempotent, so two processes migrating at once is harmless.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            yield self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:  # locked, disk full, corrupt: the store, not the caller
            raise StoreError(f"SQLite store {str(self.path)!r}: {exc}") from None

    def ping(self) -> None:
        try:
            with self._read() as db:
                db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {str(self.path)!r} is not usable: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # experiments

    def put_experiment(self, spec: ExperimentSpec) -> PutResult:
        text, now = dump_spec(spec), time.time()
        with self._write() as db:
            others = [
                _spec(row[0])
                for row in db.execute(_CURRENT_SPECS + " WHERE e.name != ?", (spec.name,))
            ]
            check_layer_conflicts(spec, others)
            row = db.execute(_CURRENT_SPECS + " WHERE e.name = ?", (spec.name,)).fetchone()
            if row is not None and row[0] == text:
                return PutResult(self._record(db, spec.name), changed=False)
            if row is None:
                db.execute(
                    "INSERT INTO experiments VALUES (?, 1, ?, ?, ?)",
                    (spec.name, ExperimentStatus.DRAFT.value, now, now),
                )
            else:
                db.execute(
                    "UPDATE experiments SET revision = revision + 1, updated_at = ? WHERE name = ?",
                    (now, spec.name),
                )
            db.execute(
                "INSERT INTO experiment_revisions SELECT name, revision, ?, ?"
                " FROM experiments WHERE name = ?",
                (text, now, spec.name),
            )
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

    def set_status(
        self, name: str, status: ExperimentStatus, *, expected: ExperimentStatus | None = None
    ) -> ExperimentRecord:
        with self._write() as db:
            check_status(name, self._record(db, name).status, expected)
            db.execute(
                "UPDATE experiments SET status = ?, updated_at = ? WHERE name = ?",
                (ExperimentStatus(status).value, time.time(), name),
            )
            self._bump_epoch(db)
            return self._record(db, name)

    def delete_experiment(self, name: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM experiments WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"experiment {name!r} does not exist")
            db.execute("DELETE FROM experiment_revisions WHERE name = ?", (name,))
            for table in ("sticky", "exposures", "exposure_counts"):
                db.execute(f"DELETE FROM {table} WHERE experiment = ?", (name,))
            self._bump_epoch(db)

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
            for chunk in _chunks(units):
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

    # exposures

    def record_exposures(self, experiment: str, exposures: Mapping[str, tuple[str, float]]) -> int:
        by_variant: dict[str, list[tuple[str, str, str, float]]] = {}
        for unit, (variant, at) in exposures.items():
            by_variant.setdefault(variant, []).append((experiment, unit, variant, at))
        new: dict[str, int] = {}
        with self._write() as db:
            for variant, rows in by_variant.items():
                # One executemany per variant; total_changes tells how many rows were new.
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO exposures VALUES (?, ?, ?, ?)", rows)
                new[variant] = db.total_changes - before
            db.executemany(
                "INSERT INTO exposure_counts VALUES (?, ?, ?) ON CONFLICT(experiment, variant)"
                " DO UPDATE SET units = units + excluded.units",
                [(experiment, variant, n) for variant, n in new.items() if n],
            )
        return sum(new.values())

    def exposure_counts(self, experiment: str) -> dict[str, int]:
        with self._read() as db:
            rows = db.execute(
                "SELECT variant, units FROM exposure_counts WHERE experiment = ?", (experiment,)
            ).fetchall()
        return dict(rows)


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
    return ExperimentRecord(_spec(text), revision, ExperimentStatus(status), created, updated)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _SQLITE_MAX_VARIABLES):
        yield items[start : start + _SQLITE_MAX_VARIABLES]
