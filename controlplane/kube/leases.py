"""Controller leases as `coordination.k8s.io/v1` Lease objects, one per experiment (and one per
live controller, which is how controllers count each other), in the controller's namespace.

The rules are client-go's leader election, per experiment: a Lease is held while
`renewTime + leaseDurationSeconds` is in the future; its holder renews it, anyone may take an
expired one, and every write carries the resourceVersion it read, so of two controllers
taking the same Lease one gets 409 and knows it lost.  Lease names are DNS subdomains, so
abmesh's own name (`<uid>#rollout`, `controller#<id>`) is kept in an annotation and the
object named from it.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

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
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def object_name(name: str) -> str:
    """The Lease's name: readable where abmesh's name allows it, else a digest."""
    readable = "abmesh." + name.replace("#", ".").lower()
    if len(readable) <= 253 and _SUBDOMAIN.fullmatch(readable) and ".." not in readable:
        return readable
    return "abmesh.h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


class KubeLeases:
    """The `LeaseStore` protocol of experiments.store on Kubernetes Leases."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = k8s.CoordinationV1Api(api_client)
        self.namespace, self.clock = namespace, clock

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = datetime.fromtimestamp(self.clock(), UTC)
        seconds = max(1, math.ceil(ttl_s))
        try:
            current = call(self.api.read_namespaced_lease, object_name(name), self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise _failed(f"lease {name}", exc) from None
            return self._create(name, owner, seconds, now)
        spec = current.spec or k8s.V1LeaseSpec()
        holder = spec.holder_identity
        if holder not in (None, "", owner) and not self._expired(spec):
            return False
        if holder != owner:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity, spec.lease_duration_seconds, spec.renew_time = owner, seconds, now
        current.spec = spec
        try:
            call(self.api.replace_namespaced_lease, object_name(name), self.namespace, current)
        except ApiException as exc:
            if exc.status in (404, 409):  # taken or deleted in between: not ours this time
                return False
            raise _failed(f"lease {name}", exc) from None
        return True

    def _create(self, name: str, owner: str, seconds: int, now: datetime) -> bool:
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(
                name=object_name(name),
                namespace=self.namespace,
                labels=dict([LABEL]),
                annotations={NAME: name},
            ),
            spec=k8s.V1LeaseSpec(
                holder_identity=owner,
                lease_duration_seconds=seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            call(self.api.create_namespaced_lease, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another controller created it first
                return False
            raise _failed(f"lease {name}", exc) from None
        return True

    def _expired(self, spec: k8s.V1LeaseSpec) -> bool:
        if spec.renew_time is None:
            return True
        until = spec.renew_time.timestamp() + (spec.lease_duration_seconds or 0)
        return until <= self.clock()

    def release_lease(self, name: str, owner: str) -> None:
        try:
            current = call(self.api.read_namespaced_lease, object_name(name), self.namespace)
            if current.spec is None or current.spec.holder_identity != owner:
                return
            version = current.metadata.resource_version if current.metadata else None
            options = k8s.V1DeleteOptions(
                preconditions=k8s.V1Preconditions(resource_version=version)
            )
            call(self.api.delete_namespaced_lease, object_name(name), self.namespace, body=options)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or renewed by a new holder meanwhile
                raise _failed(f"lease {name}", exc) from None

    def lease_holders(self, prefix: str) -> dict[str, str]:
        try:
            leases = call(
                self.api.list_namespaced_lease, self.namespace, label_selector="=".join(LABEL)
            )
        except ApiException as exc:
            raise _failed("leases", exc) from None
        held: dict[str, str] = {}
        for lease in leases.items:
            name = ((lease.metadata and lease.metadata.annotations) or {}).get(NAME, "")
            spec = lease.spec
            if (
                name.startswith(prefix)
                and spec
                and spec.holder_identity
                and not self._expired(spec)
            ):
                held[name] = spec.holder_identity
        return held


def _failed(what: str, exc: ApiException) -> StoreError:
    return StoreError(f"Kubernetes API, {what}: {exc.status} {exc.reason}")


def call(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One API request with the deadline; a connection that fails or hangs is a StoreError
    (the API's own answers stay ApiExceptions, for the caller to read)."""
    try:
        return method(*args, _request_timeout=TIMEOUT_S, **kwargs)
    except urllib3.exceptions.HTTPError as exc:
        raise StoreError(f"Kubernetes API: {exc}") from None
