"""One route plan, three meshes: an Istio VirtualService (+ DestinationRule subsets), an Envoy
RouteConfiguration, and a Gateway API HTTPRoute (Linkerd, Istio, Envoy Gateway).

Header rules come first, each an exact header match to one destination, then the default
route with the plan's weights.  Every route abmesh writes is named with MANAGED_PREFIX, and
the objects carry the `abmesh.io/experiment` annotation, so a router can tell what it owns.
While the plan has a mirror, the routes to the mirrored arm get mirrored copies
(controlplane.routing.render_mirror); without one the renderings are as they were before
mirrors existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controlplane.routing import render_mirror
from controlplane.routing.plan import MANAGED_PREFIX, RoutePlan
from controlplane.routing.render_mirror import mirror_of
from experiments.errors import InvalidInputError
from experiments.spec import Destination

ANNOTATION = "abmesh.io/experiment"
DEFAULT_ROUTE = f"{MANAGED_PREFIX}default"
# HTTPRoute's CRD (gateway-api v1.3 and v1.6 read; tests/schemas): at most 16 rules, 64 matches
# a rule and 128 in all (a rule without matches counts one: the API server adds PathPrefix /).
HTTP_ROUTE_LIMITS = {"rules": 16, "matches_per_rule": 64, "matches": 128}


def _metadata(plan: RoutePlan, name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "annotations": {ANNOTATION: plan.experiment}}


def _istio_destination(d: Destination) -> dict[str, Any]:
    out: dict[str, Any] = {"host": d.host}
    if d.subset:
        out["subset"] = d.subset
    if d.port:
        out["port"] = {"number": d.port}
    return out


def _istio_mirrored(
    plan: RoutePlan, variant: str | None, route: dict[str, Any]
) -> list[dict[str, Any]]:
    mirror = mirror_of(plan, variant)
    if mirror is None:
        return [route]
    to = _istio_destination(plan.destination(mirror.variant))
    return render_mirror.istio_routes(mirror, route, to)


def istio_http_routes(plan: RoutePlan) -> list[dict[str, Any]]:
    """The VirtualService `spec.http` entries abmesh owns, in order."""
    routes = [
        r
        for rule in plan.rules
        for r in _istio_mirrored(plan, rule.variant, {
            "name": rule.name,
            "match": [{"headers": {rule.header: {"exact": rule.value}}}],
            "route": [{"destination": _istio_destination(plan.destination(rule.variant))}],
        })
    ]  # fmt: skip
    weighted = [
        {"destination": _istio_destination(plan.destination(v)), "weight": w}
        for v, w in plan.weights
        if w > 0
    ]
    default = {"name": DEFAULT_ROUTE, "route": weighted}
    return [*routes, *_istio_mirrored(plan, plan.mirrored_arm, default)]


def istio_virtual_service(
    plan: RoutePlan,
    namespace: str = "default",
    *,
    name: str | None = None,
    gateways: Sequence[str] = (),
) -> dict[str, Any]:
    """The VirtualService; with `gateways` it binds to those (list `mesh` too for sidecars),
    without, to sidecars only (Istio's default)."""
    spec: dict[str, Any] = {"hosts": [plan.service]}
    if gateways:
        spec["gateways"] = list(gateways)
    spec["http"] = istio_http_routes(plan)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _metadata(plan, name or plan.service, namespace),
        "spec": spec,
    }


def istio_destination_rules(plan: RoutePlan, namespace: str = "default") -> list[dict[str, Any]]:
    """One DestinationRule per host that has subsets, the subset selecting `version: NAME`."""
    subsets: dict[str, list[str]] = {}
    for _, d in plan.destinations:
        if d.subset:
            subsets.setdefault(d.host, []).append(d.subset)
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": _metadata(plan, host, namespace),
            "spec": {
                "host": host,
                "subsets": [{"name": s, "labels": {"version": s}} for s in names],
            },
        }
        for host, names in subsets.items()
    ]


def envoy_virtual_host(
    plan: RoutePlan, clusters: Mapping[str, str], domains: Sequence[str] = ("*",)
) -> dict[str, Any]:
    """The experiment's virtual host for an Envoy RouteConfiguration; `clusters` maps each
    variant to its cluster.  Named after the experiment, so a route configuration can hold
    several experiments' hosts side by side."""

    def mirrored(variant: str | None, route: dict[str, Any]) -> list[dict[str, Any]]:
        mirror = mirror_of(plan, variant)
        if mirror is None:
            return [route]
        return render_mirror.envoy_routes(mirror, route, clusters[mirror.variant])

    routes = [
        r
        for rule in plan.rules
        for r in mirrored(rule.variant, {
            "name": rule.name,
            "match": {
                "prefix": "/",
                "headers": [{"name": rule.header, "string_match": {"exact": rule.value}}],
            },
            "route": {"cluster": clusters[rule.variant]},
        })
    ]  # fmt: skip
    live = [(clusters[v], w) for v, w in plan.weights if w > 0]
    action: dict[str, Any] = (
        {"cluster": live[0][0]}
        if len(live) == 1
        else {"weighted_clusters": {"clusters": [{"name": c, "weight": w} for c, w in live]}}
    )
    routes += mirrored(
        plan.mirrored_arm, {"name": DEFAULT_ROUTE, "match": {"prefix": "/"}, "route": action}
    )
    return {"name": envoy_host_name(plan.experiment), "domains": list(domains), "routes": routes}


def envoy_host_name(experiment: str) -> str:
    return f"{MANAGED_PREFIX}{experiment}"


def envoy_route_configuration(
    plan: RoutePlan,
    route_name: str,
    clusters: Mapping[str, str],
    domains: Sequence[str] = ("*",),
) -> dict[str, Any]:
    """A RouteConfiguration holding the experiment's virtual host alone.  `validate_clusters`
    makes Envoy refuse a plan naming a cluster it does not know instead of answering that share
    with 503s."""
    return {
        "name": route_name,
        "validate_clusters": True,
        "virtual_hosts": [envoy_virtual_host(plan, clusters, domains)],
    }


Backend = Callable[[Destination], dict[str, Any]]


def backend_name(d: Destination) -> str:
    """Gateway API refers to backends by object name (not DNS name): a subset is the version's
    own object, named <service>-<subset>, in the route's namespace."""
    service = d.host.split(".")[0]
    return f"{service}-{d.subset}" if d.subset else service


def service_backend(d: Destination) -> dict[str, Any]:
    return {"name": backend_name(d), "port": d.port or 80}


def http_route(
    plan: RoutePlan,
    namespace: str = "default",
    port: int = 80,
    *,
    backend: Backend = service_backend,
) -> dict[str, Any]:
    """The plan as an HTTPRoute attached to the service itself (GAMMA, as Linkerd uses it).
    Header rules going to the same destination share one rule (its matches are ORed), which
    keeps within HTTPRoute's limit of 16 rules; a header match outranks the default rule by
    Gateway API's precedence, whatever the order.  `backend` makes a destination's
    backendRef (a Service by default; an InferencePool for the inference-pool router)."""
    by_destination: dict[str, list[dict[str, Any]]] = {}
    for rule in plan.rules:
        match = {"headers": [{"type": "Exact", "name": rule.header, "value": rule.value}]}
        by_destination.setdefault(rule.variant, []).append(match)
    rules = [
        r
        for variant, matches in by_destination.items()
        for r in _gateway_mirrored(plan, variant, backend, {
            "matches": matches, "backendRefs": [backend(plan.destination(variant))]
        })
    ]  # fmt: skip
    default = {"backendRefs": [{**backend(plan.destination(v)), "weight": w}
                               for v, w in plan.weights if w > 0]}  # fmt: skip
    rules += _gateway_mirrored(plan, plan.mirrored_arm, backend, default)
    _check_limits(plan, rules)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _metadata(plan, plan.service, namespace),
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": plan.service, "port": port}],
            "rules": rules,
        },
    }


def _gateway_mirrored(
    plan: RoutePlan, variant: str | None, backend: Backend, rule: dict[str, Any]
) -> list[dict[str, Any]]:
    if plan.mirror is None:
        return [rule]
    mirror = mirror_of(plan, variant)
    if mirror is None:
        return [render_mirror.gateway_kept(plan.mirror, rule)]
    return render_mirror.gateway_mirrored(mirror, rule, backend(plan.destination(mirror.variant)))


def _check_limits(plan: RoutePlan, rules: list[dict[str, Any]]) -> None:
    """The API server would refuse the HTTPRoute: say why here, with the numbers."""
    matches = [len(r.get("matches", [])) or 1 for r in rules]
    counts = {"rules": len(rules), "matches_per_rule": max(matches), "matches": sum(matches)}
    over = [f"{k} {counts[k]} > {limit}" for k, limit in HTTP_ROUTE_LIMITS.items()
            if counts[k] > limit]  # fmt: skip
    if over:
        raise InvalidInputError(
            f"experiment {plan.experiment!r}: its HTTPRoute would exceed Gateway API's limits"
            f" ({', '.join(over)}): fewer header rules or mirrored methods"
        )
