"""Redis part of the store for the shadow phase's predictions (experiments.predictions).

Partitioned by request id like the event log (16 partitions, hash-tagged, so each partition's
keys share a Redis Cluster slot); per partition and phase: `wait` (request id -> the prediction
waiting for its partner), `at` (when each started waiting), `done` (request ids paired, kept
two windows) and `sums` (the folded counters).  A batch is paired, folded and expired in one
MULTI under WATCH of `wait` and `done`: a concurrent writer makes it retry, never count twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from experiments.predictions import Prediction, Recorded, expired, from_fields, pair, to_fields
from experiments.shadow_sums import ShadowSums
from experiments.store.logfold import partition_of
from experiments.store.redis_base import RedisBase


class RedisPredictions(RedisBase):
    partitions: int

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
        by_partition: dict[int, list[Prediction]] = {}
        for p in predictions:
            by_partition.setdefault(partition_of(p.request_id, self.partitions), []).append(p)
        duplicates = paired = 0
        with self._guard():
            for k, batch in by_partition.items():
                d, n = self._pair(experiment, phase, k, batch, score_range, at, window_s)
                duplicates, paired = duplicates + d, paired + n
        return Recorded(len(predictions) - duplicates, duplicates, paired)

    def shadow_sums(
        self,
        experiment: str,
        phase: str,
        *,
        score_range: tuple[float, float],
        window_s: float,
        now: float | None = None,
    ) -> ShadowSums:
        """The phase's sums over the partitions, after expiring what waited too long."""
        at = time.time() if now is None else now
        total = ShadowSums(*score_range)
        with self._guard():
            for k in range(self.partitions):
                self._pair(experiment, phase, k, [], score_range, at, window_s)
            reads = self.client.pipeline(transaction=False)
            for k in range(self.partitions):
                reads.hgetall(self._key(experiment, phase, k, "sums"))
                reads.hlen(self._key(experiment, phase, k, "wait"))
            replies = reads.execute()
        for fields, waiting in zip(replies[::2], replies[1::2], strict=True):
            part = from_fields({f: float(v) for f, v in fields.items()}, *score_range)
            part.pending = int(waiting)
            total = total.merge(part)
        return total

    def _key(self, experiment: str, phase: str, k: int, part: str) -> str:
        return self.partition_key(experiment, k, f"pr:{phase}:{part}")

    def _pair(
        self, experiment: str, phase: str, k: int, batch: list[Prediction],
        score_range: tuple[float, float], now: float, window_s: float,
    ) -> tuple[int, int]:  # fmt: skip
        """(duplicates, pairs) of one partition's batch, with the partition's expiry."""
        wait, since, done, sums = (
            self._key(experiment, phase, k, part) for part in ("wait", "at", "done", "sums")
        )
        ids = sorted({p.request_id for p in batch})
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(wait, done)
                    old_ids = pipe.zrangebyscore(since, "-inf", f"({now - window_s!r}")
                    old = [
                        Prediction.decode(b) for b in (pipe.hmget(wait, old_ids) if old_ids else ())
                        if b is not None
                    ]  # fmt: skip
                    pending: dict[str, Prediction] = {}
                    finished: list[str] = []
                    if ids:
                        pending = {
                            r: Prediction.decode(b)
                            for r, b in zip(ids, pipe.hmget(wait, ids), strict=True)
                            if b is not None and r not in old_ids
                        }
                        scores = pipe.zmscore(done, ids)
                        finished = [r for r, s in zip(ids, scores, strict=True) if s is not None]
                    out = pair(batch, pending, finished, *score_range)
                    pipe.multi()
                    if old_ids:
                        pipe.hdel(wait, *old_ids)
                        pipe.zrem(since, *old_ids)
                    if out.paired:
                        pipe.hdel(wait, *out.paired)
                        pipe.zrem(since, *out.paired)
                        pipe.zadd(done, dict.fromkeys(out.paired, now))
                    if out.wait:
                        pipe.hset(wait, mapping={r: p.encode() for r, p in out.wait.items()})
                        pipe.zadd(since, {r: p.at for r, p in out.wait.items()})
                    pipe.zremrangebyscore(done, "-inf", f"({now - 2 * window_s!r}")
                    fields: dict[str, Any] = to_fields(out.sums)
                    for name, value in to_fields(expired(old)).items():
                        fields[name] = fields.get(name, 0) + value
                    for name, value in fields.items():
                        pipe.hincrbyfloat(sums, name, value)
                    pipe.execute()
                    return out.duplicates, len(out.paired)
                except redis.WatchError:
                    continue
