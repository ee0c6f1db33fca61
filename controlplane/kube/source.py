"""`abmesh controller --source kubernetes`: Experiment objects are what people apply, the
store what every abmesh part reads (controlplane.kube.mirror says why), and Kubernetes Leases
decide which controller drives which experiment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kubernetes import client as k8s

from controlplane.controller import Controller
from controlplane.kube.leases import KubeLeases
from controlplane.kube.mirror import Mirror
from controlplane.kube.watch import WATCH_S, ExperimentWatch
from experiments.errors import InvalidInputError
from experiments.store import Store


class KubeSource:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        store: Store,
        namespace: str | None,
        lease_namespace: str,
        *,
        clock: Callable[[], float] = time.time,
        watch_s: int = WATCH_S,
        retry_s: float = 2.0,
    ) -> None:
        self.api_client, self.store, self.namespace = api_client, store, namespace
        self.clock = clock
        self.watch = ExperimentWatch(api_client, namespace, retry_s=retry_s, watch_s=watch_s)
        self.leases = KubeLeases(api_client, lease_namespace, clock=clock)

    def attach(self, controller: Controller) -> None:
        """Drive `controller` from the objects: its leases become Leases, and each of its ticks
        mirrors the objects first and publishes their status after (once the first list came:
        before it, no object would look like every object deleted)."""
        mirror = Mirror(self.api_client, self.store, self.namespace, self.clock, controller.settled)
        controller.leases = self.leases

        def before() -> None:
            if self.watch.synced.is_set():
                mirror.sync(self.watch.objects())

        def after() -> None:
            mirror.publish()  # what `before` mirrored (nothing before the first list)

        controller.before_tick, controller.after_tick = before, after

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.watch.run, args=(stop,), name="experiment-watch", daemon=True
        )
        thread.start()
        return thread

    def stop(self) -> None:
        self.watch.stop()


def connect(store: Store, namespace: str | None, lease_namespace: str) -> KubeSource:
    """A source on the pod's service account, or else the kubeconfig."""
    from kubernetes.config import ConfigException

    from controlplane.routing.kube import default_api_client

    try:
        api_client = default_api_client()
    except ConfigException as exc:
        raise InvalidInputError(
            f"--source kubernetes: no Kubernetes credentials (in-cluster or kubeconfig): {exc}"
        ) from None
    return KubeSource(api_client, store, namespace, lease_namespace)
