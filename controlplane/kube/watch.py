"""Experiments from the Kubernetes API: list, then watch from the list's resourceVersion; a
watch that ends is resumed from the last version seen, and one the server no longer remembers
(410 Gone) is replaced by a fresh list.  What it sees is kept as the latest object per
namespace/name, which the controller's loop mirrors into the store at its next tick
(controlplane.kube.mirror)."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from controlplane.kube.crd import GROUP, PLURAL, VERSION
from controlplane.kube.leases import TIMEOUT_S
from controlplane.kube.objects import key_of

log = logging.getLogger("abmesh.kube")
WATCH_S = 300  # each watch request's server-side timeout; then it is resumed


class ExperimentWatch:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str | None,
        *,
        retry_s: float = 2.0,
        watch_s: int = WATCH_S,
    ) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace  # None: every namespace
        self.retry_s, self.watch_s = retry_s, watch_s
        self.synced = threading.Event()  # set once the first list arrived
        self.relists = 0  # lists taken (the first, and one after each 410 or failure)
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._version: str | None = None
        self._watch: k8s_watch.Watch | None = None

    def objects(self) -> dict[str, dict[str, Any]]:
        """The latest object per namespace/name (copies)."""
        with self._lock:
            return copy.deepcopy(self._objects)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._version is None:
                    self.relist()
                self._follow(stop)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch of experiments expired (410): listing again")
                else:
                    log.warning("watch of experiments failed: %s %s", exc.status, exc.reason)
                    stop.wait(self.retry_s)
                self._version = None
            except Exception as exc:  # an API server that went away: list again when it is back
                log.warning("watch of experiments failed: %s", exc)
                self._version = None
                stop.wait(self.retry_s)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def _lister(self) -> tuple[Callable[..., Any], tuple[str, ...]]:
        if self.namespace is None:
            return self.api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        return self.api.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)

    def relist(self) -> None:
        call, args = self._lister()
        listed: dict[str, Any] = call(*args, _request_timeout=TIMEOUT_S)
        with self._lock:
            self._objects = {key_of(o): o for o in listed.get("items", [])}
        self._version = listed["metadata"]["resourceVersion"]
        self.relists += 1
        self.synced.set()

    def _follow(self, stop: threading.Event) -> None:
        self._watch = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        call, args = self._lister()
        for event in self._watch.stream(  # type: ignore[no-untyped-call]
            call,
            *args,
            resource_version=self._version,
            timeout_seconds=self.watch_s,
            allow_watch_bookmarks=True,
        ):
            obj = event["raw_object"]
            self._version = obj.get("metadata", {}).get("resourceVersion", self._version)
            if event["type"] == "BOOKMARK":
                continue
            with self._lock:
                if event["type"] == "DELETED":
                    self._objects.pop(key_of(obj), None)
                else:
                    self._objects[key_of(obj)] = obj
            if stop.is_set():
                self._watch.stop()  # type: ignore[no-untyped-call]
