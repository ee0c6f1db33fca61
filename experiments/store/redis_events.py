"""Redis part of the store for what is read beside the statistics: phases and their fold plans,
snapshots, and the raw events kept in the partitions' logs (see `redis_stats` for the keys)."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from experiments.folding import FoldPlan
from experiments.segments import decode_pairs
from experiments.store.protocol import Snapshot
from experiments.store.redis_base import RedisBase

RS = "\x1e"  # separates the fields of an entry; unit ids and names cannot hold control characters
# The log's entry ids are the Redis server's clock; `received_at` is the service's.  Paging by
# receive time starts this much earlier in the log, so a clock difference loses nothing.
CLOCK_MARGIN_MS = 300_000
_PAGE = 5000


class RedisEvents(RedisBase):
    partitions: int

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
        """Merged from the partitions' logs: each is read from just before `since` until it
        has given `limit` events past the cursor, and the first `limit` of all are kept."""
        cursor = (since, after or "")
        start = f"{max(int(since * 1000) - CLOCK_MARGIN_MS, 0)}-0"
        found: list[dict[str, Any]] = []
        with self._guard():
            for k in range(self.partitions):
                log, low, taken = self.partition_key(experiment, k, "log"), start, 0
                while taken < limit:
                    entries = self.client.xrange(log, min=low, max="+", count=_PAGE)
                    for _, fields in entries:
                        event = _event(fields.get("e"))
                        if event and (event["received_at"], event["event_id"]) > cursor:
                            found.append(event)
                            taken += 1
                    if len(entries) < _PAGE:
                        break
                    low = f"({entries[-1][0]}"
        found.sort(key=lambda e: (e["received_at"], e["event_id"]))
        return found[:limit]

    def purge_events(self, received_before: float) -> int:
        """Trim each partition's log to the entries not folded yet or appended after the
        time, and forget the ids of events received before it that are folded."""
        before_ms = int(received_before * 1000)
        purged = 0
        with self._guard():
            for name in self.client.hkeys(self._index):
                for k in range(self.partitions):
                    key = partial(self.partition_key, name, k)
                    pos, appended = self.client.get(key("pos")), self.client.get(key("appended"))
                    if pos is None:
                        continue
                    ms, seq = (int(p) for p in pos.split(RS)[0].split("-"))
                    keep_from = min((ms, seq + 1), (before_ms, 0))
                    pipe = self.client.pipeline(transaction=True)
                    pipe.xtrim(key("log"), minid=f"{keep_from[0]}-{keep_from[1]}")
                    # Ids of folded events only: an unfolded event keeps its id.
                    done = int(appended or 0) == int(pos.split(RS)[1])
                    cut = received_before if done else min(received_before, ms / 1000)
                    pipe.zremrangebyscore(key("ids"), "-inf", f"({cut!r}")
                    purged += pipe.execute()[1]
        return purged


def _event(payload: str | None) -> dict[str, Any] | None:
    if payload is None:
        return None
    phase, unit, metric, value, timestamp, event_id, received, *segments = payload.split(RS)
    return {
        "event_id": event_id,
        "phase": phase,
        "unit": unit,
        "metric": metric,
        "value": float(value),
        "timestamp": float(timestamp),
        "received_at": float(received),
        "segments": dict(decode_pairs(segments[0])) if segments else {},
    }
