"""SQLite part of the store for the rollout controller: state documents with a version for
compare-and-set, the audit log, and leases (one controller at a time)."""

from __future__ import annotations

import json
import time
from typing import Any

from experiments.errors import ConflictError
from experiments.store.sqlite_base import SQLiteBase


class SQLiteControl(SQLiteBase):
    def get_control(self, experiment: str) -> tuple[dict[str, Any] | None, int]:
        with self._read() as db:
            row = db.execute(
                "SELECT doc, version FROM control WHERE experiment = ?", (experiment,)
            ).fetchone()
        return (json.loads(row[0]), int(row[1])) if row else (None, 0)

    def put_control(self, experiment: str, doc: dict[str, Any], expected_version: int) -> int:
        text = json.dumps(doc, allow_nan=False)
        with self._write() as db:
            row = db.execute(
                "SELECT version FROM control WHERE experiment = ?", (experiment,)
            ).fetchone()
            current = int(row[0]) if row else 0
            if current != expected_version:
                raise ConflictError(
                    f"rollout state of {experiment!r} is at version {current}, not"
                    f" {expected_version}: another controller wrote it"
                )
            db.execute(
                "INSERT INTO control (experiment, doc, version) VALUES (?, ?, ?)"
                " ON CONFLICT (experiment) DO UPDATE SET doc = excluded.doc,"
                " version = excluded.version",
                (experiment, text, current + 1),
            )
        return current + 1

    def append_audit(self, experiment: str, entry: dict[str, Any]) -> None:
        text = json.dumps(entry, allow_nan=False)
        with self._write() as db:
            db.execute(
                "INSERT INTO audit (experiment, seq, at, entry) VALUES (?, (SELECT"
                " COALESCE(MAX(seq), 0) + 1 FROM audit WHERE experiment = ?), ?, ?)",
                (experiment, experiment, time.time(), text),
            )

    def audit(self, experiment: str) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT entry FROM audit WHERE experiment = ? ORDER BY seq", (experiment,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

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

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))
