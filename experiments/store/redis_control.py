"""Redis part of the store for the rollout controller.  Each write is one Lua script, so the
compare-and-set of a state document, the check-and-take of a lease and the check-and-append of
a look are atomic on the server whatever the number of writers.  Its keys (`{p}control:K`,
`{p}lease:N`, `{p}audit:UID`, `{p}looks:UID` with `{p}looks-last:UID`) are in the catalog's
slot (see `redis`): a status commit appends to an audit log and a delete drops an experiment's
documents in the same transaction as the experiment index.

The looks of every phase share one list (`{"phase", "look"}` entries); `looks-last` holds, per
phase, its count and last fingerprint as `count|fingerprint`, which the append checks."""

from __future__ import annotations

import json
import time
from typing import Any

from experiments.errors import ConflictError
from experiments.store.redis_base import RedisBase

_PUT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then return -1 - current end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', current + 1)
return current + 1
"""
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_APPEND_LOOK = """
local last = redis.call('HGET', KEYS[2], ARGV[1])
local count = 0
if last then
  local sep = string.find(last, '|', 1, true)
  count = tonumber(string.sub(last, 1, sep - 1))
  if string.sub(last, sep + 1) == ARGV[2] then return 0 end
end
if count >= tonumber(ARGV[3]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], (count + 1) .. '|' .. ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisControl(RedisBase):
    def get_control(self, key: str) -> tuple[dict[str, Any] | None, int]:
        with self._guard():
            doc, version = self.client.hmget(self._control(key), "doc", "version")
        return (json.loads(doc), int(version)) if doc is not None else (None, 0)

    def put_control(self, key: str, doc: dict[str, Any], expected_version: int) -> int:
        text = json.dumps(doc, allow_nan=False)
        with self._guard():
            result = int(self.client.eval(_PUT, 1, self._control(key), expected_version, text))
        if result < 0:
            raise ConflictError(
                f"state {key!r} is at version {-1 - result}, not {expected_version}:"
                " another writer changed it"
            )
        return result

    def _control(self, key: str) -> str:
        return self.catalog_key(f"control:{key}")

    def audit_key(self, uid: str) -> str:
        return self.catalog_key(f"audit:{uid}")

    def append_audit(self, uid: str, entry: dict[str, Any]) -> None:
        text = json.dumps({"at": time.time(), "entry": entry}, allow_nan=False)
        with self._guard():
            self.client.rpush(self.audit_key(uid), text)

    def audit(self, uid: str) -> list[dict[str, Any]]:
        with self._guard():
            rows = self.client.lrange(self.audit_key(uid), 0, -1)
        return [json.loads(r)["entry"] for r in rows]

    def _look_keys(self, uid: str) -> list[str]:
        return [self.catalog_key(f"looks:{uid}"), self.catalog_key(f"looks-last:{uid}")]

    def append_look(self, uid: str, look: dict[str, Any], *, fingerprint: str, cap: int) -> bool:
        phase = str(look["phase"])
        text = json.dumps({"phase": phase, "look": look}, allow_nan=False)
        with self._guard():
            added = self.client.eval(
                _APPEND_LOOK, 2, *self._look_keys(uid), phase, fingerprint, cap, text
            )
        return bool(int(added))

    def looks(self, uid: str, phase: str | None = None) -> list[dict[str, Any]]:
        with self._guard():
            rows = self.client.lrange(self._look_keys(uid)[0], 0, -1)
        entries = (json.loads(r) for r in rows)
        return [e["look"] for e in entries if phase is None or e["phase"] == phase]

    def last_look(self, uid: str, phase: str) -> dict[str, Any] | None:
        # Read back from the end in growing chunks: the phase asked for is nearly always the
        # last one looked at.  A look appended meanwhile shifts the negative indexes towards
        # entries already read, so none is skipped.
        key, end, size = self._look_keys(uid)[0], -1, 8
        with self._guard():
            while True:
                rows = self.client.lrange(key, end - size + 1, end)
                for row in reversed(rows):
                    entry = json.loads(row)
                    if entry["phase"] == phase:
                        return dict(entry["look"])
                if len(rows) < size:
                    return None
                end, size = end - size, size * 2

    def lease_holders(self, prefix: str) -> dict[str, str]:
        head = self.catalog_key("lease:")
        with self._guard():
            keys = list(self.client.scan_iter(match=f"{head}{_glob_escape(prefix)}*", count=500))
            owners = self.client.mget(keys) if keys else []
        # A lease that expired between the scan and the read reads as None: not held.
        return {k[len(head) :]: o for k, o in zip(keys, owners, strict=True) if o is not None}

    def uid_keys(self, uid: str, *, keep_history: bool) -> list[str]:
        """The keys kept under an experiment's uid: its state documents and leases (keys
        equal to the uid or starting with `uid#`) and, unless kept, its audit log and looks."""
        found = [self._control(uid)]
        for kind in ("control", "lease"):
            pattern = _glob_escape(self.catalog_key(f"{kind}:{uid}")) + "#*"
            found += self.client.scan_iter(match=pattern, count=500)
        return found if keep_history else [*found, self.audit_key(uid), *self._look_keys(uid)]

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        with self._guard():
            taken = self.client.eval(
                _ACQUIRE, 1, self.catalog_key(f"lease:{name}"), owner, max(int(ttl_s * 1000), 1)
            )
        return bool(int(taken))

    def release_lease(self, name: str, owner: str) -> None:
        with self._guard():
            self.client.eval(_RELEASE, 1, self.catalog_key(f"lease:{name}"), owner)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
