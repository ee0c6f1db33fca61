"""SQLite part of the store for the control plane: state documents with a version for
compare-and-set, the audit log, the looks decisions took, and leases, all under keys that start
with an experiment's uid."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from experiments.errors import ConflictError
from experiments.store.sqlite_base import SQLiteBase


class SQLiteControl(SQLiteBase):
    def get_control(self, key: str) -> tuple[dict[str, Any] | None, int]:
        with self._read() as db:
            row = db.execute(
                "SELECT doc, version FROM control WHERE experiment = ?", (key,)
            ).fetchone()
        return (json.loads(row[0]), int(row[1])) if row else (None, 0)

    def put_control(self, key: str, doc: dict[str, Any], expected_version: int) -> int:
        text = json.dumps(doc, allow_nan=False)
        with self._write() as db:
            row = db.execute("SELECT version FROM control WHERE experiment = ?", (key,)).fetchone()
            current = int(row[0]) if row else 0
            if current != expected_version:
                raise ConflictError(
                    f"state {key!r} is at version {current}, not {expected_version}:"
                    " another writer changed it"
                )
            db.execute(
                "INSERT INTO control (experiment, doc, version) VALUES (?, ?, ?)"
                " ON CONFLICT (experiment) DO UPDATE SET doc = excluded.doc,"
                " version = excluded.version",
                (key, text, current + 1),
            )
        return current + 1

    def append_audit(self, uid: str, entry: dict[str, Any]) -> None:
        with self._write() as db:
            self._append_audit(db, uid, [entry])

    def _append_audit(
        self, db: sqlite3.Connection, uid: str, entries: Sequence[dict[str, Any]]
    ) -> None:
        for entry in entries:
            db.execute(
                "INSERT INTO audit (experiment, seq, at, entry) VALUES (?, (SELECT"
                " COALESCE(MAX(seq), 0) + 1 FROM audit WHERE experiment = ?), ?, ?)",
                (uid, uid, time.time(), json.dumps(entry, allow_nan=False)),
            )

    def _forget_uid(self, db: sqlite3.Connection, uid: str, *, keep_history: bool) -> None:
        """Drop what is kept under the uid: keys equal to it or starting with `uid#`."""
        for table, column in (("control", "experiment"), ("leases", "name")):
            db.execute(
                f"DELETE FROM {table} WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                (uid, len(uid) + 1, uid + "#"),
            )
        if not keep_history:
            db.execute("DELETE FROM audit WHERE experiment = ?", (uid,))
            db.execute("DELETE FROM looks WHERE uid = ?", (uid,))

    def audit(self, uid: str) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT entry FROM audit WHERE experiment = ? ORDER BY seq", (uid,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def append_look(self, uid: str, look: dict[str, Any], *, fingerprint: str, cap: int) -> bool:
        text, phase = json.dumps(look, allow_nan=False), str(look["phase"])
        with self._write() as db:  # BEGIN IMMEDIATE: the check and the append are one step
            count, last = db.execute(
                "SELECT COUNT(*), (SELECT fingerprint FROM looks WHERE uid = ? AND phase = ?"
                " ORDER BY seq DESC LIMIT 1) FROM looks WHERE uid = ? AND phase = ?",
                (uid, phase, uid, phase),
            ).fetchone()
            if last == fingerprint or count >= cap:
                return False
            db.execute(
                "INSERT INTO looks VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM looks"
                " WHERE uid = ?), ?, ?, ?)",
                (uid, uid, phase, fingerprint, text),
            )
        return True

    def looks(self, uid: str, phase: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT look FROM looks WHERE uid = ?", [uid]
        if phase is not None:
            query, args = query + " AND phase = ?", [uid, phase]
        with self._read() as db:
            rows = db.execute(query + " ORDER BY seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def last_look(self, uid: str, phase: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT look FROM looks WHERE uid = ? AND phase = ? ORDER BY seq DESC LIMIT 1",
                (uid, phase),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT owner, expires FROM leases WHERE name = ?", (name,)).fetchone()
            if row and row[0] != owner and row[1] > now:
                return False
            db.execute(
                "INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
                (name, owner, now + ttl_s),
            )
        return True

    def lease_holders(self, prefix: str) -> dict[str, str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT name, owner FROM leases WHERE substr(name, 1, ?) = ? AND expires > ?",
                (len(prefix), prefix, time.time()),
            ).fetchall()
        return dict(rows)

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))
