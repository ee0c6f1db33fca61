"""Redis store: for production and several service replicas.

Key layout under a prefix (default `abmesh:`; `?prefix=` in the URL):
  {p}experiments                  hash  name -> JSON {revision, status, created_at, updated_at}
  {p}exp:{name}:revisions         hash  revision -> JSON {spec, created_at}
  {p}epoch                        counter bumped on every experiment write
  {p}sticky:{experiment}:{salt}   hash  unit -> variant
  {p}exposures:{experiment}       hash  unit -> "variant time" of its first exposure
  {p}exposure-counts:{experiment} hash  variant -> exposed units
Experiment writes are optimistic transactions (WATCH the index, re-read, MULTI), so the layer
overlap check and the revision bump are atomic against other replicas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from experiments.errors import NotFoundError, StoreError
from experiments.loader import dump_spec, spec_from_mapping
from experiments.names import NAME_RE
from experiments.spec import ExperimentSpec
from experiments.store.protocol import (
    ExperimentRecord,
    ExperimentStatus,
    PutResult,
    check_layer_conflicts,
    check_status,
)

DEFAULT_PREFIX = "abmesh:"


class RedisStore:
    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = "") -> None:
        # Typed Any: with decode_responses=True every reply is str, which redis-py's
        # annotations (bytes | str) cannot express.
        self.client: Any = client
        self.prefix = prefix
        self.url = url
        self._index = f"{prefix}experiments"
        self._record_script = self.client.register_script(_RECORD_EXPOSURES)
        self._sticky_script = self.client.register_script(_PUT_STICKY)
        self._epoch = f"{prefix}epoch"

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            raise StoreError(f"store URL {url!r} is not a valid Redis URL: {exc}") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
        if not NAME_RE.fullmatch(prefix.rstrip(":")):
            raise StoreError(f"store URL {url!r}: prefix {prefix!r} must be a name, e.g. abmesh:")
        if query:
            raise StoreError(f"store URL {url!r}: unknown option(s) {', '.join(sorted(query))}")
        if not parts.hostname:
            raise StoreError(f"store URL {url!r} names no host (e.g. redis://127.0.0.1:6379/0)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise StoreError(f"store URL {url!r}: the database {db!r} must be a number")
        try:
            client = redis.Redis.from_url(
                urlunsplit(parts._replace(query="")),
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StoreError(f"store URL {url!r} is not a valid Redis URL: {exc}") from None
        return cls(client, prefix=prefix, url=url)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(f"Redis store {self.url or self.prefix!r}: {exc}") from None

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        self.client.close()

    def _revisions(self, name: str) -> str:
        return f"{self.prefix}exp:{name}:revisions"

    def _sticky(self, experiment: str, salt: str) -> str:
        return f"{self.prefix}sticky:{experiment}:{salt}"

    def _exposures(self, experiment: str) -> str:
        return f"{self.prefix}exposures:{experiment}"

    def _exposure_counts(self, experiment: str) -> str:
        return f"{self.prefix}exposure-counts:{experiment}"

    # experiments

    def put_experiment(self, spec: ExperimentSpec) -> PutResult:
        text = dump_spec(spec)
        with self._guard(), self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._index)
                    metas = {k: json.loads(v) for k, v in pipe.hgetall(self._index).items()}
                    raws = dict(zip(metas, self._current(pipe, metas), strict=True))
                    check_layer_conflicts(spec, [_spec(raw) for raw in raws.values()])
                    meta = metas.get(spec.name)
                    if meta is not None and json.loads(raws[spec.name])["spec"] == text:
                        pipe.unwatch()
                        return PutResult(_record(spec, meta), changed=False)
                    now = time.time()
                    if meta is None:
                        meta = {
                            "revision": 1,
                            "status": ExperimentStatus.DRAFT.value,
                            "created_at": now,
                            "updated_at": now,
                        }
                    else:
                        meta = {**meta, "revision": meta["revision"] + 1, "updated_at": now}
                    pipe.multi()
                    if meta["revision"] == 1:  # no leftovers of an earlier experiment so named
                        pipe.delete(self._revisions(spec.name))
                    pipe.hset(
                        self._revisions(spec.name),
                        str(meta["revision"]),
                        json.dumps({"spec": text, "created_at": now}),
                    )
                    pipe.hset(self._index, spec.name, json.dumps(meta))
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

    def set_status(
        self, name: str, status: ExperimentStatus, *, expected: ExperimentStatus | None = None
    ) -> ExperimentRecord:
        status = ExperimentStatus(status)
        with self._guard(), self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._index)
                    raw = pipe.hget(self._index, name)
                    if raw is None:
                        raise NotFoundError(f"experiment {name!r} does not exist")
                    meta = json.loads(raw)
                    check_status(name, ExperimentStatus(meta["status"]), expected)
                    meta.update(status=status.value, updated_at=time.time())
                    pipe.multi()
                    pipe.hset(self._index, name, json.dumps(meta))
                    pipe.incr(self._epoch)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return self.get_experiment(name)

    def delete_experiment(self, name: str) -> None:
        with self._guard(), self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._index)
                    if not pipe.hexists(self._index, name):
                        raise NotFoundError(f"experiment {name!r} does not exist")
                    sticky = list(pipe.scan_iter(match=self._sticky(name, "*"), count=500))
                    pipe.multi()
                    pipe.hdel(self._index, name)
                    pipe.delete(
                        self._revisions(name),
                        self._exposures(name),
                        self._exposure_counts(name),
                        *sticky,
                    )
                    pipe.incr(self._epoch)
                    pipe.execute()
                    return
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

    # exposures

    def record_exposures(self, experiment: str, exposures: Mapping[str, tuple[str, float]]) -> int:
        keys = [self._exposures(experiment), self._exposure_counts(experiment)]
        items = list(exposures.items())
        new = 0
        with self._guard():
            for start in range(0, len(items), _CHUNK):
                args: list[str] = []
                for unit, (variant, at) in items[start : start + _CHUNK]:
                    args += [unit, variant, f"{variant} {at!r}"]
                new += int(self._record_script(keys=keys, args=args))
        return new

    def exposure_counts(self, experiment: str) -> dict[str, int]:
        with self._guard():
            counts = self.client.hgetall(self._exposure_counts(experiment))
        return {variant: int(n) for variant, n in counts.items()}

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


# KEYS: exposures hash, counts hash.  ARGV: unit, variant, "variant time", repeated.
# A unit's first exposure wins (HSETNX) and only then counts, atomically.
_RECORD_EXPOSURES = """
local new = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
    new = new + 1
  end
end
return new
"""
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


def _record(spec: ExperimentSpec, meta: Mapping[str, Any]) -> ExperimentRecord:
    return ExperimentRecord(
        spec,
        int(meta["revision"]),
        ExperimentStatus(meta["status"]),
        float(meta["created_at"]),
        float(meta["updated_at"]),
    )
