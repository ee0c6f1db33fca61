"""Redis store: for production and several service replicas, on one server or a Redis Cluster.

This part holds experiments and sticky records; `redis_stats` the exposures, events and
statistics; `redis_control` the controller's state, leases and audit logs; `redis_base` the
connection.  Key layout under a prefix p (default `abmesh:`; `?prefix=` in the URL):
  {p}experiments                 hash  name -> JSON {revision, created_at, updated_at, status}
  {p}exp:{name}:revisions        hash  revision -> JSON {spec, created_at}
  {p}epoch                       counter bumped on every experiment write
  {p<experiment>}:sticky:{salt}  hash  unit -> variant
The braces are Redis hash tags: on a cluster a key's slot depends on the tagged part only.

Why two tags.  A spec write reads every experiment (the layer overlap check) and writes the
index, a revision and the epoch; a status commit writes the index, an audit log and the
epoch; a delete drops the index entry, the revisions, the state documents, leases and audit
logs.  Each is one optimistic transaction (WATCH the index, re-read, MULTI), so the overlap
check, the revision bump and a status's compare-and-set (with its audit entries) are atomic
against other replicas and controllers — and a cluster runs a transaction only on keys of one
slot.  So all of those, the catalog, share the tag {p}: one slot per prefix, written only when
an experiment or its status changes.  The high-volume keys (sticky records, exposures,
events, statistics) take the experiment's tag, so experiments spread over the cluster and
every fold is a transaction within one slot.  The one operation that spans both is a delete:
it removes the experiment's data keys first and then, in one catalog transaction, the
experiment itself.  Interrupted, the experiment is still listed (its data may be gone
already) and the delete can be run again.

This layout replaced one without hash tags (issue 15): keys written by the old layout are not
read, and no migration is provided.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

import redis

from experiments.errors import NotFoundError, StoreError
from experiments.loader import dump_spec, spec_from_mapping
from experiments.spec import ExperimentSpec
from experiments.status import DEFAULT_PHASE, Status
from experiments.store.protocol import (
    ExperimentRecord,
    PutResult,
    Reaction,
    check_commit,
    check_layer_conflicts,
)
from experiments.store.redis_control import RedisControl
from experiments.store.redis_predictions import RedisPredictions
from experiments.store.redis_stats import RedisStats


class RedisStore(RedisStats, RedisPredictions, RedisControl):
    @cached_property
    def _sticky_script(self) -> Any:
        return self.client.register_script(_PUT_STICKY)

    def _revisions(self, name: str) -> str:
        return self.catalog_key(f"exp:{name}:revisions")

    def _sticky(self, experiment: str, salt: str) -> str:
        return self.experiment_key(experiment, f"sticky:{salt}")

    # experiments

    def put_experiment(self, spec: ExperimentSpec, *, react: Reaction | None = None) -> PutResult:
        text = dump_spec(spec)
        with self._guard(), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._index)
                    metas = {k: json.loads(v) for k, v in pipe.hgetall(self._index).items()}
                    raws = dict(zip(metas, self._current(pipe, metas), strict=True))
                    check_layer_conflicts(spec, [_spec(raw) for raw in raws.values()])
                    meta = metas.get(spec.name)
                    # Compared as specs, not as text: a spec stored before a field existed
                    # reads with its default, and is the same spec.
                    if meta is not None and _spec(raws[spec.name]) == spec:
                        pipe.unwatch()
                        return PutResult(_record(spec, meta), changed=False)
                    now = time.time()
                    if meta is None:
                        before, status = None, Status.new(now)
                        meta = {"revision": 1, "created_at": now, "updated_at": now}
                    else:
                        before, status = _spec(raws[spec.name]), _status(spec.name, meta)
                        meta = {**meta, "revision": meta["revision"] + 1, "updated_at": now}
                    new = react(before, status, meta["revision"]) if react else status
                    if before is None or new != status:
                        status = replace(new, version=status.version + 1)
                    meta["status"] = status.to_dict()
                    pipe.multi()
                    if meta["revision"] == 1:  # no leftovers of an earlier experiment so named
                        pipe.delete(self._revisions(spec.name))
                    pipe.hset(
                        self._revisions(spec.name),
                        str(meta["revision"]),
                        json.dumps({"spec": text, "created_at": now}),
                    )
                    pipe.hset(self._index, spec.name, json.dumps(meta, allow_nan=False))
                    pipe.incr(self._epoch)
                    pipe.execute()
                    return PutResult(_record(spec, meta), changed=True)
                except redis.WatchError:
                    continue

    def _current(self, conn: Any, metas: Mapping[str, Any]) -> list[Any]:
        """The stored current revision of each experiment (queued, when `conn` is a pipeline)."""
        return [conn.hget(self._revisions(n), str(meta["revision"])) for n, meta in metas.items()]

    def get_experiment(self, name: str, revision: int | None = None) -> ExperimentRecord:
        with self._guard():
            meta = self._meta(name)
            wanted = meta["revision"] if revision is None else revision
            raw = self.client.hget(self._revisions(name), str(wanted))
        if raw is None:
            raise NotFoundError(f"experiment {name!r} has no revision {revision}")
        stored = json.loads(raw)
        if wanted == meta["revision"]:
            return _record(_spec(raw), meta)
        return _record(_spec(raw), {**meta, "revision": wanted, "updated_at": stored["created_at"]})

    def list_experiments(self) -> list[ExperimentRecord]:
        with self._guard():
            metas = {k: json.loads(v) for k, v in self.client.hgetall(self._index).items()}
            pipe = self.client.pipeline(transaction=False)
            self._current(pipe, metas)
            texts = pipe.execute()
        records = [_record(_spec(t), metas[n]) for n, t in zip(metas, texts, strict=True)]
        return sorted(records, key=lambda r: r.name)

    def experiment_history(self, name: str) -> list[ExperimentRecord]:
        with self._guard():
            meta = self._meta(name)
            stored = self.client.hgetall(self._revisions(name))
        out = []
        for rev in sorted(int(r) for r in stored):
            raw = stored[str(rev)]
            at = json.loads(raw)["created_at"]
            out.append(_record(_spec(raw), {**meta, "revision": rev, "updated_at": at}))
        return out

    def commit_status(
        self,
        name: str,
        status: Status,
        *,
        expected_version: int,
        audit: Sequence[dict[str, Any]] = (),
    ) -> ExperimentRecord:
        new = replace(status, version=expected_version + 1)
        entries = [_audit_item(e) for e in audit]
        with self._guard(), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._index)
                    raw = pipe.hget(self._index, name)
                    if raw is None:
                        raise NotFoundError(f"experiment {name!r} does not exist")
                    meta = json.loads(raw)
                    stored = _status(name, meta)
                    check_commit(name, stored, status, expected_version)
                    meta = {**meta, "status": new.to_dict(), "updated_at": time.time()}
                    pipe.multi()
                    pipe.hset(self._index, name, json.dumps(meta, allow_nan=False))
                    if entries:
                        pipe.rpush(self.audit_key(status.uid), *entries)
                    if new.assignment_view() != stored.assignment_view():
                        pipe.incr(self._epoch)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return self.get_experiment(name)

    def delete_experiment(self, name: str, *, keep_history: bool = False) -> str:
        with self._guard():
            self._meta(name)
            # The data first, the catalog last (see the module docstring): a cluster cannot
            # delete both in one transaction.
            for pattern in (self.experiment_key(name, "*"), self.partition_key(name, "*", "*")):
                data = list(self.client.scan_iter(match=pattern, count=500))
                for key in data:  # one by one: on a cluster, the keys lie in many slots
                    self.client.delete(key)
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(self._index)
                        raw = pipe.hget(self._index, name)
                        if raw is None:
                            raise NotFoundError(f"experiment {name!r} does not exist")
                        uid = _status(name, json.loads(raw)).uid
                        derived = self.uid_keys(uid, keep_history=keep_history)
                        pipe.multi()
                        pipe.hdel(self._index, name)
                        pipe.delete(self._revisions(name), *derived)
                        pipe.incr(self._epoch)
                        pipe.execute()
                        return uid
                    except redis.WatchError:
                        continue

    def config_epoch(self) -> int:
        with self._guard():
            return int(self.client.get(self._epoch) or 0)

    def _meta(self, name: str) -> dict[str, Any]:
        raw = self.client.hget(self._index, name)
        if raw is None:
            raise NotFoundError(f"experiment {name!r} does not exist")
        meta: dict[str, Any] = json.loads(raw)
        return meta

    # sticky assignments

    def get_sticky(self, experiment: str, salt: str, units: Sequence[str]) -> dict[str, str]:
        if not units:
            return {}
        with self._guard():
            values = self.client.hmget(self._sticky(experiment, salt), list(units))
        return {u: v for u, v in zip(units, values, strict=True) if v is not None}

    def put_sticky(
        self,
        experiment: str,
        salt: str,
        variants: Mapping[str, str],
        *,
        current: Collection[str] | None = None,
    ) -> dict[str, str]:
        keep = sorted(current) if current is not None else []
        items, recorded = list(variants.items()), []
        with self._guard():
            for start in range(0, len(items), _CHUNK):
                args = [str(len(keep)), *keep]
                for unit, variant in items[start : start + _CHUNK]:
                    args += [unit, variant]
                recorded += self._sticky_script(keys=[self._sticky(experiment, salt)], args=args)
        return {unit: variant for (unit, _), variant in zip(items, recorded, strict=True)}


_CHUNK = 2000  # units per script call: bounds the time Redis is blocked

# KEYS: the sticky hash.  ARGV: n, then n variant keys still in the spec (n = 0: keep every
# record), then unit, variant pairs.  Returns the recorded variant of each unit.
_PUT_STICKY = """
local n = tonumber(ARGV[1])
local current = {}
for i = 2, n + 1 do current[ARGV[i]] = true end
local out = {}
for i = n + 2, #ARGV, 2 do
  local recorded = redis.call('HGET', KEYS[1], ARGV[i])
  if not recorded or (n > 0 and not current[recorded]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    recorded = ARGV[i + 1]
  end
  out[#out + 1] = recorded
end
return out
"""


def _spec(raw: str | None) -> ExperimentSpec:
    if raw is None:  # the index names a revision that is not stored: written by something else
        raise StoreError("the Redis store is inconsistent: an indexed revision is missing")
    return spec_from_mapping(json.loads(json.loads(raw)["spec"]))


def _status(name: str, meta: Mapping[str, Any]) -> Status:
    status = meta["status"]
    if isinstance(status, str):  # written before status documents: uid = the name
        return Status.legacy(
            name, status, str(meta.get("phase", DEFAULT_PHASE)), float(meta["created_at"])
        )
    return Status.from_dict(status)


def _record(spec: ExperimentSpec, meta: Mapping[str, Any]) -> ExperimentRecord:
    return ExperimentRecord(
        spec,
        int(meta["revision"]),
        _status(spec.name, meta),
        float(meta["created_at"]),
        float(meta["updated_at"]),
    )


def _audit_item(entry: dict[str, Any]) -> str:
    return json.dumps({"at": time.time(), "entry": entry}, allow_nan=False)
