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
- Which store experiment came from which object is kept in the store (controlplane.kube.
  origins), so an object deleted while no controller ran, or deleted and created again, is
  noticed.  A controller's watch can be behind another's: an object missing from its copy, or
  with another uid, is read from the API before anything is retired, and an object older
  than the generation already mirrored is left alone.
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
from controlplane.kube.objects import condition, desired_state, key_of, spec_of
from controlplane.kube.origins import Origin, Origins
from controlplane.kube.publish import StatusWriter
from controlplane.lifecycle import Action
from experiments.errors import AbmeshError, ConflictError, NotFoundError
from experiments.status import State
from experiments.store import ExperimentRecord, Store

log = logging.getLogger("abmesh.kube")
FINALIZER = "abmesh.io/rollback"
RETRIES = 3
ACTIONS = {"running": Action.START, "paused": Action.PAUSE, "stopped": Action.STOP}
DONE = {(Action.START, State.RUNNING), (Action.PAUSE, State.DRAFT), (Action.PAUSE, State.PAUSED)}


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
        self.origins = Origins(store)
        self.writer = StatusWriter(self.api, store)
        # What this tick's sync saw, for publish: key -> (object, Accepted condition,
        # generation mirrored, whether the store's experiment is this object's).
        self._seen: dict[str, tuple[dict[str, Any], dict[str, Any] | None, int, bool]] = {}
        # key -> the object (uid, generation) this controller last applied in full: the same
        # again, still held, only needs its desired state checked.
        self._done: dict[str, Origin] = {}

    def sync(self, objects: dict[str, dict[str, Any]]) -> None:
        """Mirror every object, and retire experiments whose object is gone.  One object that
        fails (the API or the store refusing) does not hold up the others."""
        self._seen = {}
        held = self.origins.all()
        for key, obj in sorted(objects.items()):
            try:
                self._mirror(obj, held.get(obj["metadata"]["name"]))
            except (AbmeshError, ApiException) as exc:
                log.warning("mirroring %s: %s; the next tick tries again", key, exc)
        live = {key_of(o): o["metadata"].get("uid") for o in objects.values()}
        for name, origin in self.origins.all().items():
            if live.get(origin.key) == origin.uid or not self._watched(origin.key):
                continue
            try:
                if self._current_uid(origin.key) != origin.uid and self._retire(name):
                    self.origins.forget(name, origin)
            except (AbmeshError, ApiException) as exc:
                log.warning("retiring %s: %s; the next tick tries again", name, exc)

    def publish(self) -> None:
        """Write the status of each object this tick's sync mirrored, where it changed."""
        for key, (obj, note, generation, ours) in sorted(self._seen.items()):
            try:
                self.writer.publish(obj, note, generation, ours)
            except AbmeshError as exc:
                log.warning("status of %s: %s", key, exc)

    def _watched(self, key: str) -> bool:
        return self.namespace is None or key.startswith(f"{self.namespace}/")

    def _current_uid(self, key: str) -> str | None:
        """The uid of the object at `key` as the API has it now (None: there is none)."""
        namespace, name = key.split("/", 1)
        try:
            obj = call(
                self.api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(cast(dict[str, Any], obj)["metadata"].get("uid", ""))

    def _mirror(self, obj: dict[str, Any], held: Origin | None) -> None:
        """Bring the store to what `obj` asks; `held`: the name's origin as this tick read it
        (claims below read it again, with their compare-and-set)."""
        meta, now = obj["metadata"], self.clock()
        name, key = meta["name"], key_of(obj)
        this = Origin(key, str(meta.get("uid", "")), int(meta.get("generation", 0)))

        def note(ok: bool, reason: str, message: str, ours: bool = False) -> None:
            accepted = condition("Accepted", ok, reason, message, now, this.generation)
            self._seen[key] = (obj, accepted, this.generation, ours)

        if held is not None and held.key != key:
            return note(False, "NameTaken", f"experiment {name!r} is {held.key}'s")
        if held is not None and held.uid != this.uid:
            if self._current_uid(key) != this.uid:
                return None  # this copy is behind the API: the object there is the held one
            if not self._retire(name):  # deleted and created again: the old one goes first
                return note(False, "Replacing", "the previous object's rollout is rolled back")
            self.origins.forget(name, held)
            held = None
        if meta.get("deletionTimestamp"):
            return self._finish(obj, name, held)
        if held is None and self._exists(name):
            return note(
                False,
                "NameTaken",
                f"experiment {name!r} exists in the store (abmesh"
                " apply): delete it there or rename this object",
            )
        if self._done.get(key) == this and held == this:  # mirrored already, unchanged since
            try:
                self._reach(name, desired_state(obj))
                return note(True, "Mirrored", "in the store", ours=True)
            except NotFoundError:  # deleted from the store by hand: mirrored again below
                del self._done[key]
        held = self.origins.claim(name, this)
        if not held.same_object(this):  # another object claimed it in between
            return note(False, "NameTaken", f"experiment {name!r} is {held.key}'s")
        if held.generation > this.generation:
            return None  # another controller mirrored a newer generation: this copy is behind
        self._hold(obj)
        try:
            spec = spec_of(obj)
            wanted = desired_state(obj)
            lifecycle.apply_spec(self.store, spec)
        except ConflictError as exc:
            return note(False, "Conflict", str(exc), ours=self._exists(name))
        except AbmeshError as exc:
            return note(False, "InvalidSpec", str(exc), ours=self._exists(name))
        self._reach(name, wanted)
        self._done[key] = this
        return note(True, "Mirrored", "in the store", ours=True)

    def _exists(self, name: str) -> bool:
        try:
            self.store.get_experiment(name)
        except NotFoundError:
            return False
        return True

    def _reach(self, name: str, wanted: str) -> None:
        record = self.store.get_experiment(name)
        action = ACTIONS[wanted]
        if record.state is State.CONCLUDED or (action, record.state) in DONE:
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

    def _finish(self, obj: dict[str, Any], name: str, held: Origin | None) -> None:
        """A deleted object: its experiment rolled back and removed, then its finalizer."""
        if held is not None:
            if not self._retire(name):
                self._seen[key_of(obj)] = (obj, None, held.generation, True)  # rolling back
                return
            self.origins.forget(name, held)
        self._finalizers(obj, add=False)

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
