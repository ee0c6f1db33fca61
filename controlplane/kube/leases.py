"""Controller leases as `coordination.k8s.io/v1` Lease objects, one per experiment (and one per
live controller, which is how controllers count each other), in the controller's namespace.

The rules are client-go's leader election, per experiment: a holder renews its Lease; a
Lease another holds expires once its record has not changed for `leaseDurationSeconds` on the
reader's own clock, counted from when it first read that record (clocks need not agree); and
every write carries the resourceVersion it read, so of two controllers taking the same Lease
one gets 409 and knows it lost.  Lease names are DNS subdomains, so abmesh's own name
(`<uid>#rollout`, `controller#<id>`) is kept in an annotation and the object named from it.

The Leases go through the generic objects API as plain JSON: the typed client re-reads times
into datetimes and writes them back without the six fraction digits MicroTime requires when
they happen to be zero, which the API server refuses.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from experiments.errors import StoreError

T = TypeVar("T")
# Every request's deadline: an API server that hangs fails the tick instead of holding it (the
# controller's liveness probe would restart a hung one).
TIMEOUT_S = 10.0
NAME = "abmesh.io/lease"  # annotation: abmesh's name of the lease
LABEL = ("app.kubernetes.io/managed-by", "abmesh")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def object_name(name: str) -> str:
    """The Lease's name: readable where abmesh's name allows it, else a digest."""
    readable = "abmesh." + name.replace("#", ".")
    labels = readable.split(".")
    if len(readable) <= 253 and all(len(p) <= 63 and _LABEL.fullmatch(p) for p in labels):
        return readable
    return "abmesh.h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


Lease = dict[str, Any]
WHERE = ("coordination.k8s.io", "v1")


class KubeLeases:
    """The `LeaseStore` protocol of experiments.store on Kubernetes Leases."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace, self.clock = namespace, clock
        # Lease name -> (its record as last read, when this controller first read it).
        self._seen: dict[str, tuple[tuple[Any, ...], float]] = {}
        # Lease name -> when this controller last renewed it, for how long (its own clock).
        self._renewed: dict[str, tuple[float, float]] = {}

    def _read(self, name: str) -> Lease | None:
        try:
            lease = call(
                self.api.get_namespaced_custom_object,
                *WHERE,
                self.namespace,
                "leases",
                object_name(name),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _failed(f"lease {name}", exc) from None
        return cast(Lease, lease)

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew.  A Lease renewed less than a third of its duration ago is still
        this controller's (nobody may take it before the whole duration has passed on their
        own clock since they saw the renewal): the controller asks before each write of a
        tick, and only the first of them goes to the API."""
        at, held_for = self._renewed.get(name, (0.0, 0.0))
        now = self.clock()
        if 0 <= now - at < held_for / 3:
            return True
        renewed = self._acquire(name, owner, ttl_s)
        if renewed:  # counted from before the request: the Lease says no earlier
            self._renewed[name] = (now, ttl_s)
        else:
            self._renewed.pop(name, None)
        return renewed

    def _acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        current = self._read(name)
        spec = (current or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        others = current is not None and holder not in (None, "", owner)
        if others and not self._expired(name, cast(Lease, current)):
            return False
        now, taken = self.clock(), holder != owner
        acquired = spec.get("acquireTime") if not taken else None
        metadata: dict[str, Any] = {
            "name": object_name(name),
            "namespace": self.namespace,
            "labels": dict([LABEL]),
            "annotations": {NAME: name},
        }
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": owner,
                "leaseDurationSeconds": max(1, math.ceil(ttl_s)),
                "acquireTime": acquired or micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0)
                + (1 if taken and current is not None else 0),
            },
        }
        try:
            if current is None:
                call(
                    self.api.create_namespaced_custom_object, *WHERE, self.namespace, "leases", body
                )
            else:
                call(
                    self.api.replace_namespaced_custom_object,
                    *WHERE,
                    self.namespace,
                    "leases",
                    object_name(name),
                    body,
                )
        except ApiException as exc:
            if exc.status in (404, 409):  # taken, created or deleted in between: not ours now
                return False
            raise _failed(f"lease {name}", exc) from None
        return True

    def _expired(self, name: str, lease: Lease) -> bool:
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            lease["metadata"].get("resourceVersion"),
        )
        seen, since = self._seen.get(name, ((), 0.0))
        if seen != record:
            self._seen[name] = (record, self.clock())
            return False
        return self.clock() - since >= float(spec.get("leaseDurationSeconds") or 0)

    def release_lease(self, name: str, owner: str) -> None:
        self._renewed.pop(name, None)
        current = self._read(name)
        if current is None or (current.get("spec") or {}).get("holderIdentity") != owner:
            return
        version = current["metadata"]["resourceVersion"]
        try:
            call(
                self.api.delete_namespaced_custom_object,
                *WHERE,
                self.namespace,
                "leases",
                object_name(name),
                body={"preconditions": {"resourceVersion": version}},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or renewed by a new holder meanwhile
                raise _failed(f"lease {name}", exc) from None

    def lease_holders(self, prefix: str) -> dict[str, str]:
        try:
            listed = call(
                self.api.list_namespaced_custom_object,
                *WHERE,
                self.namespace,
                "leases",
                label_selector="=".join(LABEL),
            )
        except ApiException as exc:
            raise _failed("leases", exc) from None
        held: dict[str, str] = {}
        names = set()
        for lease in cast(dict[str, Any], listed).get("items", []):
            name = (lease["metadata"].get("annotations") or {}).get(NAME, "")
            names.add(name)
            holder = (lease.get("spec") or {}).get("holderIdentity")
            if name.startswith(prefix) and holder and not self._expired(name, lease):
                held[name] = holder
        if not prefix:  # every Lease listed: forget the ones deleted since
            self._seen = {n: seen for n, seen in self._seen.items() if n in names}
        return held


def _failed(what: str, exc: ApiException) -> StoreError:
    return StoreError(f"Kubernetes API, {what}: {exc.status} {exc.reason}")


def micro_time(at: float) -> str:
    """A MicroTime as the API server parses it: RFC 3339 with exactly six fraction digits."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def call(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One API request with the deadline; a connection that fails or hangs is a StoreError
    (the API's own answers stay ApiExceptions, for the caller to read)."""
    try:
        return method(*args, _request_timeout=TIMEOUT_S, **kwargs)
    except urllib3.exceptions.HTTPError as exc:
        raise StoreError(f"Kubernetes API: {exc}") from None
