"""An Experiment object's status, written through the status subresource from the store's
record of its experiment, only where it changed (a merge patch: fields the new status drops
are sent as null)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane.kube.crd import GROUP, PLURAL, VERSION
from controlplane.kube.leases import call
from controlplane.kube.objects import key_of, published_status
from experiments.errors import NotFoundError
from experiments.store import Store

log = logging.getLogger("abmesh.kube")


class StatusWriter:
    def __init__(self, api: k8s.CustomObjectsApi, store: Store) -> None:
        self.api, self.store = api, store

    def publish(
        self, obj: dict[str, Any], note: dict[str, Any] | None, generation: int, ours: bool
    ) -> None:
        """`note`: the Accepted condition; `generation`: the object generation this status
        is about; `ours`: whether the store's experiment of that name is this object's."""
        meta = obj["metadata"]
        record = None
        if ours:
            with contextlib.suppress(NotFoundError):
                record = self.store.get_experiment(meta["name"])
        if record is None:  # nothing of its own in the store: only why
            wanted: dict[str, Any] = {
                "observedGeneration": generation,
                "conditions": [note] if note else [],
            }
        else:
            wanted = published_status(record, generation, (note,) if note else ())
        current = obj.get("status") or {}
        if _same(current, wanted):
            return
        where = (GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        try:
            call(
                self.api.patch_namespaced_custom_object_status,
                *where,
                {"status": _replacing(current, wanted)},
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s: %s %s", key_of(obj), exc.status, exc.reason)


def _same(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Equal but for the conditions' transition times, which move only with their status."""

    def plain(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return {**status, "conditions": conditions}

    return plain(current) == plain(wanted)


def _replacing(current: Any, wanted: Any) -> Any:
    """A merge patch that turns `current` into `wanted`: keys it drops are set to null."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        return wanted
    patch = {k: _replacing(current.get(k), v) for k, v in wanted.items()}
    patch.update({k: None for k in current if k not in wanted})
    return patch
