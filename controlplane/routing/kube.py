"""Routers that write through the Kubernetes API with the official `kubernetes` client:
`istio` (a VirtualService) and `gateway-api` (an HTTPRoute, for Linkerd and other Gateway API
meshes).

Each write reads the object, builds the new spec, and sends it as a JSON merge patch carrying
`metadata.resourceVersion`: merge patches replace lists whole, so the full `http` (or `rules`)
list goes out, and the resourceVersion makes the API server answer 409 if someone changed the
object in between; then it is read again and retried.  A write that would change nothing is
skipped.  The istio router replaces only routes named `abmesh-…` and keeps every other route
where it was; the gateway-api router owns the whole HTTPRoute it is pointed at, and refuses one
annotated for another experiment.  The serving platforms' routers (kserve, seldon,
inference-pool) build on `KubeRouter` in modules of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from controlplane.routing.plan import MANAGED_PREFIX, RoutePlan
from controlplane.routing.render import ANNOTATION, DEFAULT_ROUTE, http_route, istio_http_routes
from controlplane.routing.routers import RouterError
from experiments.errors import InvalidInputError

RETRIES = 5
HASH = "abmesh.io/routes-hash"  # of the spec abmesh last sent


def default_api_client() -> k8s.ApiClient:
    """In a pod, its service account; elsewhere the kubeconfig."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


class KubeRouter:
    name = group = version = plural = kind = ""
    sticky = mirrors = True

    def __init__(
        self,
        name: str,
        namespace: str = "default",
        api_client: k8s.ApiClient | None = None,
        *,
        port: int = 80,
        gateways: Sequence[str] = (),
    ) -> None:
        self.object_name, self.namespace = name, namespace
        if api_client is None:
            try:
                api_client = default_api_client()
            except k8s_config.ConfigException as exc:
                raise InvalidInputError(
                    f"router {self.name!r}: no Kubernetes credentials (in-cluster or"
                    f" kubeconfig): {exc}"
                ) from None
        self.api = k8s.CustomObjectsApi(api_client)
        self.port = port  # gateway-api: the Service port the HTTPRoute attaches to
        # istio: the gateways the VirtualService binds to; empty: leave the object's own
        # `gateways` alone (sidecars only, unless it lists some).
        self.gateways = list(gateways)

    def _path(self) -> tuple[str, str, str, str, str]:
        return self.group, self.version, self.namespace, self.plural, self.object_name

    def _where(self) -> str:
        return f"{self.kind} {self.namespace}/{self.object_name}"

    def get_routes(self) -> Any:
        try:
            return self.api.get_namespaced_custom_object(*self._path())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RouterError(f"{self._where()}: {exc.status} {exc.reason}") from None

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        """The spec to merge into the object `current` (the whole object: some platforms'
        routers read its status)."""
        raise NotImplementedError

    def set_routes(self, plan: RoutePlan) -> bool:
        for _ in range(RETRIES):
            current = self.get_routes()
            if current is None:
                raise RouterError(
                    f"{self._where()} does not exist: create it first (see manifests/)"
                )
            annotations = current.get("metadata", {}).get("annotations") or {}
            owner = annotations.get(ANNOTATION)
            if owner not in (None, plan.experiment):
                raise RouterError(
                    f"{self._where()} is managed for experiment {owner!r}, not {plan.experiment!r}"
                )
            spec = self._new_spec(current, plan)
            # The API server fills in defaults (an HTTPRoute's match path, a backendRef's kind),
            # so "unchanged" is judged by the hash of what was last sent, and for objects it
            # does not default (VirtualService) also by the live spec, to undo hand edits.
            digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
            if (
                owner == plan.experiment
                and annotations.get(HASH) == digest
                and self._same(current, spec)
            ):
                return False
            patch = {
                "metadata": {
                    "resourceVersion": current["metadata"]["resourceVersion"],
                    "annotations": {ANNOTATION: plan.experiment, HASH: digest},
                },
                "spec": spec,
            }
            try:
                self.api.patch_namespaced_custom_object(*self._path(), patch)
                return True
            except ApiException as exc:
                if exc.status != 409:
                    raise RouterError(f"{self._where()}: {exc.status} {exc.reason}") from None
        raise RouterError(f"{self._where()} kept changing under us: {RETRIES} conflicts in a row")

    def _same(self, current: dict[str, Any], spec: dict[str, Any]) -> bool:
        return True


class IstioRouter(KubeRouter):
    name = "istio"
    group, version, plural, kind = "networking.istio.io", "v1", "virtualservices", "VirtualService"

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        ours = istio_http_routes(plan)
        foreign = [
            r for r in current.get("spec", {}).get("http", [])
            if not str(r.get("name", "")).startswith(MANAGED_PREFIX)
        ]  # fmt: skip
        catch_all = [str(r.get("name", "(unnamed)")) for r in foreign if not r.get("match")]
        if catch_all:
            # It would take every request abmesh's weighted default route is meant for.
            raise RouterError(
                f"{self._where()} has a route without a match that abmesh does not own"
                f" ({', '.join(catch_all)}): remove it; abmesh's default route takes its place"
            )
        # Routes abmesh does not own keep their place first (they match on other things, such
        # as paths); then abmesh's header rules; its weighted default route comes last.
        head = [r for r in ours if r["name"] != DEFAULT_ROUTE]
        tail = [r for r in ours if r["name"] == DEFAULT_ROUTE]
        spec: dict[str, Any] = {"http": foreign + head + tail}
        if self.gateways:
            spec["gateways"] = self.gateways
        return spec

    def _same(self, current: dict[str, Any], spec: dict[str, Any]) -> bool:
        live = current.get("spec", {})
        return all(live.get(key) == value for key, value in spec.items())


class GatewayApiRouter(KubeRouter):
    name = "gateway-api"
    group, version, plural, kind = "gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        return {"rules": http_route(plan, self.namespace, self.port)["spec"]["rules"]}


class ModelRouter(KubeRouter):
    """A serving platform's router, which names models rather than routes: the control
    variant (what serves everyone without an experiment) and variant -> the platform's model
    name (`rollout.target.models`, else the variant's destination host)."""

    def __init__(
        self,
        name: str,
        namespace: str = "default",
        api_client: k8s.ApiClient | None = None,
        *,
        control: str,
        models: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(name, namespace, api_client)
        self.control, self.models = control, dict(models)

    def model(self, plan: RoutePlan, variant: str) -> str:
        return self.models.get(variant) or plan.destination(variant).host
