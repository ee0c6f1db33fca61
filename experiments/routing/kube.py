"""Routers that write through the Kubernetes API with the official `kubernetes` client:
`istio` (a VirtualService) and `gateway-api` (an HTTPRoute, for Linkerd and other Gateway API
meshes).

Each write reads the object, builds the new spec, and sends it as a JSON merge patch carrying
`metadata.resourceVersion`: merge patches replace lists whole, so the full `http` (or `rules`)
list goes out, and the resourceVersion makes the API server answer 409 if someone changed the
object in between; then it is read again and retried.  A write that would change nothing is
skipped.  The istio router replaces only routes named `abmesh-…` and keeps every other route
where it was; the gateway-api router owns the whole HTTPRoute it is pointed at, and refuses one
annotated for another experiment.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from experiments.routing.plan import MANAGED_PREFIX, RoutePlan
from experiments.routing.render import ANNOTATION, DEFAULT_ROUTE, http_route, istio_http_routes
from experiments.routing.routers import RouterError

RETRIES = 5


def default_api_client() -> k8s.ApiClient:
    """In a pod, its service account; elsewhere the kubeconfig."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


class _KubeRouter:
    group = version = plural = kind = ""

    def __init__(
        self, name: str, namespace: str = "default", api_client: k8s.ApiClient | None = None
    ) -> None:
        self.object_name, self.namespace = name, namespace
        self.api = k8s.CustomObjectsApi(api_client or default_api_client())

    def _path(self) -> tuple[str, str, str, str, str]:
        return self.group, self.version, self.namespace, self.plural, self.object_name

    def get_routes(self) -> Any:
        try:
            return self.api.get_namespaced_custom_object(*self._path())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RouterError(
                f"{self.kind} {self.namespace}/{self.object_name}: {exc.reason}"
            ) from None

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        raise NotImplementedError

    def set_routes(self, plan: RoutePlan) -> bool:
        where = f"{self.kind} {self.namespace}/{self.object_name}"
        for _ in range(RETRIES):
            current = self.get_routes()
            if current is None:
                raise RouterError(f"{where} does not exist: create it first (see manifests/)")
            owner = (current.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
            if owner not in (None, plan.experiment):
                raise RouterError(
                    f"{where} is managed for experiment {owner!r}, not {plan.experiment!r}"
                )
            spec = self._new_spec(current.get("spec", {}), plan)
            if owner == plan.experiment and all(
                current["spec"].get(k) == v for k, v in spec.items()
            ):
                return False
            patch = {
                "metadata": {
                    "resourceVersion": current["metadata"]["resourceVersion"],
                    "annotations": {ANNOTATION: plan.experiment},
                },
                "spec": spec,
            }
            try:
                self.api.patch_namespaced_custom_object(*self._path(), patch)
                return True
            except ApiException as exc:
                if exc.status != 409:
                    raise RouterError(f"{where}: {exc.status} {exc.reason}") from None
        raise RouterError(f"{where} kept changing under us: {RETRIES} conflicts in a row")


class IstioRouter(_KubeRouter):
    name = "istio"
    group, version, plural, kind = "networking.istio.io", "v1", "virtualservices", "VirtualService"

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        ours = istio_http_routes(plan)
        foreign = [
            r
            for r in current.get("http", [])
            if not str(r.get("name", "")).startswith(MANAGED_PREFIX)
        ]
        # Header rules first, then routes abmesh does not own (in their order), then ours last.
        head = [r for r in ours if r["name"] != DEFAULT_ROUTE]
        tail = [r for r in ours if r["name"] == DEFAULT_ROUTE]
        return {"http": head + foreign + tail}


class GatewayApiRouter(_KubeRouter):
    name = "gateway-api"
    group, version, plural, kind = "gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"

    def __init__(
        self,
        name: str,
        namespace: str = "default",
        api_client: k8s.ApiClient | None = None,
        port: int = 80,
    ) -> None:
        super().__init__(name, namespace, api_client)
        self.port = port

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        return {"rules": http_route(plan, self.namespace, self.port)["spec"]["rules"]}
