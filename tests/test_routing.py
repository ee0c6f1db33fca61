"""Route plans and their renderings: the rule order, the weights, what the routers own, the
rollout section of the spec; the Envoy rendering is checked by Envoy itself (`--mode
validate`), the manifests by reading them back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from controlplane.routing.plan import Mode, plan_routes
from controlplane.routing.render import (
    envoy_route_configuration,
    http_route,
    istio_destination_rules,
    istio_virtual_service,
)
from controlplane.routing.routers import ManifestsRouter, make_router
from experiments import SpecError, load_spec
from experiments.errors import InvalidInputError
from experiments.localstack import ROUTER, cluster, envoy_binary

DOC: dict[str, Any] = {
    "name": "ranker-v2",
    "variants": [
        {"key": "control", "header_value": "group-a", "weight": 95,
         "destination": {"host": "model-inference", "subset": "v1"}},
        {"key": "treatment", "header_value": "group-b", "weight": 5,
         "destination": {"host": "model-inference", "subset": "v2"}},
    ],
    "overrides": [{"header": {"name": "x-user-group", "value": "internal-testers"},
                   "variant": "treatment"}],
    "metrics": {"primary": {"name": "click", "kind": "conversion"}},
    "rollout": {"service": "model-inference"},
}  # fmt: skip
SPEC = load_spec(DOC)


def test_the_virtual_service_puts_header_rules_before_the_weighted_route() -> None:
    vs = istio_virtual_service(plan_routes(SPEC, {"control": 95, "treatment": 5}), "models")
    assert vs["metadata"] == {
        "name": "model-inference",
        "namespace": "models",
        "annotations": {"abmesh.io/experiment": "ranker-v2"},
    }
    http = vs["spec"]["http"]
    assert [r["name"] for r in http] == [
        "abmesh-force-internal-testers",
        "abmesh-arm-group-a",
        "abmesh-arm-group-b",
        "abmesh-default",
    ]  # fmt: skip
    assert http[0]["match"] == [{"headers": {"x-user-group": {"exact": "internal-testers"}}}]
    assert http[0]["route"] == [{"destination": {"host": "model-inference", "subset": "v2"}}]
    assert http[-1]["route"] == [
        {"destination": {"host": "model-inference", "subset": "v1"}, "weight": 95},
        {"destination": {"host": "model-inference", "subset": "v2"}, "weight": 5},
    ]
    rules = istio_destination_rules(plan_routes(SPEC, {"control": 95, "treatment": 5}))
    assert rules[0]["spec"]["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]


def test_promotion_drops_header_rules_and_rollback_points_them_at_stable() -> None:
    promoted = plan_routes(SPEC, {"treatment": 100}, Mode.PROMOTED)
    assert promoted.rules == ()
    assert istio_virtual_service(promoted)["spec"]["http"][-1]["route"] == [
        {"destination": {"host": "model-inference", "subset": "v2"}, "weight": 100}
    ]
    back = plan_routes(SPEC, {"control": 50, "treatment": 50}, Mode.ROLLED_BACK)
    assert {r.variant for r in back.rules} == {"control"}
    assert dict(back.weights) == {"control": 100, "treatment": 0}
    with pytest.raises(ValueError, match="sum to 100"):
        plan_routes(SPEC, {"control": 90, "treatment": 5})


def test_the_http_route_carries_the_same_plan() -> None:
    route = http_route(plan_routes(SPEC, {"control": 80, "treatment": 20}), "models")
    assert route["spec"]["parentRefs"] == [
        {"group": "", "kind": "Service", "name": "model-inference", "port": 80}
    ]
    rules = route["spec"]["rules"]
    header = {"type": "Exact", "name": "x-user-group"}
    # header rules to one destination share a rule: testers and group-b both go to v2
    assert rules[0]["matches"] == [
        {"headers": [header | {"value": "internal-testers"}]},
        {"headers": [header | {"value": "group-b"}]},
    ]
    assert rules[0]["backendRefs"] == [{"name": "model-inference-v2", "port": 80}]
    assert rules[1]["matches"] == [{"headers": [header | {"value": "group-a"}]}]
    assert rules[-1]["backendRefs"] == [
        {"name": "model-inference-v1", "port": 80, "weight": 80},
        {"name": "model-inference-v2", "port": 80, "weight": 20},
    ]


def envoy_validate(routes: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a listener serving `routes`, with clusters v1 and v2."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "front",
        "route_config": routes,
        "http_filters": [ROUTER],
    }
    config = {
        "static_resources": {
            "clusters": [cluster("v1", 1), cluster("v2", 2)],
            "listeners": [{
                "name": "front",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager,
                }]}],
            }],
        }
    }  # fmt: skip
    path = workdir / "envoy.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_envoy_accepts_the_rendered_routes(tmp_path: Path) -> None:
    clusters = {"control": "v1", "treatment": "v2"}
    for weights in ({"control": 95, "treatment": 5}, {"treatment": 100}):
        routes = envoy_route_configuration(plan_routes(SPEC, weights), "abmesh", clusters)
        check = envoy_validate(routes, tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
    unknown = {"control": "v1", "treatment": "v3"}
    routes = envoy_route_configuration(
        plan_routes(SPEC, {"control": 95, "treatment": 5}), "r", unknown
    )
    assert envoy_validate(routes, tmp_path).returncode != 0  # validate_clusters refuses it


def test_the_manifests_router_writes_only_changes(tmp_path: Path) -> None:
    router = ManifestsRouter(tmp_path / "out" / "ranker-v2.yaml", namespace="models")
    plan = plan_routes(SPEC, {"control": 95, "treatment": 5})
    assert router.set_routes(plan)
    assert not router.set_routes(plan)  # no-op
    written = list(yaml.safe_load_all((tmp_path / "out" / "ranker-v2.yaml").read_text()))
    assert written == [
        istio_virtual_service(plan, "models"),
        *istio_destination_rules(plan, "models"),
    ]
    assert router.get_routes() == written
    assert router.set_routes(plan_routes(SPEC, {"control": 80, "treatment": 20}))
    gateway = ManifestsRouter(tmp_path / "gw" / "ranker-v2.yaml", kind="gateway-api")
    gateway.set_routes(plan)
    assert [d["kind"] for d in gateway.get_routes()] == ["HTTPRoute"]


def test_unknown_routers_and_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInputError,
        match="unknown router 'linkerd2'; known: envoy, gateway-api, inference-pool, istio,"
        " kserve, manifests, seldon",
    ):
        make_router("linkerd2")
    with pytest.raises(InvalidInputError, match="router 'manifests'"):
        make_router("manifests", bogus=1)
    with pytest.raises(InvalidInputError, match="kind must be istio or gateway-api"):
        make_router("manifests", path=tmp_path / "x.yaml", kind="consul")


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"phases": [{"kind": "canary", "steps": [20, 5]}]}, "steps must increase"),
        ({"phases": [{"kind": "canary", "steps": [0, 50]}]}, "each in 1..99"),
        ({"phases": [{"kind": "promote"}, {"kind": "ab"}]}, "'promote' can only be the last"),
        ({"phases": [{"kind": "bluegreen"}]}, "does not match any of the expected tags"),
        ({"candidate": "control"}, "other than the control"),
        ({"guardrails": [{"name": "p99", "query": "p99_latency_ms", "limit": "fast"}]}, "limit"),
        ({"phases": [{"kind": "ab", "split": 100}]}, "split"),
    ],
)
def test_the_rollout_section_is_validated(rollout: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec({**DOC, "rollout": rollout})


def test_the_rollout_defaults_follow_the_design() -> None:
    rollout = load_spec({**DOC, "rollout": {}}).rollout
    assert rollout is not None
    assert [p.kind for p in rollout.phases] == ["canary", "ab", "promote"]
    assert rollout.phases[0].steps == (5, 20, 50)  # type: ignore[union-attr]
    assert [(g.name, g.kind.value, g.limit) for g in rollout.guardrails] == [
        ("errors_vs_stable", "relative", None), ("latency_vs_stable", "relative", None),
        ("p99_latency_ms", "ceiling", 1000), ("error_ratio", "ceiling", 0.05),
    ]  # fmt: skip
    assert [(g.alpha, g.min_sample) for g in rollout.guardrails] == [(0.01, 100)] * 4
    assert [g.tolerance for g in rollout.guardrails[:2]] == [0.2, 0.2]
    assert [g.ceiling_share for g in rollout.guardrails[2:]] == [0.01, 0.05]


def test_rollouts_refuse_sticky_specs_tests_without_metrics_and_unknown_queries() -> None:
    from controlplane.metrics.prometheus import TEMPLATES
    from experiments.spec_rollout import Query

    with pytest.raises(SpecError, match="sticky: true"):
        load_spec({**DOC, "sticky": True})
    with pytest.raises(SpecError, match="needs metrics"):
        load_spec({**DOC, "metrics": None, "rollout": {"phases": [{"kind": "ab"}]}})
    with pytest.raises(SpecError, match="query"):
        load_spec({**DOC, "rollout": {"guardrails": [{"name": "x", "query": "p95", "limit": 1}]}})
    for mesh in TEMPLATES.values():
        assert set(mesh) == set(get_args(Query))
