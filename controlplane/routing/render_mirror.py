"""The shadow phase's mirror in each mesh's terms (controlplane.routing.render calls these).

Only requests that go to the mirrored (stable) arm are copied: the default route and the
header rules to that arm.  No mesh mirrors by method, so each such route gets a copy restricted
to the mirror's methods that carries the mirror, and the route itself stays behind it for the
other methods.  The copy comes first where the first matching route wins (Istio, Envoy); in
Gateway API, where a method match outranks header matches whatever the order, the header rules
of the other arms get method-restricted matches too, or the mirrored default rule would take
their requests.

The percentage is kept exact where the mesh allows: Envoy takes a fraction over 100, 10⁴ or
10⁶, Gateway API an integer percent or any fraction, Istio a double.  A percent finer than a
millionth is rounded to one, as Istio does when it turns `mirrorPercentage` into Envoy's
fraction.

Envoy (and Istio, which builds on it) appends `-shadow` to the Host of a mirrored request unless
told not to: the candidate is reached under the service's own name, so a virtual host or
route keyed on that name (its sidecar's, or its own Envoy's) would not match the suffixed one.
Istio's VirtualService has no field for this.

A copy shares no objects with its route: YAML would show shared ones as anchors and aliases.
"""

from __future__ import annotations

from copy import deepcopy
from fractions import Fraction
from typing import Any

from controlplane.routing.plan import MANAGED_PREFIX, Mirror, RoutePlan

MIRROR_PREFIX = f"{MANAGED_PREFIX}mirror-"
DENOMINATORS = {100: "HUNDRED", 10_000: "TEN_THOUSAND", 1_000_000: "MILLION"}


def mirror_of(plan: RoutePlan, variant: str | None) -> Mirror | None:
    """The plan's mirror if requests routed to `variant` are mirrored, else None (`variant`
    of the default route: the plan's `mirrored_arm`)."""
    return plan.mirror if plan.mirror and variant == plan.mirrored_arm else None


def mirrored_name(name: str) -> str:
    """The name of a route's mirrored copy: unique, since the originals' names are."""
    return MIRROR_PREFIX + name.removeprefix(MANAGED_PREFIX)


def percent_fraction(percent: float) -> tuple[int, int]:
    """`percent` as (numerator, denominator), the denominator the smallest of 100, 10⁴ and 10⁶
    that holds it exactly; finer ones rounded to millionths."""
    share = Fraction(str(percent)) / 100  # str: 0.1 is 1/10, not the binary double
    for denominator in DENOMINATORS:
        scaled = share * denominator
        if scaled.denominator == 1:
            return int(scaled), denominator
    return round(share * 1_000_000), 1_000_000


def istio_routes(mirror: Mirror, route: dict[str, Any], to: dict[str, Any]) -> list[dict[str, Any]]:
    """`route` behind its copy for the mirror's methods, which mirrors to destination `to`.
    Within one match entry conditions are ANDed, across entries ORed: each entry of the
    route is repeated once per method."""
    copy = {
        "name": mirrored_name(route["name"]),
        "match": [
            {**deepcopy(match), "method": {"exact": method}}
            for match in route.get("match") or [{}]
            for method in mirror.methods
        ],
        "route": route["route"],
        "mirror": to,
        "mirrorPercentage": {"value": mirror.percent},
    }
    return [deepcopy(copy), route]


def envoy_routes(mirror: Mirror, route: dict[str, Any], cluster: str) -> list[dict[str, Any]]:
    """`route` behind its copy for the mirror's methods (a `:method` header matcher), which
    mirrors to `cluster`."""
    methods = mirror.methods
    method = (
        {"exact": methods[0]} if len(methods) == 1 else {"safe_regex": {"regex": "|".join(methods)}}
    )  # Envoy's safe_regex matches the whole value
    numerator, denominator = percent_fraction(mirror.percent)
    headers = [*route["match"].get("headers", []), {"name": ":method", "string_match": method}]
    policy = {
        "cluster": cluster,
        "runtime_fraction": {
            "default_value": {"numerator": numerator, "denominator": DENOMINATORS[denominator]}
        },
        "disable_shadow_host_suffix_append": True,
    }
    copy = {
        "name": mirrored_name(route["name"]),
        "match": {**route["match"], "headers": headers},
        "route": {**route["route"], "request_mirror_policies": [policy]},
    }
    return [deepcopy(copy), route]


def _with_methods(mirror: Mirror, rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**deepcopy(match), "method": method}
        for match in rule.get("matches") or [{}]
        for method in mirror.methods
    ]


def gateway_mirrored(
    mirror: Mirror, rule: dict[str, Any], to: dict[str, Any]
) -> list[dict[str, Any]]:
    """HTTPRoute `rule` (to the mirrored arm) behind its copy for the mirror's methods, which
    mirrors to backendRef `to`."""
    numerator, denominator = percent_fraction(mirror.percent)
    amount: dict[str, Any] = (
        {"percent": numerator}
        if denominator == 100
        else {"fraction": {"numerator": numerator, "denominator": denominator}}
    )
    mirrored = {
        "matches": _with_methods(mirror, rule),
        "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": to, **amount}}],
        "backendRefs": rule["backendRefs"],
    }
    return [deepcopy(mirrored), rule]


def gateway_kept(mirror: Mirror, rule: dict[str, Any]) -> dict[str, Any]:
    """HTTPRoute header `rule` to an arm that is not mirrored.  A method match outranks header
    matches (Gateway API's precedence): the same matches with each method keep these requests
    from the mirrored default rule."""
    return deepcopy({**rule, "matches": [*rule["matches"], *_with_methods(mirror, rule)]})
