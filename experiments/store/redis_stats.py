"""Redis part of the store for exposures, events, folded statistics and snapshots.

Keys, per experiment E and phase P, all with the experiment's hash tag {pE} (p the store's
prefix; see `redis`), so that a batch is a transaction within one slot of a cluster:
  ph:P:units      hash  unit -> "variant<RS>series=total<RS>..." (variant of its first exposure
                        in the phase, or empty; RS is \\x1e, which no unit or name holds)
  ph:P:stats      hash  folded statistics (see experiments.folding)
  ph:P:shifts     hash  series -> shift
  phases          zset  phase -> first seen
  plans           hash  phase -> JSON fold plan
  ev:ids          zset  event_id -> received at (idempotency; trimmed with the raw events)
  ev:raw          hash  event_id -> "phase<RS>unit<RS>metric<RS>value<RS>timestamp<RS>received"
  snap            hash  "phase|time" -> JSON snapshot
A batch is an optimistic transaction: WATCH the keys it reads, read, fold in Python
(`experiments.folding`, the same code as SQLite), MULTI the writes, retry if another writer
got in between.  A batch is applied whole or not at all.  Within one process batches take a
lock, so its threads do not make each other retry.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from experiments.errors import StoreError
from experiments.folding import Event, Folder, FoldPlan, Loaded, fold_events, fold_exposures
from experiments.store.protocol import IngestResult, Snapshot
from experiments.store.redis_base import RedisBase

RS = "\x1e"  # separates a unit's fields; unit ids and names cannot hold control characters
MAX_ATTEMPTS = 50  # optimistic retries of one batch before giving up with a StoreError (503)


class RedisStats(RedisBase):
    _batch_lock = threading.Lock()  # per process: a batch at a time (see the module docstring)

    def _ph(self, experiment: str, phase: str, part: str) -> str:
        return self.experiment_key(experiment, f"ph:{phase}:{part}")

    def _ev(self, experiment: str, part: str) -> str:
        return self.experiment_key(experiment, f"ev:{part}")

    def record_exposures(
        self,
        experiment: str,
        phase: str,
        plan: FoldPlan,
        exposures: Mapping[str, tuple[str, float]],
    ) -> int:
        def fold(loaded: Loaded) -> tuple[Folder, int]:
            folder = fold_exposures(plan, loaded, exposures)
            return folder, len(folder.new_exposures)

        new: int = self._apply(
            experiment, phase, plan, list(exposures), [], fold, lambda pipe, folder, result: None
        )
        return new

    def ingest_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        ids_key, raw_key = self._ev(experiment, "ids"), self._ev(experiment, "raw")

        def fold(loaded: Loaded) -> tuple[Folder, tuple[list[Event], list[int]]]:
            folder, new, duplicates = fold_events(plan, loaded, events)
            return folder, (new, duplicates)

        def keep(pipe: Any, folder: Folder, result: tuple[list[Event], list[int]]) -> None:
            new, received = result[0], time.time()
            if new:  # one command each for the whole batch: ids by time, and the events
                pipe.zadd(ids_key, dict.fromkeys((e.event_id for e in new), received))
                tail = f"{RS}{received!r}"
                pipe.hset(
                    raw_key,
                    mapping={
                        e.event_id: f"{phase}{RS}{e.unit}{RS}{e.series}{RS}{e.value!r}{RS}"
                        f"{e.timestamp!r}{tail}"
                        for e in new
                    },
                )

        units = list(dict.fromkeys(e.unit for e in events))
        new, duplicates = self._apply(
            experiment, phase, plan, units, [e.event_id for e in events], fold, keep
        )
        return IngestResult(len(new), duplicates)

    def phase_stats(self, experiment: str, phase: str) -> tuple[dict[str, float], dict[str, float]]:
        with self._guard():
            stats = self.client.hgetall(self._ph(experiment, phase, "stats"))
            shifts = self.client.hgetall(self._ph(experiment, phase, "shifts"))
        return ({k: float(v) for k, v in stats.items()}, {k: float(v) for k, v in shifts.items()})

    def phases(self, experiment: str) -> list[str]:
        with self._guard():
            found: list[str] = self.client.zrange(self.experiment_key(experiment, "phases"), 0, -1)
        return found

    def phase_plan(self, experiment: str, phase: str) -> FoldPlan | None:
        with self._guard():
            text = self.client.hget(self.experiment_key(experiment, "plans"), phase)
        return None if text is None else FoldPlan.from_json(text)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        data = {"phase": snapshot.phase, "at": snapshot.at, "stats": snapshot.stats}
        with self._guard():  # one per phase and time: a replica's copy replaces the other's
            self.client.hset(
                self.experiment_key(snapshot.experiment, "snap"),
                f"{snapshot.phase}|{snapshot.at!r}",
                json.dumps(data),
            )

    def snapshots(self, experiment: str, phase: str | None = None) -> list[Snapshot]:
        with self._guard():
            raw = self.client.hvals(self.experiment_key(experiment, "snap"))
        items = [json.loads(r) for r in raw]
        out = [
            Snapshot(experiment, d["phase"], d["at"], d["stats"])
            for d in items
            if phase is None or d["phase"] == phase
        ]
        return sorted(out, key=lambda snap: snap.at)

    def raw_events(
        self,
        experiment: str,
        *,
        since: float = 0.0,
        after: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        ids_key = self._ev(experiment, "ids")
        with self._guard():
            # The zset orders by (score = received at, member = event id): page by rank.
            rank = self.client.zrank(ids_key, after) if after is not None else None
            if rank is None:
                first = self.client.zrangebyscore(ids_key, since, "+inf", start=0, num=1)
                rank = self.client.zrank(ids_key, first[0]) - 1 if first else None
            ids = [] if rank is None else self.client.zrange(ids_key, rank + 1, rank + limit)
            raw = self.client.hmget(self._ev(experiment, "raw"), ids) if ids else []
        out = []
        for event_id, item in zip(ids, raw, strict=True):
            if item is None:
                continue
            phase, unit, metric, value, timestamp, received = item.split(RS)
            out.append(
                {
                    "event_id": event_id,
                    "phase": phase,
                    "unit": unit,
                    "metric": metric,
                    "value": float(value),
                    "timestamp": float(timestamp),
                    "received_at": float(received),
                }
            )
        return out

    def purge_events(self, received_before: float) -> int:
        purged = 0
        with self._guard():
            for name in self.client.hkeys(self._index):
                ids_key = self._ev(name, "ids")
                old = self.client.zrangebyscore(ids_key, "-inf", f"({received_before!r}")
                for start in range(0, len(old), 10_000):
                    chunk = old[start : start + 10_000]
                    pipe = self.client.pipeline(transaction=True)
                    pipe.hdel(self._ev(name, "raw"), *chunk)
                    pipe.zrem(ids_key, *chunk)
                    pipe.execute()
                purged += len(old)
        return purged

    def _apply(
        self,
        experiment: str,
        phase: str,
        plan: FoldPlan,
        units: Sequence[str],
        event_ids: Sequence[str],
        fold: Any,
        keep: Any,
    ) -> Any:
        """Read the batch's state under WATCH, fold, write in MULTI; retry on a conflict."""
        keys = {part: self._ph(experiment, phase, part) for part in ("units", "stats", "shifts")}
        ids_key = self._ev(experiment, "ids")
        watched = [ids_key, *keys.values()] if event_ids else list(keys.values())
        with self._batch_lock, self._guard(), self.client.pipeline(transaction=True) as pipe:
            for attempt in range(MAX_ATTEMPTS):
                if attempt:  # another process wrote first: back off, randomised, and redo
                    time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
                try:
                    pipe.watch(*watched)
                    loaded = self._load(keys, ids_key, units, event_ids)
                    folder, result = fold(loaded)
                    pipe.multi()
                    self._write_back(pipe, keys, folder)
                    keep(pipe, folder, result)
                    if folder.changed_totals or folder.new_exposures:
                        pipe.zadd(
                            self.experiment_key(experiment, "phases"), {phase: time.time()}, nx=True
                        )
                        pipe.hsetnx(
                            self.experiment_key(experiment, "plans"), phase, folder.plan.to_json()
                        )
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
        raise StoreError(
            f"Redis store: {MAX_ATTEMPTS} conflicting writes in a row on {experiment!r};"
            " too many writers at once, retry later"
        )

    def _load(
        self,
        keys: Mapping[str, str],
        ids_key: str,
        units: Sequence[str],
        event_ids: Sequence[str],
    ) -> Loaded:
        """Every read of a batch in one round trip.  They go over another connection than the
        WATCH: a write to a watched key after the WATCH still fails the EXEC, wherever the
        reads were made."""
        reads = self.client.pipeline(transaction=False)
        reads.zmscore(ids_key, list(event_ids) or [""])
        reads.hmget(keys["units"], list(units) or [""])
        reads.hgetall(keys["stats"])
        reads.hgetall(keys["shifts"])
        scores, records, stats, shifts = reads.execute()
        totals: dict[tuple[str, str], float] = {}
        exposed: dict[str, str] = {}
        for unit, record in zip(units, records, strict=False):
            if record is None:
                continue
            variant, *entries = record.split(RS)
            if variant:
                exposed[unit] = variant
            for entry in entries:
                series, _, total = entry.partition("=")
                totals[unit, series] = float(total)
        return Loaded(
            {e for e, score in zip(event_ids, scores, strict=False) if score is not None},
            totals,
            exposed,
            {k: float(v) for k, v in stats.items()},
            {k: float(v) for k, v in shifts.items()},
        )

    def _write_back(self, pipe: Any, keys: Mapping[str, str], folder: Folder) -> None:
        changed = {u for u, _ in folder.changed_totals} | folder.new_exposures.keys()
        if changed:
            # One field per unit holds its arm and every total: a batch reads and writes
            # each unit once, whatever the number of series.
            per_unit: dict[str, list[str]] = {u: [folder.exposed.get(u, "")] for u in changed}
            for (unit, series), total in folder.totals.items():
                if unit in per_unit:
                    per_unit[unit].append(f"{series}={total!r}")
            pipe.hset(keys["units"], mapping={u: RS.join(parts) for u, parts in per_unit.items()})
        if folder.changed_stats:
            pipe.hset(
                keys["stats"], mapping={k: repr(folder.stats[k]) for k in folder.changed_stats}
            )
        if folder.changed_shifts:
            pipe.hset(
                keys["shifts"], mapping={s: repr(folder.shifts[s]) for s in folder.changed_shifts}
            )
