"""SQLite connection handling shared by the store's parts: schema, locking, error mapping.

One connection per store object, serialised by a lock (the service runs its store calls off the
event loop); writes take the database lock up front (BEGIN IMMEDIATE) so that a read-check-write
cannot interleave with another process's write, and every sqlite3 error becomes a StoreError.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from experiments.errors import StoreError
from experiments.foldbatch import UnitState
from experiments.status import Status

# 2: control, audit, leases; 3: the status document (with the uid) replaces status and phase;
# 4: exposures and events become a log folded behind (exposure_log, event_log, unit_state);
# 5: the shadow phase's predictions (prediction_pending, prediction_done, shadow_sums);
# 6: exposures and events carry the unit's segment values (the logs' `segments` column);
# 7: the looks decisions took (`looks`, experiments.looks_log)
SCHEMA_VERSION = 7
_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, uid TEXT NOT NULL, revision INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiment_revisions (
    name TEXT NOT NULL, revision INTEGER NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, revision));
CREATE TABLE IF NOT EXISTS sticky (
    experiment TEXT NOT NULL, salt TEXT NOT NULL, unit TEXT NOT NULL, variant TEXT NOT NULL,
    PRIMARY KEY (experiment, salt, unit)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS exposure_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, experiment TEXT NOT NULL, phase TEXT NOT NULL,
    unit TEXT NOT NULL, variant TEXT NOT NULL, at REAL NOT NULL, generation INTEGER NOT NULL,
    segments TEXT NOT NULL DEFAULT '', UNIQUE (experiment, phase, unit));
CREATE INDEX IF NOT EXISTS exposure_log_fold ON exposure_log (experiment, seq);
CREATE TABLE IF NOT EXISTS unit_state (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, unit TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (experiment, phase, unit)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fold_position (
    experiment TEXT PRIMARY KEY, exposures INTEGER NOT NULL, events INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stats (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, key TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (experiment, phase, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shifts (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, series TEXT NOT NULL, k REAL NOT NULL,
    PRIMARY KEY (experiment, phase, series)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS phases (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, first_seen REAL NOT NULL, plan TEXT NOT NULL,
    PRIMARY KEY (experiment, phase));
CREATE TABLE IF NOT EXISTS event_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, experiment TEXT NOT NULL, event_id TEXT NOT NULL,
    phase TEXT NOT NULL, unit TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    timestamp REAL NOT NULL, received_at REAL NOT NULL, segments TEXT NOT NULL DEFAULT '',
    UNIQUE (experiment, event_id));
CREATE INDEX IF NOT EXISTS event_log_fold ON event_log (experiment, seq);
CREATE INDEX IF NOT EXISTS event_log_received ON event_log (received_at);
CREATE TABLE IF NOT EXISTS prediction_pending (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, request_id TEXT NOT NULL,
    body TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (experiment, phase, request_id));
CREATE INDEX IF NOT EXISTS prediction_pending_at ON prediction_pending (experiment, phase, at);
CREATE TABLE IF NOT EXISTS prediction_done (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, request_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (experiment, phase, request_id));
CREATE TABLE IF NOT EXISTS shadow_sums (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, field TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (experiment, phase, field));
CREATE TABLE IF NOT EXISTS control (
    experiment TEXT PRIMARY KEY, doc TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    experiment TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY (experiment, seq));
CREATE TABLE IF NOT EXISTS looks (
    uid TEXT NOT NULL, seq INTEGER NOT NULL, phase TEXT NOT NULL, fingerprint TEXT NOT NULL,
    look TEXT NOT NULL, PRIMARY KEY (uid, seq));
CREATE INDEX IF NOT EXISTS looks_phase ON looks (uid, phase, seq);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    experiment TEXT NOT NULL, phase TEXT NOT NULL, at REAL NOT NULL, stats TEXT NOT NULL,
    PRIMARY KEY (experiment, phase, at));
"""
OPEN_TIMEOUT_S = 10.0  # how long a statement waits for another connection's lock
_SQLITE_MAX_VARIABLES = 900  # below SQLite's historical limit of 999 bound parameters


class SQLiteBase:
    def __init__(self, path: str | Path, *, url: str | None = None) -> None:
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        if not self.path.parent.is_dir():
            raise StoreError(f"SQLite store {str(self.path)!r}: its directory does not exist")
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=OPEN_TIMEOUT_S
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
        self._wal()
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A fold reads and writes one row per unit of its batch, anywhere in a table of up to
        # millions: 64 MiB of page cache (the default is 2) keeps its B-tree pages at hand.
        self._db.execute("PRAGMA cache_size=-65536")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"schema version {version}; this abmesh knows up to {SCHEMA_VERSION}: upgrade it"
            )
        if version < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the lock: another process may have migrated meanwhile.
                if self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    self._upgrade()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _wal(self) -> None:
        """WAL mode.  Switching a new file to it needs the file to itself, and SQLite does not
        wait for that (no busy handler): a process opening a new store while another creates its
        tables retries here instead of failing with "database is locked"."""
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _upgrade(self) -> None:
        db = self._db
        columns = {row[1] for row in db.execute("PRAGMA table_info(experiments)")}
        legacy = "phase" in columns  # before version 3: status and phase columns
        if legacy:
            db.execute("ALTER TABLE experiments RENAME TO experiments_v2")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        if legacy:
            rows = db.execute(
                "SELECT name, revision, status, created_at, updated_at, phase FROM experiments_v2"
            ).fetchall()
            for name, revision, status, created, updated, phase in rows:
                # Existing experiments keep their name as uid: what was kept under the name
                # (rollout state, audit) stays theirs.
                doc = Status.legacy(name, status, phase, created).to_dict()
                db.execute(
                    "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?)",
                    (name, name, revision, created, updated, json.dumps(doc)),
                )
            db.execute("DROP TABLE experiments_v2")
        if "unit_totals" in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}:
            _to_log(db)
        for table in ("exposure_log", "event_log"):
            if "segments" not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN segments TEXT NOT NULL DEFAULT ''")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            yield self._db

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: its reads see one state of the database (WAL: writers go on)."""
        with self._lock, self._errors():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

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
        except (sqlite3.Error, OverflowError) as exc:  # locked, disk full, corrupt, or an
            # integer SQLite cannot hold: the store's answer, not a crash
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


def _to_log(db: sqlite3.Connection) -> None:
    """Version 3 to 4: the exposures and events become the logs, every row of them already
    folded; the per-unit totals become unit states.  The statistics stay as they are."""
    db.execute(
        "INSERT INTO exposure_log (experiment, phase, unit, variant, at, generation)"
        " SELECT experiment, phase, unit, variant, at, 0 FROM exposures ORDER BY at"
    )
    db.execute(
        "INSERT INTO event_log (experiment, event_id, phase, unit, metric, value, timestamp,"
        " received_at) SELECT experiment, event_id, phase, unit, metric, value, timestamp,"
        " received_at FROM events ORDER BY received_at"
    )
    db.execute(
        "INSERT INTO fold_position SELECT experiment, max(x), max(e) FROM ("
        " SELECT experiment, seq AS x, 0 AS e FROM exposure_log"
        " UNION ALL SELECT experiment, 0, seq FROM event_log) GROUP BY experiment"
    )
    states: dict[tuple[str, str, str], UnitState] = {}
    for experiment, phase, unit, variant, at in db.execute("SELECT * FROM exposures"):
        states[experiment, phase, unit] = UnitState(variant, at)
    for experiment, phase, unit, series, total in db.execute("SELECT * FROM unit_totals"):
        states.setdefault((experiment, phase, unit), UnitState()).totals[series] = total
    db.executemany(
        "INSERT INTO unit_state VALUES (?, ?, ?, ?)",
        [(*key, state.encode()) for key, state in states.items()],
    )
    for table in ("exposures", "events", "unit_totals"):
        db.execute(f"DROP TABLE {table}")


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    """Slices small enough for one statement's bound parameters."""
    for start in range(0, len(items), _SQLITE_MAX_VARIABLES):
        yield items[start : start + _SQLITE_MAX_VARIABLES]
