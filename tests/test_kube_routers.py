"""The istio and gateway-api routers through the real `kubernetes` client against a loopback
stub of the custom-objects API (tests/kube_stub.py): merge patches with the full route list
and resourceVersion, a retry on 409, no write when nothing changes, other routes kept."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from controlplane.routing.kube import GatewayApiRouter, IstioRouter
from controlplane.routing.plan import Mirror, Mode, plan_routes
from controlplane.routing.render import istio_http_routes
from controlplane.routing.routers import RouterError, make_router
from tests.kube_stub import KubeStub
from tests.test_routing import SPEC

ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
FOREIGN = {"name": "team-debug", "match": [{"uri": {"prefix": "/debug"}}],
           "route": [{"destination": {"host": "debug"}}]}  # fmt: skip


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub()
    yield s
    s.stop()


def api(stub: KubeStub) -> k8s.ApiClient:
    config = k8s.Configuration(host=stub.url)
    return k8s.ApiClient(config)


def virtual_service(http: list[dict[str, object]]) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "model-inference", "namespace": "models"},
        "spec": {"hosts": ["model-inference"], "http": http},
    }


def test_istio_router_patches_the_full_list_and_keeps_foreign_routes(stub: KubeStub) -> None:
    path = stub.put(*ISTIO, virtual_service([FOREIGN]))
    router = IstioRouter("model-inference", "models", api(stub))
    plan = plan_routes(SPEC, {"control": 95, "treatment": 5})
    assert router.set_routes(plan)
    stored = stub.objects[path]
    ours = istio_http_routes(plan)
    assert stored["spec"]["http"] == [FOREIGN, *ours]  # theirs first, our default last
    assert stored["spec"]["hosts"] == ["model-inference"]  # untouched
    assert stored["metadata"]["annotations"]["abmesh.io/experiment"] == "ranker-v2"
    assert len(stored["metadata"]["annotations"]["abmesh.io/routes-hash"]) == 16
    sent = stub.patches[-1]
    assert sent["content_type"] == "application/merge-patch+json"
    assert sent["body"]["metadata"]["resourceVersion"] == "101"
    assert not router.set_routes(plan)  # nothing to change: no PATCH
    assert len(stub.patches) == 1
    stub.objects[path]["spec"]["http"][-1]["route"][0]["weight"] = 50  # a hand edit
    assert router.set_routes(plan)  # is undone
    router.set_routes(plan_routes(SPEC, {"treatment": 100}, Mode.PROMOTED))
    assert [r["name"] for r in stub.objects[path]["spec"]["http"]] == [
        "team-debug",
        "abmesh-default",
    ]


def test_istio_router_retries_on_conflict_and_gives_up_when_it_never_ends(stub: KubeStub) -> None:
    path = stub.put(*ISTIO, virtual_service([]))
    router = IstioRouter("model-inference", "models", api(stub))
    stub.conflicts = 2
    assert router.set_routes(plan_routes(SPEC, {"control": 80, "treatment": 20}))
    assert len(stub.patches) == 3  # two conflicts, then the write
    assert stub.objects[path]["spec"]["http"][-1]["route"][1]["weight"] == 20
    stub.conflicts = 99
    with pytest.raises(RouterError, match="5 conflicts in a row"):
        router.set_routes(plan_routes(SPEC, {"control": 50, "treatment": 50}))


def test_a_foreign_catch_all_route_is_refused(stub: KubeStub) -> None:
    catch_all = {"route": [{"destination": {"host": "model-inference", "subset": "v1"}}]}
    stub.put(*ISTIO, virtual_service([FOREIGN, catch_all]))
    router = IstioRouter("model-inference", "models", api(stub))
    with pytest.raises(RouterError, match=r"route without a match .*\(unnamed\)"):
        router.set_routes(plan_routes(SPEC, {"control": 95, "treatment": 5}))
    assert stub.patches == []


def test_missing_or_foreign_objects_are_refused(stub: KubeStub) -> None:
    router = IstioRouter("model-inference", "models", api(stub))
    with pytest.raises(RouterError, match="does not exist: create it first"):
        router.set_routes(plan_routes(SPEC, {"control": 95, "treatment": 5}))
    vs = virtual_service([])
    vs["metadata"]["annotations"] = {"abmesh.io/experiment": "other"}  # type: ignore[index]
    stub.put(*ISTIO, vs)
    with pytest.raises(RouterError, match="managed for experiment 'other'"):
        router.set_routes(plan_routes(SPEC, {"control": 95, "treatment": 5}))


def test_gateway_api_router_writes_the_http_route(stub: KubeStub) -> None:
    parent = {"group": "", "kind": "Service", "name": "model-inference", "port": 80}
    path = stub.put(*GATEWAY, {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "model-inference", "namespace": "models"},
        "spec": {"parentRefs": [parent], "rules": []},
    })  # fmt: skip
    router = make_router(
        "gateway-api", name="model-inference", namespace="models", api_client=api(stub)
    )
    assert isinstance(router, GatewayApiRouter)
    assert router.set_routes(plan_routes(SPEC, {"control": 95, "treatment": 5}))
    rules = stub.objects[path]["spec"]["rules"]
    assert rules[-1]["backendRefs"] == [
        {"name": "model-inference-v1", "port": 80, "weight": 95},
        {"name": "model-inference-v2", "port": 80, "weight": 5},
    ]
    assert stub.objects[path]["spec"]["parentRefs"][0]["name"] == "model-inference"
    assert not router.set_routes(plan_routes(SPEC, {"control": 95, "treatment": 5}))


def test_istio_router_binds_the_virtual_service_to_the_targets_gateways(stub: KubeStub) -> None:
    path = stub.put(*ISTIO, virtual_service([]))
    gateways = ["istio-system/edge", "mesh"]
    router = IstioRouter("model-inference", "models", api(stub), gateways=gateways)
    plan = plan_routes(SPEC, {"control": 80, "treatment": 20})
    assert router.set_routes(plan)
    assert stub.objects[path]["spec"]["gateways"] == gateways
    assert not router.set_routes(plan)
    stub.objects[path]["spec"]["gateways"] = ["mesh"]  # edited by hand: put right
    assert router.set_routes(plan)
    assert stub.objects[path]["spec"]["gateways"] == gateways
    plain = IstioRouter("model-inference", "models", api(stub))  # no gateways in the target
    plain.set_routes(plan)
    assert stub.objects[path]["spec"]["gateways"] == gateways  # the object's own, left alone


def test_both_routers_write_the_shadow_phases_mirror_and_drop_it_after(stub: KubeStub) -> None:
    vs_path = stub.put(*ISTIO, virtual_service([FOREIGN]))
    route_path = stub.put(*GATEWAY, {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "model-inference", "namespace": "models"},
        "spec": {"parentRefs": [], "rules": []},
    })  # fmt: skip
    istio = IstioRouter("model-inference", "models", api(stub))
    gateway = GatewayApiRouter("model-inference", "models", api(stub))
    shadow = plan_routes(SPEC, {"control": 100}, mirror=Mirror("treatment", 10, ("POST",)))
    assert (istio.set_routes(shadow), gateway.set_routes(shadow)) == (True, True)
    http = stub.objects[vs_path]["spec"]["http"]
    assert [r["name"] for r in http] == [
        "team-debug", "abmesh-force-internal-testers", "abmesh-mirror-arm-group-a",
        "abmesh-arm-group-a", "abmesh-arm-group-b", "abmesh-mirror-default", "abmesh-default",
    ]  # fmt: skip
    assert http[-2]["mirrorPercentage"] == {"value": 10}
    rules = stub.objects[route_path]["spec"]["rules"]
    mirrors = [r["filters"][0]["requestMirror"] for r in rules if "filters" in r]
    assert [m["percent"] for m in mirrors] == [10, 10]
    assert (istio.set_routes(shadow), gateway.set_routes(shadow)) == (False, False)
    after = plan_routes(SPEC, {"control": 95, "treatment": 5})  # the canary that follows
    assert (istio.set_routes(after), gateway.set_routes(after)) == (True, True)
    assert "mirror" not in json.dumps(stub.objects[vs_path]["spec"])
    assert "RequestMirror" not in json.dumps(stub.objects[route_path]["spec"])
