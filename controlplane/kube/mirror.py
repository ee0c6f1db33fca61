"""Experiment objects mirrored into the store, and the store's status published back.

The store stays the one place the assignment service, the event collectors and the controller
read and write (its compare-and-set status, stats and leases work as outside Kubernetes); the
objects are how people and GitOps tools say what they want.  So the assignment service needs
no Kubernetes credentials and keeps assigning while the API server is away.  Each controller
mirrors every object at every tick: applying an identical spec changes nothing, and two
controllers doing it at once meet the store's compare-and-set, so this is idempotent.

- An object's spec is applied as `abmesh apply` would (controlplane.lifecycle.apply_spec) and
  its `desiredState` reached by start, pause or stop.  A spec the model refuses, a name another
  object (or `abmesh apply`) already has, or overlapping layers leave the store as it was and
  put `Accepted=False` with the reason in the object's status.
- A finalizer holds a deleted object until its rollout is over: the experiment is stopped (the
  controller rolls its routes back), then deleted from the store, then the finalizer removed.
- Which store experiment came from which object (namespace/name and object uid) is kept in a
  store document, so an object deleted while no controller ran, or deleted and created again,
  is noticed at the next list.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane import lifecycle
from controlplane.kube.crd import GROUP, PLURAL, VERSION
from controlplane.kube.leases import call
from controlplane.kube.objects import condition, desired_state, key_of, published_status, spec_of
from controlplane.lifecycle import Action
from experiments.errors import AbmeshError, ConflictError, NotFoundError
from experiments.status import State
from experiments.store import ExperimentRecord, Store

log = logging.getLogger("abmesh.kube")
FINALIZER = "abmesh.io/rollback"
INDEX = "kube#objects"  # store control document: experiment name -> {key, uid}
RETRIES = 3
ACTIONS = {"running": Action.START, "paused": Action.PAUSE, "stopped": Action.STOP}


class Mirror:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        store: Store,
        namespace: str | None,
        clock: Callable[[], float],
        settled: Callable[[ExperimentRecord], bool],
    ) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.store, self.namespace, self.clock = store, namespace, clock
        self.settled = settled  # concluded with its final routes confirmed (the controller's)
        self._notes: dict[str, dict[str, Any] | None] = {}  # key -> its Accepted condition

    def sync(self, objects: dict[str, dict[str, Any]]) -> None:
        """Mirror every object, and forget experiments whose object is gone."""
        index, version = self.store.get_control(INDEX)
        known: dict[str, dict[str, str]] = dict((index or {}).get("experiments", {}))
        mirrored = dict(known)
        self._notes = {key: self._mirror(obj, mirrored) for key, obj in sorted(objects.items())}
        live = {key_of(o): o["metadata"].get("uid") for o in objects.values()}
        watched = [
            (n, o)
            for n, o in mirrored.items()
            if self.namespace is None or o["key"].startswith(f"{self.namespace}/")
        ]
        for name, origin in watched:
            if live.get(origin["key"]) != origin["uid"] and self._retire(name):
                del mirrored[name]
        if mirrored != known:
            # A conflict: another controller wrote it; the next tick merges again.
            with contextlib.suppress(ConflictError):
                self.store.put_control(INDEX, {"experiments": mirrored}, version)

    def _mirror(
        self, obj: dict[str, Any], mirrored: dict[str, dict[str, str]]
    ) -> dict[str, Any] | None:
        """Bring the store to what `obj` asks; a condition for its status if refused."""
        meta, now = obj["metadata"], self.clock()
        name, origin = meta["name"], {"key": key_of(obj), "uid": meta.get("uid", "")}
        generation = int(meta.get("generation", 0))

        def refused(reason: str, message: str) -> dict[str, Any]:
            return condition("Accepted", False, reason, message, now, generation)

        owner = mirrored.get(name)
        if owner is not None and owner["key"] != origin["key"]:
            return refused("NameTaken", f"experiment {name!r} is {owner['key']}'s")
        if meta.get("deletionTimestamp"):
            return self._finish(obj, name, owner == origin, mirrored)
        if owner is None and self._exists(name):
            return refused(
                "NameTaken",
                f"experiment {name!r} exists in the store (abmesh"
                " apply): delete it there or rename this object",
            )
        if owner is not None and owner["uid"] != origin["uid"]:  # deleted and created again
            if not self._retire(name):
                return refused("Replacing", "the previous object's rollout is being rolled back")
            del mirrored[name]
        self._hold(obj)
        try:
            spec = spec_of(obj)
            wanted = desired_state(obj)
            lifecycle.apply_spec(self.store, spec)
        except ConflictError as exc:
            return refused("Conflict", str(exc))
        except AbmeshError as exc:
            return refused("InvalidSpec", str(exc))
        mirrored[name] = origin
        self._reach(name, wanted)
        return condition("Accepted", True, "Mirrored", "in the store", now, generation)

    def _exists(self, name: str) -> bool:
        try:
            self.store.get_experiment(name)
        except NotFoundError:
            return False
        return True

    def _reach(self, name: str, wanted: str) -> None:
        record = self.store.get_experiment(name)
        action = ACTIONS[wanted]
        if record.state is State.CONCLUDED or (
            (action, record.state)
            in (
                (Action.START, State.RUNNING),
                (Action.PAUSE, State.DRAFT),
                (Action.PAUSE, State.PAUSED),
            )
        ):
            return
        with contextlib.suppress(ConflictError):  # another controller moved it first
            lifecycle.change_state(self.store, name, action, by="kubernetes")

    def _retire(self, name: str) -> bool:
        """Stop the experiment, and delete it once its rollout is over; True when gone."""
        try:
            record = self.store.get_experiment(name)
        except NotFoundError:
            return True
        if record.state is not State.CONCLUDED:
            self._reach(name, "stopped")
            return False
        if not self.settled(record):
            return False  # the controller is taking its routes back
        with contextlib.suppress(NotFoundError):
            lifecycle.delete(self.store, name, force=True)
        return True

    def _finish(
        self, obj: dict[str, Any], name: str, ours: bool, mirrored: dict[str, dict[str, str]]
    ) -> dict[str, Any] | None:
        if ours and not self._retire(name):
            return None
        if ours:
            mirrored.pop(name, None)
        self._finalizers(obj, add=False)
        return None

    def _hold(self, obj: dict[str, Any]) -> None:
        if FINALIZER not in (obj["metadata"].get("finalizers") or []):
            self._finalizers(obj, add=True)

    def _finalizers(self, obj: dict[str, Any], *, add: bool) -> None:
        """Add or remove ours, keeping the others; the list goes whole with the version it was
        read at, so one that changed meanwhile is read again (the watch's copy can be behind)."""
        meta = obj["metadata"]
        for _ in range(RETRIES):
            others = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            wanted = [*others, FINALIZER] if add else others
            patch = {
                "metadata": {
                    "finalizers": wanted or None,
                    "resourceVersion": meta["resourceVersion"],
                }
            }
            where = (GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
            try:
                call(self.api.patch_namespaced_custom_object, *where, patch)
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    log.warning("finalizer of %s: %s %s", key_of(obj), exc.status, exc.reason)
                    return
            try:
                fresh = call(self.api.get_namespaced_custom_object, *where)
                meta = cast(dict[str, Any], fresh)["metadata"]
            except ApiException:
                return  # the next tick tries again

    def publish(self, objects: dict[str, dict[str, Any]]) -> None:
        """Write each object's status from the store, where it changed."""
        for key, obj in sorted(objects.items()):
            self._publish(obj, self._notes.get(key))

    def _publish(self, obj: dict[str, Any], note: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and note is None and not self._exists(meta["name"]):
            return
        generation = int(meta.get("generation", 0))
        record = None
        if note is None or note["reason"] != "NameTaken":
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
        patch = {"status": _replacing(current, wanted)}
        try:
            call(
                self.api.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                patch,
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
