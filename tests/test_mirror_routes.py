"""The shadow phase's mirror in every rendering: the percentage as each mesh takes it, the
method-restricted copies of the routes to the stable arm (and of no other arm's), the objects
against their schemas (Istio: the CRD models; Gateway API: the HTTPRoute CRD's schema in
tests/schemas), Gateway API's precedence, and no mirror outside a running shadow phase.  A real
Envoy mirroring POSTs is in tests/test_envoy.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controlplane.rollout import RolloutState, RolloutStatus, route_plan
from controlplane.routing.plan import Mirror, Mode, RoutePlan, plan_routes
from controlplane.routing.render import (
    envoy_route_configuration,
    envoy_virtual_host,
    http_route,
    istio_http_routes,
    istio_virtual_service,
)
from controlplane.routing.render_mirror import MIRROR_PREFIX, percent_fraction
from controlplane.routing.routers import ManifestsRouter
from experiments import ExperimentSpec, load_spec
from experiments.errors import InvalidInputError
from experiments.localstack import model_variants
from tests.test_manifests import MANIFESTS, _strict_istio
from tests.test_routing import DOC, SPEC, envoy_validate

SCHEMAS = Path(__file__).resolve().parent / "schemas"
CLUSTERS = {"control": "v1", "treatment": "v2"}


def mirrored(percent: float = 10, methods: tuple[str, ...] = ("POST",)) -> RoutePlan:
    """SPEC (testers and group-b to the treatment, group-a to control) in a shadow phase."""
    return plan_routes(SPEC, {"control": 100}, mirror=Mirror("treatment", percent, methods))


def shadow_spec(**shadow: Any) -> ExperimentSpec:
    phases = [{"kind": "shadow", **shadow}, {"kind": "canary", "steps": [5, 50]}]
    return load_spec({"name": "shadow", "variants": model_variants(),
                      "rollout": {"service": "model", "phases": phases}})  # fmt: skip


def strict(schema: Any) -> Any:
    """The schema refusing fields it does not list, as the API server's strict field
    validation does (JSON Schema allows them by default)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k != "properties" else {p: strict(s) for p, s in v.items()}
           for k, v in schema.items()}  # fmt: skip
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


HTTP_ROUTE_SCHEMA = jsonschema.Draft202012Validator(
    strict(json.loads((SCHEMAS / "httproute-v1.3.0.json").read_text()))
)


@pytest.mark.parametrize(
    ("percent", "fraction"),
    [(10, (10, 100)), (100, (100, 100)), (12.5, (1250, 10_000)), (0.1, (10, 10_000)),
     (0.0001, (1, 1_000_000)), (33.333333, (333_333, 1_000_000)),
     (33.3333333, (333_333, 1_000_000))],  # the last rounded to millionths, as Istio does
)  # fmt: skip
def test_percent_as_a_fraction(percent: float, fraction: tuple[int, int]) -> None:
    assert percent_fraction(percent) == fraction


def test_a_mirror_needs_methods_and_the_default_route_on_one_other_arm() -> None:
    with pytest.raises(ValueError, match="needs methods"):
        Mirror("treatment", 10, ())
    with pytest.raises(ValueError, match="percent in"):
        Mirror("treatment", 0, ("GET",))
    with pytest.raises(ValueError, match="wholly on another arm"):
        plan_routes(SPEC, {"control": 95, "treatment": 5}, mirror=Mirror("treatment", 10, ("GET",)))
    with pytest.raises(ValueError, match="wholly on another arm"):
        plan_routes(SPEC, {"treatment": 100}, mirror=Mirror("treatment", 10, ("GET",)))
    with pytest.raises(ValueError, match="among the arms"):
        plan_routes(SPEC, {"control": 100}, mirror=Mirror("nobody", 10, ("GET",)))


def test_only_a_running_shadow_phase_mirrors() -> None:
    spec = shadow_spec(percent=12.5, methods=["POST", "PUT"])
    state = RolloutState(weights={"stable": 100, "candidate": 0})
    assert route_plan(spec, state).mirror == Mirror("candidate", 12.5, ("POST", "PUT"))
    state.status = RolloutStatus.PAUSED
    assert route_plan(spec, state).mirror is None
    state.status, state.phase, state.weights = RolloutStatus.RUNNING, 1, {"stable": 95,
                                                                          "candidate": 5}
    assert route_plan(spec, state).mirror is None  # the canary after it
    for status, weights in ((RolloutStatus.PROMOTED, {"candidate": 100}),
                            (RolloutStatus.ROLLED_BACK, {"stable": 100})):  # fmt: skip
        state.status, state.phase, state.weights = status, 0, weights
        plan = route_plan(spec, state)
        assert plan.mirror is None
        assert MIRROR_PREFIX not in json.dumps([istio_http_routes(plan), http_route(plan)])
    mirror = Mirror("treatment", 10, ("GET",))
    assert plan_routes(SPEC, {"treatment": 100}, Mode.PROMOTED, mirror).mirror is None
    assert plan_routes(SPEC, {"control": 100}, Mode.ROLLED_BACK, mirror).mirror is None


def test_istio_mirrors_the_stable_routes_for_each_method() -> None:
    plan = mirrored(12.5, ("GET", "POST"))
    http = istio_virtual_service(plan, "models")["spec"]["http"]
    assert [r["name"] for r in http] == [
        "abmesh-force-internal-testers",  # to the treatment: not mirrored
        "abmesh-mirror-arm-group-a", "abmesh-arm-group-a",
        "abmesh-arm-group-b",
        "abmesh-mirror-default", "abmesh-default",
    ]  # fmt: skip
    copy = http[1]
    group_a = {"x-user-group": {"exact": "group-a"}}
    assert copy["match"] == [{"headers": group_a, "method": {"exact": "GET"}},
                             {"headers": group_a, "method": {"exact": "POST"}}]  # fmt: skip
    assert copy["route"] == http[2]["route"]
    assert (copy["mirror"], copy["mirrorPercentage"]) == (
        {"host": "model-inference", "subset": "v2"}, {"value": 12.5},
    )  # fmt: skip
    assert http[4]["match"] == [{"method": {"exact": "GET"}}, {"method": {"exact": "POST"}}]
    assert [r["name"] for r in http if "mirror" in r] == [copy["name"], http[4]["name"]]
    # Without the copies it is the plan without a mirror, route for route.
    unmirrored = plan_routes(SPEC, {"control": 100})
    kept = [r for r in http if not r["name"].startswith(MIRROR_PREFIX)]
    assert kept == istio_http_routes(unmirrored)
    _strict_istio(istio_virtual_service(plan, "models"))


def test_envoy_mirrors_the_stable_routes_and_accepts_them(tmp_path: Path) -> None:
    routes = envoy_virtual_host(mirrored(10, ("POST",)), CLUSTERS)["routes"]
    assert [r["name"] for r in routes] == [
        "abmesh-force-internal-testers", "abmesh-mirror-arm-group-a", "abmesh-arm-group-a",
        "abmesh-arm-group-b", "abmesh-mirror-default", "abmesh-default",
    ]  # fmt: skip
    policy = {"cluster": "v2",
              "runtime_fraction": {"default_value": {"numerator": 10, "denominator": "HUNDRED"}},
              "disable_shadow_host_suffix_append": True}  # fmt: skip
    post = {"name": ":method", "string_match": {"exact": "POST"}}
    assert routes[4] == {
        "name": "abmesh-mirror-default",
        "match": {"prefix": "/", "headers": [post]},
        "route": {"cluster": "v1", "request_mirror_policies": [policy]},
    }
    assert routes[1]["match"]["headers"][-1] == post
    assert [r["name"] for r in routes if "request_mirror_policies" in r["route"]] == [
        "abmesh-mirror-arm-group-a", "abmesh-mirror-default"
    ]
    several = envoy_virtual_host(mirrored(12.5, ("GET", "POST")), CLUSTERS)["routes"][4]
    assert several["match"]["headers"][0]["string_match"] == {"safe_regex": {"regex": "GET|POST"}}
    assert several["route"]["request_mirror_policies"][0]["runtime_fraction"] == {
        "default_value": {"numerator": 1250, "denominator": "TEN_THOUSAND"}
    }
    for plan in (mirrored(10, ("POST",)), mirrored(12.5, ("GET", "POST")), mirrored(0.0001)):
        check = envoy_validate(envoy_route_configuration(plan, "abmesh", CLUSTERS), tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr


def gateway_pick(rules: list[dict[str, Any]], method: str, headers: dict[str, str]) -> int:
    """The rule Gateway API's precedence picks (every match here is the defaulted path prefix
    /): a method match first, then the most header matches, then the first rule."""
    candidates = []
    for index, rule in enumerate(rules):
        for match in rule.get("matches") or [{}]:
            if match.get("method", method) == method and all(
                headers.get(h["name"]) == h["value"] for h in match.get("headers", [])
            ):
                candidates.append(("method" in match, len(match.get("headers", [])), -index))
    return -max(candidates)[2]


@pytest.mark.parametrize("methods", [("POST",), ("GET", "POST", "PUT")])
def test_gateway_api_mirrors_only_what_goes_to_the_stable_arm(methods: tuple[str, ...]) -> None:
    rules = http_route(mirrored(10, methods), "models")["spec"]["rules"]
    mirror = {"type": "RequestMirror",
              "requestMirror": {"backendRef": {"name": "model-inference-v2", "port": 80},
                                "percent": 10}}  # fmt: skip
    cases = [  # method, headers, backend, mirrored
        ("POST", {}, "model-inference-v1", True),
        ("POST", {"x-user-group": "group-a"}, "model-inference-v1", True),
        ("GET", {"x-user-group": "group-a"}, "model-inference-v1", "GET" in methods),
        ("DELETE", {}, "model-inference-v1", False),
        ("POST", {"x-user-group": "group-b"}, "model-inference-v2", False),
        ("POST", {"x-user-group": "internal-testers"}, "model-inference-v2", False),
        ("GET", {"x-user-group": "group-b"}, "model-inference-v2", False),
    ]
    for method, headers, backend, copied in cases:
        rule = rules[gateway_pick(rules, method, headers)]
        assert [b["name"] for b in rule["backendRefs"]] == [backend], (method, headers)
        assert rule.get("filters", []) == ([mirror] if copied else []), (method, headers)


def test_http_routes_pass_the_crd_schema_and_its_limits() -> None:
    plans = [plan_routes(SPEC, {"control": 95, "treatment": 5}), mirrored(10),
             mirrored(12.5, ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))]
    (committed,) = yaml.safe_load_all((MANIFESTS / "gateway-api/model-rollout.yaml").read_text())
    for route in [committed, *(http_route(p, "models") for p in plans)]:
        errors = [e.message for e in HTTP_ROUTE_SCHEMA.iter_errors(route)]
        assert errors == []
    fraction = http_route(plans[2])["spec"]["rules"][1]["filters"][0]["requestMirror"]
    assert fraction["fraction"] == {"numerator": 1250, "denominator": 10_000}
    wrong = http_route(plans[1])
    wrong["spec"]["rules"][1]["filters"][0]["requestMirror"]["percent"] = 12.5
    wrong["spec"]["rules"][1]["matches"][0]["methd"] = "POST"
    assert len(list(HTTP_ROUTE_SCHEMA.iter_errors(wrong))) == 2  # the checks can fail
    testers = [{"header": {"name": "x-tester", "value": f"t{i}"}, "variant": "treatment"}
               for i in range(20)]  # fmt: skip
    many = load_spec({**DOC, "overrides": testers})
    http_route(plan_routes(many, {"control": 100}))  # 21 matches: fine without a mirror
    every = Mirror("treatment", 10, ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
    with pytest.raises(InvalidInputError, match=r"matches_per_rule 168 > 64, matches 184 > 128"):
        http_route(plan_routes(many, {"control": 100}, mirror=every))


def test_the_manifests_router_writes_the_mirror(tmp_path: Path) -> None:
    plan = mirrored(10, ("POST",))
    for kind in ("istio", "gateway-api"):
        router = ManifestsRouter(tmp_path / f"{kind}.yaml", kind=kind, namespace="models")
        assert router.set_routes(plan)
        text = (tmp_path / f"{kind}.yaml").read_text()
        assert "&id" not in text  # no YAML anchors: every copy is its own object
        documents = router.get_routes()
        if kind == "istio":
            assert documents[0] == istio_virtual_service(plan, "models")
            for document in documents:
                _strict_istio(document)
        else:
            assert documents == [http_route(plan, "models")]
            assert list(HTTP_ROUTE_SCHEMA.iter_errors(documents[0])) == []
        assert router.set_routes(plan_routes(SPEC, {"control": 100}))  # the phase ends
        assert MIRROR_PREFIX not in (tmp_path / f"{kind}.yaml").read_text()
        assert "RequestMirror" not in (tmp_path / f"{kind}.yaml").read_text()
