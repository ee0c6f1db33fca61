"""The `inference-pool` router: Gateway API Inference Extension.  An HTTPRoute
(gateway.networking.k8s.io/v1) on an inference gateway whose backends are `InferencePool`s
(group inference.networking.k8s.io, version v1 since the extension's v1.0.0; before, they were
inference.networking.x-k8s.io/v1alpha2; schema from v1.6.0, tests/schemas).

The rules are the gateway-api router's (controlplane.routing.render.http_route): the header
rules for the forced groups and each arm's group header, grouped by arm, then the weighted
default rule, so every unit reaches the pool of its assigned arm (`sticky = True`) and the
shadow phase's mirror is a RequestMirror filter to the candidate's pool.  Only the backendRefs
differ: each arm's InferencePool, named like the gateway-api router's per-version Service
(`<service>-<subset>`, or the service), with no port (a pool has its own target ports).  The
endpoint picker then chooses a pod within the pool; abmesh chooses the pool.

The router owns the whole `rules` list of the HTTPRoute it is pointed at; its parentRefs (the
inference Gateway) are the owner's.
"""

from __future__ import annotations

from typing import Any

from controlplane.routing.kube import GatewayApiRouter
from controlplane.routing.plan import RoutePlan
from controlplane.routing.render import backend_name, http_route
from experiments.spec import Destination

POOL_GROUP = "inference.networking.k8s.io"
POOL_KIND = "InferencePool"


def pool_backend(destination: Destination) -> dict[str, Any]:
    return {"group": POOL_GROUP, "kind": POOL_KIND, "name": backend_name(destination)}


def inference_route(plan: RoutePlan, namespace: str = "default") -> dict[str, Any]:
    """The plan as an HTTPRoute to InferencePools (parentRefs as http_route renders them: the
    router keeps the live object's own)."""
    return http_route(plan, namespace, backend=pool_backend)


class InferencePoolRouter(GatewayApiRouter):
    name = "inference-pool"

    def _new_spec(self, current: dict[str, Any], plan: RoutePlan) -> dict[str, Any]:
        return {"rules": inference_route(plan, self.namespace)["spec"]["rules"]}
