"""Redis part of the store for exposures, events and the statistics folded from them.

The log is a Redis Stream per experiment and partition (a hash of the unit, `PARTITIONS` of
them), and everything a fold reads or writes for that partition shares its hash tag
{pE#k} (p the store's prefix, E the experiment, k the partition), so each append and each
fold is a script or transaction within one slot of a cluster:
  log            stream  x=<exposure> and e=<event> entries, in append order
  appended       counter entries appended
  pos            "<last folded entry id><RS><entries folded>": the fold position
  lock           the folder working on the partition (a lease, SET NX PX)
  ids            zset    event_id -> received at (idempotency, for the retention)
  xp:P           hash    unit -> "variant<RS>at<RS>generation<RS>segments": its first exposure
                         in phase P (segments as in the log entry; absent before 0.1.1)
  u:P            hash    unit -> its state (foldbatch.UnitState)
  st:P, sh:P     hash    the partition's statistics and shifts (see experiments.folding)
An append is one script per partition: it adds to `log` only events whose id is new in `ids`
and exposures of units new in `xp:P`, so a retried request appends nothing twice.  A fold takes
the lock, WATCHes `pos`, reads the entries past it, folds them (`foldbatch`) and writes the
units, the statistics and the new position in one MULTI: applied whole or not at all, and a
folder killed mid-batch leaves the position where it was.  Readers add the partitions'
statistics (`foldbatch.merge_partials`).  Per experiment, with its tag {pE}: `phases` (zset,
phase -> first seen), `plans` (hash, phase -> the fold plan) and `snap` (snapshots).
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import redis
from redis.cluster import RedisCluster

from experiments.errors import StoreError
from experiments.foldbatch import Exposure, UnitState, fold_batch, merge_partials
from experiments.folding import Event, FoldPlan
from experiments.segments import decode_pairs, encode_pairs
from experiments.store.logfold import FOLD_BATCH, SETTLE_S, Settling, partition_of
from experiments.store.protocol import FoldState, IngestResult
from experiments.store.redis_events import RS, RedisEvents

PARTITIONS = 16
# A cluster client takes no scripts in pipelines: an append's calls to its partitions overlap
# their round trips on these threads instead.
_POOL = ThreadPoolExecutor(4, thread_name_prefix="abmesh-partitions")
LOCK_MS = 2_000  # a folder that dies holds its partition this long (a fold takes well under)

_APPEND_EVENTS = """
local dups = {}
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    added = added + 1
  else
    dups[#dups + 1] = (i - 2) / 2
  end
end
if added > 0 then redis.call('INCRBY', KEYS[3], added) end
return dups
"""
_APPEND_EXPOSURES = """
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'x', ARGV[i + 2])
    added = added + 1
  end
end
if added > 0 then redis.call('INCRBY', KEYS[3], added) end
return added
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStats(Settling, RedisEvents):
    partitions = PARTITIONS

    def _script(self, name: str, text: str) -> Any:
        scripts: dict[str, Any] = self.__dict__.setdefault("_scripts", {})
        if name not in scripts:
            scripts[name] = self.client.register_script(text)
        return scripts[name]

    def _append(
        self,
        experiment: str,
        phase: str,
        plan: FoldPlan,
        script: Any,
        calls: list[tuple[list[str], list[Any]]],
    ) -> list[Any]:
        """Register the phase and its fold plan (the first plan stays), then each (keys, args)
        call of the script: all in one round trip on a single server; one by one on a
        cluster, whose client refuses scripts in pipelines.

        The pipeline calls EVALSHA itself: a script called through a pipeline costs another
        round trip (SCRIPT EXISTS) each time.  A server that does not know the script (new, or
        restarted) refuses every call of it; it is loaded and the whole pipeline sent again,
        which appends nothing twice (the scripts skip what their log has)."""
        phases, plans = (self.experiment_key(experiment, p) for p in ("phases", "plans"))
        cluster = isinstance(self.client, RedisCluster)

        def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(phases, {phase: time.time()}, nx=True)
            pipe.hsetnx(plans, phase, plan.to_json())
            if cluster:
                pipe.execute()
                return list(_POOL.map(lambda call: script(keys=call[0], args=call[1]), calls))
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(pipe.execute())[2:]

        try:
            return send()
        except redis.exceptions.NoScriptError:
            self.client.script_load(script.script)
            return send()

    def append_exposures(
        self, experiment: str, phase: str, plan: FoldPlan, exposures: Sequence[Exposure]
    ) -> int:
        by_partition: dict[int, list[str]] = {}
        for x in exposures:
            args = by_partition.setdefault(partition_of(x.unit, self.partitions), [])
            segments = f"{RS}{encode_pairs(x.segments)}" if x.segments else ""
            args += (
                x.unit,
                f"{x.variant}{RS}{x.at!r}{RS}{x.generation}{RS}{encode_pairs(x.segments)}",
                f"{phase}{RS}{x.unit}{RS}{x.variant}{RS}{x.at!r}{RS}{x.generation}{segments}",
            )
        script = self._script("exposures", _APPEND_EXPOSURES)
        calls = [
            (
                [self.partition_key(experiment, k, p) for p in ("log", f"xp:{phase}", "appended")],
                args,
            )
            for k, args in by_partition.items()
        ]
        with self._guard():
            replies = self._append(experiment, phase, plan, script, calls)
        return sum(int(added) for added in replies)

    def append_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        # One pass builds each partition's positions and script arguments: the entry's fields
        # that are the same for the whole batch are formatted once.
        received = repr(time.time())
        head, tail, partitions = f"{phase}{RS}", f"{RS}{received}", self.partitions
        by_partition: dict[int, tuple[list[int], list[str]]] = {}
        for i, e in enumerate(events):
            k = partition_of(e.unit, partitions)
            if k not in by_partition:
                by_partition[k] = ([], [received])
            positions, args = by_partition[k]
            positions.append(i)
            segments = f"{RS}{encode_pairs(e.segments)}" if e.segments else ""
            args += (
                e.event_id,
                f"{head}{e.unit}{RS}{e.series}{RS}{e.value!r}{RS}{e.timestamp!r}{RS}{e.event_id}"
                f"{tail}{segments}",
            )
        script = self._script("events", _APPEND_EVENTS)
        calls: list[tuple[list[str], list[Any]]] = [
            ([self.partition_key(experiment, k, p) for p in ("log", "ids", "appended")], args)
            for k, (_, args) in by_partition.items()
        ]
        with self._guard():
            replies = self._append(experiment, phase, plan, script, calls)
        duplicates: list[int] = []
        for (positions, _), dups in zip(by_partition.values(), replies, strict=True):
            duplicates += (positions[int(j)] for j in dups)
        return IngestResult(len(events) - len(duplicates), sorted(duplicates))

    def fold(self, experiment: str, *, limit: int = FOLD_BATCH) -> int:
        pending = self._pending(experiment)
        with self._guard():
            return sum(self._fold_partition(experiment, k, limit) for k in pending)

    def _pending(self, experiment: str) -> dict[int, tuple[str, int]]:
        """Partitions with entries not folded: k -> (the last folded entry id, how many)."""
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for k in range(self.partitions):
                pipe.get(self.partition_key(experiment, k, "appended"))
                pipe.get(self.partition_key(experiment, k, "pos"))
            replies = pipe.execute()
        out: dict[int, tuple[str, int]] = {}
        for k in range(self.partitions):
            appended, (last, folded) = int(replies[2 * k] or 0), _position(replies[2 * k + 1])
            if appended > folded:
                out[k] = (last, appended - folded)
        return out

    def _fold_partition(self, experiment: str, k: int, limit: int) -> int:
        key = partial(self.partition_key, experiment, k)
        token = uuid.uuid4().hex
        if not self.client.set(key("lock"), token, nx=True, px=LOCK_MS):
            return 0  # another folder works on it
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.watch(key("pos"))
                last, folded = _position(pipe.get(key("pos")))
                entries = self.client.xrange(key("log"), min=f"({last}", max="+", count=limit)
                if not entries:
                    pipe.unwatch()
                    self._script("release", _RELEASE)(keys=[key("lock")], args=[token])
                    return 0
                by_phase: dict[str, tuple[list[Exposure], list[Event]]] = {}
                for _, fields in entries:
                    kind, payload = next(iter(fields.items()))
                    phase, unit, *rest = payload.split(RS)
                    todo = by_phase.setdefault(phase, ([], []))
                    # A last field past the fixed ones is the unit's segment values.
                    if kind == "x":
                        segments = decode_pairs(rest[3]) if len(rest) > 3 else ()
                        todo[0].append(
                            Exposure(unit, rest[0], float(rest[1]), int(rest[2]), segments)
                        )
                    else:
                        segments = decode_pairs(rest[5]) if len(rest) > 5 else ()
                        todo[1].append(
                            Event(rest[3], unit, rest[0], float(rest[1]), float(rest[2]), segments)
                        )
                writes = [self._fold_phase(experiment, k, p, *todo) for p, todo in by_phase.items()]
                pipe.multi()
                for write in writes:
                    write(pipe)
                pipe.set(key("pos"), f"{entries[-1][0]}{RS}{folded + len(entries)}")
                # Released with the write: the WATCH makes it ours still (had the lock expired
                # and another folder moved the position, nothing here would be applied).
                pipe.delete(key("lock"))
                pipe.execute()
                return len(entries)
        except BaseException as exc:
            self._script("release", _RELEASE)(keys=[key("lock")], args=[token])
            if isinstance(exc, redis.WatchError):
                return 0  # folded meanwhile by a folder whose lock had expired
            raise

    def _fold_phase(
        self, experiment: str, k: int, phase: str, exposures: list[Exposure], events: list[Event]
    ) -> Any:
        """Fold one phase's entries of a partition; returns what writes the result."""
        units = list(dict.fromkeys([x.unit for x in exposures] + [e.unit for e in events]))
        keys = {p: self.partition_key(experiment, k, f"{p}:{phase}") for p in ("u", "st", "sh")}
        reads = self.client.pipeline(transaction=False)
        reads.hget(self.experiment_key(experiment, "plans"), phase)
        reads.hmget(keys["u"], units)
        reads.hgetall(keys["st"])
        reads.hgetall(keys["sh"])
        plan_text, records, raw_stats, raw_shifts = reads.execute()
        if plan_text is None:
            raise StoreError(f"Redis store: no fold plan for {experiment!r} phase {phase!r}")
        plan = FoldPlan.from_json(plan_text)
        states = {u: UnitState.decode(r) for u, r in zip(units, records, strict=True)}
        stats = {key: float(v) for key, v in raw_stats.items()}
        shifts = {s: float(v) for s, v in raw_shifts.items()}
        result = fold_batch(plan, states, exposures, events, stats, shifts)

        def write(pipe: Any) -> None:
            pipe.hset(keys["u"], mapping={u: s.encode() for u, s in states.items()})
            if result.changed_stats:
                pipe.hset(keys["st"], mapping={s: repr(stats[s]) for s in result.changed_stats})
            if result.changed_shifts:
                pipe.hset(keys["sh"], mapping={s: repr(shifts[s]) for s in result.changed_shifts})

        return write

    def log_time(self) -> float:
        with self._guard():
            seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def fold_state(self, experiment: str) -> FoldState:
        pending = self._pending(experiment)
        if not pending:
            return FoldState(0, None)
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for k, (last, _) in pending.items():
                pipe.xrange(self.partition_key(experiment, k, "log"), min=f"({last}", count=1)
            firsts = pipe.execute()
        # An entry's id is the millisecond it was appended at.
        times = [int(first[0][0].split("-")[0]) / 1000 for first in firsts if first]
        return FoldState(sum(n for _, n in pending.values()), min(times) if times else None)

    def log_length(self, experiment: str) -> int:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for k in range(self.partitions):
                pipe.xlen(self.partition_key(experiment, k, "log"))
            return sum(int(n) for n in pipe.execute())

    def phase_stats(
        self, experiment: str, phase: str, *, settle: float = SETTLE_S
    ) -> tuple[dict[str, float], dict[str, float]]:
        if settle > 0:
            self.settle(experiment, timeout=settle)
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for k in range(self.partitions):
                pipe.hgetall(self.partition_key(experiment, k, f"st:{phase}"))
                pipe.hgetall(self.partition_key(experiment, k, f"sh:{phase}"))
            replies = pipe.execute()
        parts = [
            (
                {key: float(v) for key, v in replies[2 * k].items()},
                {s: float(v) for s, v in replies[2 * k + 1].items()},
            )
            for k in range(self.partitions)
            if replies[2 * k]
        ]
        return merge_partials(parts) if parts else ({}, {})

    def unit_exposures(self, experiment: str, phase: str, units: Sequence[str]) -> dict[str, Any]:
        """The logged first exposure of each unit that has one: variant, time, generation."""
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for unit in units:
                k = partition_of(unit, self.partitions)
                pipe.hget(self.partition_key(experiment, k, f"xp:{phase}"), unit)
            replies = pipe.execute()
        out: dict[str, Any] = {}
        for unit, raw in zip(units, replies, strict=True):
            if raw is not None:
                variant, at, generation, _ = _first_exposure(raw)
                out[unit] = {"variant": variant, "at": float(at), "generation": int(generation)}
        return out

    def raw_exposures(
        self, experiment: str, phase: str, *, after: str = "", limit: int = 100_000
    ) -> list[dict[str, Any]]:
        """Each partition's units past `after` (HSCAN of its first exposures), the first
        `limit` of all in unit order, with the segment values of the first exposure (kept
        beside it, since the log's own entries are trimmed once folded; for exposures stored
        before that, the values the fold resolved, from the unit's state)."""
        with self._guard():
            found: list[tuple[str, str]] = []
            for k in range(self.partitions):
                key = self.partition_key(experiment, k, f"xp:{phase}")
                past = ((u, raw) for u, raw in self.client.hscan_iter(key, count=1000) if u > after)
                found = heapq.nsmallest(limit, [*found, *heapq.nsmallest(limit, past)])
            pipe = self.client.pipeline(transaction=False)
            for unit, _ in found:
                k = partition_of(unit, self.partitions)
                pipe.hget(self.partition_key(experiment, k, f"u:{phase}"), unit)
            states = pipe.execute()
        out = []
        for (unit, raw), state in zip(found, states, strict=True):
            variant, at, generation, segments = _first_exposure(raw)
            out.append({"unit": unit, "variant": variant, "at": float(at),
                        "generation": int(generation),
                        "segments": dict(decode_pairs(segments)) if segments is not None
                        else UnitState.decode(state).segments})  # fmt: skip
        return out


def _first_exposure(raw: str) -> tuple[str, str, str, str | None]:
    """variant, at, generation and the encoded segments (None: stored without them)."""
    variant, at, generation, *segments = raw.split(RS)
    return variant, at, generation, segments[0] if segments else None


def _position(raw: str | None) -> tuple[str, int]:
    if raw is None:
        return "0-0", 0
    last, folded = raw.split(RS)
    return last, int(folded)
