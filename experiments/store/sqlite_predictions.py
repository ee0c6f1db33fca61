"""SQLite part of the store for the shadow phase's predictions (experiments.predictions): one
partition; each batch is paired, folded and expired in one BEGIN IMMEDIATE transaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from experiments.predictions import Prediction, Recorded, expired, from_fields, pair, to_fields
from experiments.shadow_sums import ShadowSums
from experiments.store.sqlite_base import SQLiteBase, chunks

PREDICTION_TABLES = ("prediction_pending", "prediction_done", "shadow_sums")


class SQLitePredictions(SQLiteBase):
    def add_predictions(
        self,
        experiment: str,
        phase: str,
        predictions: Sequence[Prediction],
        *,
        score_range: tuple[float, float],
        window_s: float,
        now: float | None = None,
    ) -> Recorded:
        at = time.time() if now is None else now
        ids = sorted({p.request_id for p in predictions})
        with self._write() as db:
            _expire(db, experiment, phase, at, window_s)
            key = (experiment, phase)
            pending: dict[str, Prediction] = {}
            done: list[str] = []
            for part in chunks(ids):
                marks = ",".join("?" * len(part))
                where = f"experiment = ? AND phase = ? AND request_id IN ({marks})"
                for (body,) in db.execute(
                    f"SELECT body FROM prediction_pending WHERE {where}", (*key, *part)
                ):
                    p = Prediction.decode(body)
                    pending[p.request_id] = p
                done += (r for (r,) in db.execute(
                    f"SELECT request_id FROM prediction_done WHERE {where}", (*key, *part)
                ))  # fmt: skip
            out = pair(predictions, pending, done, *score_range)
            db.executemany(
                "DELETE FROM prediction_pending WHERE experiment = ? AND phase = ?"
                " AND request_id = ?",
                [(*key, r) for r in out.paired],
            )
            db.executemany(
                "INSERT INTO prediction_done VALUES (?, ?, ?, ?)",
                [(*key, r, at) for r in out.paired],
            )
            db.executemany(
                "INSERT OR REPLACE INTO prediction_pending VALUES (?, ?, ?, ?, ?)",
                [(*key, r, p.encode(), p.at) for r, p in out.wait.items()],
            )
            _add(db, experiment, phase, to_fields(out.sums))
        accepted = len(predictions) - out.duplicates
        return Recorded(accepted, out.duplicates, len(out.paired))

    def shadow_sums(
        self,
        experiment: str,
        phase: str,
        *,
        score_range: tuple[float, float],
        window_s: float,
        now: float | None = None,
    ) -> ShadowSums:
        """The phase's sums, after expiring what waited longer than `window_s`."""
        at = time.time() if now is None else now
        with self._write() as db:
            _expire(db, experiment, phase, at, window_s)
            rows = db.execute(
                "SELECT field, value FROM shadow_sums WHERE experiment = ? AND phase = ?",
                (experiment, phase),
            ).fetchall()
            (waiting,) = db.execute(
                "SELECT count(*) FROM prediction_pending WHERE experiment = ? AND phase = ?",
                (experiment, phase),
            ).fetchone()
        sums = from_fields(dict(rows), *score_range)
        sums.pending = int(waiting)
        return sums


def _expire(db: sqlite3.Connection, experiment: str, phase: str, now: float, window: float) -> None:
    """Count predictions waiting longer than `window` as unpaired; forget request ids paired
    more than two windows ago (a retry comes within that)."""
    key, before = (experiment, phase), now - window
    old = [Prediction.decode(body) for (body,) in db.execute(
        "SELECT body FROM prediction_pending WHERE experiment = ? AND phase = ? AND at < ?",
        (*key, before),
    )]  # fmt: skip
    if old:
        db.execute(
            "DELETE FROM prediction_pending WHERE experiment = ? AND phase = ? AND at < ?",
            (*key, before),
        )
        _add(db, experiment, phase, to_fields(expired(old)))
    db.execute(
        "DELETE FROM prediction_done WHERE experiment = ? AND phase = ? AND at < ?",
        (*key, before - window),
    )


def _add(db: sqlite3.Connection, experiment: str, phase: str, fields: dict[str, float]) -> None:
    db.executemany(
        "INSERT INTO shadow_sums VALUES (?, ?, ?, ?) ON CONFLICT (experiment, phase, field)"
        " DO UPDATE SET value = value + excluded.value",
        [(experiment, phase, k, v) for k, v in fields.items()],
    )
