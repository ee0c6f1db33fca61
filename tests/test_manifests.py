"""The Kubernetes manifests, validated offline: `kubectl kustomize` builds every overlay, core
objects pass the Kubernetes OpenAPI schemas (kubernetes-validate, strict), Istio objects pass
the models generated from Istio's CRDs with nothing dropped, and the checks no schema makes:
weights, subsets, header names, the routers' own rendering, `promtool` on the rules and
`envoy --mode validate` on the Envoy form of the same plan."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.istio.networking import v1 as istio_net
from cloudcoil.models.istio.networking import v1alpha3
from cloudcoil.models.istio.security import v1 as istio_sec

from assignment.auth import Role
from controlplane.rollout import split
from controlplane.routing.plan import plan_routes
from controlplane.routing.render import (
    envoy_route_configuration,
    http_route,
    istio_destination_rules,
    istio_virtual_service,
)
from experiments import EXAMPLES_DIR, load_spec
from tests.test_routing import envoy_validate

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
K8S_VERSION = "1.30"
SPEC = load_spec(EXAMPLES_DIR / "model-rollout.yaml")
ISTIO_MODELS: dict[str, Any] = {
    "VirtualService": istio_net.VirtualService,
    "DestinationRule": istio_net.DestinationRule,
    "AuthorizationPolicy": istio_sec.AuthorizationPolicy,
    "RequestAuthentication": istio_sec.RequestAuthentication,
    "EnvoyFilter": v1alpha3.EnvoyFilter,
}
CRDS = {"monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1"}


def kustomize(directory: str) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / directory)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def objects(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / path).read_text()) if d]


pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/production"])
def test_overlays_build_and_core_objects_pass_the_kubernetes_schemas(overlay: str) -> None:
    docs = kustomize(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= kinds  # fmt: skip
    for doc in docs:
        if doc["apiVersion"] in CRDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def assert_locked_down(deployment: dict[str, Any]) -> None:
    """Non-root pod; every container read-only, without privilege escalation or capabilities
    (also the Helm chart's check, tests/test_helm_chart.py)."""
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, False)
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_containers_run_locked_down() -> None:
    for overlay in ("overlays/dev", "overlays/production"):
        for doc in kustomize(overlay):
            if doc["kind"] == "Deployment":
                assert_locked_down(doc)


def test_probes_and_controller_rights() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in kustomize("overlays/production")}
    svc = docs[("Deployment", "abmesh")]["spec"]["template"]["spec"]["containers"][0]
    assert svc["readinessProbe"]["httpGet"]["path"] == "/readyz"  # not ?strict=true: see the yaml
    assert svc["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert docs[("Deployment", "abmesh")]["spec"]["replicas"] == 3
    role = docs[("Role", "abmesh-controller")]
    assert role["metadata"]["namespace"] == "models"
    verbs = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert ("virtualservices", "patch") in verbs
    assert all(v in ("get", "list", "watch", "patch") for _, v in verbs)
    assert ("destinationrules", "patch") not in verbs  # the router never writes them
    binding = docs[("RoleBinding", "abmesh-controller")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "abmesh-controller", "namespace": "abmesh"}
    ]
    dev = {(d["kind"], d["metadata"]["name"]) for d in kustomize("overlays/dev")}
    assert ("Deployment", "abmesh-redis") in dev
    assert ("Deployment", "abmesh-redis") not in docs


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/production"])
def test_tokens_come_from_a_secret_and_nothing_opens_the_data_api(overlay: str) -> None:
    docs = kustomize(overlay)
    settings = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    for container in (c for pod in pods for c in pod["containers"]):
        settings.append({e["name"]: e.get("value") for e in container.get("env", [])})
    for names in settings:
        assert "ABMESH_INSECURE" not in names
        assert not {role.variable for role in Role} & set(names)  # values, not files
    (pod,) = (
        d["spec"]["template"]["spec"]
        for d in docs
        if (d["kind"], d["metadata"]["name"]) == ("Deployment", "abmesh")
    )
    service = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tokens"]["secret"] == {"secretName": "abmesh-tokens"}
    (mount,) = (m for m in service["volumeMounts"] if m["name"] == "tokens")
    assert mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in service["env"] if "value" in e}
    for role in Role:
        assert env[f"{role.variable}_FILE"] == f"{mount['mountPath']}/{role.value}"
    templates = objects("integrations/argo-analysistemplate.yaml")
    for template in templates:  # /decision is a read: the reader token, not the admin's
        (arg,) = (a for a in template["spec"]["args"] if "valueFrom" in a)
        assert arg["valueFrom"]["secretKeyRef"] == {"name": "abmesh-reader", "key": "token"}


def _strict_istio(doc: dict[str, Any]) -> None:
    """Valid against the CRD model, and nothing in it unknown to the model (a round trip
    through the model keeps every field)."""
    model = ISTIO_MODELS[doc["kind"]].model_validate(doc)
    again = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert again == doc, f"{doc['kind']} {doc['metadata']['name']}: fields the schema does not know"


def test_istio_objects_pass_the_istio_crd_models() -> None:
    docs = kustomize("istio")
    assert {d["kind"] for d in docs} == set(ISTIO_MODELS)
    for doc in docs:
        _strict_istio(doc)


def test_the_virtual_service_is_the_routers_rendering_and_is_consistent() -> None:
    docs = objects("istio/model-rollout.yaml")
    plan = plan_routes(SPEC, split(SPEC, 5))
    assert SPEC.rollout is not None
    gateways = SPEC.rollout.target.gateways
    assert gateways == ("istio-system/model-gateway", "mesh")  # the ingress, and sidecars
    assert docs == [istio_virtual_service(plan, "models", gateways=gateways),
                    *istio_destination_rules(plan, "models")]  # fmt: skip
    vs, rules = docs[0], docs[1:]
    subsets = {(r["spec"]["host"], s["name"]) for r in rules for s in r["spec"]["subsets"]}
    headers = {SPEC.header} | {o.header.name for o in SPEC.overrides if o.header}
    for route in vs["spec"]["http"]:
        weights = [d.get("weight") for d in route["route"]]
        if len(weights) > 1:
            assert all(isinstance(w, int) for w in weights)
            assert sum(weights) == 100
        for d in route["route"]:
            assert (d["destination"]["host"], d["destination"]["subset"]) in subsets
        for match in route.get("match", []):
            assert set(match["headers"]) <= headers
    assert [d["weight"] for d in vs["spec"]["http"][-1]["route"]] == [95, 5]


def test_the_http_route_is_the_same_plan() -> None:
    (route,) = objects("gateway-api/model-rollout.yaml")
    assert route == http_route(plan_routes(SPEC, split(SPEC, 5)), "models")
    assert sum(b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]) == 100


def test_the_envoy_form_of_the_plan_validates(tmp_path: Path) -> None:
    plan = plan_routes(SPEC, split(SPEC, 5))
    routes = envoy_route_configuration(plan, "abmesh", {"stable": "v1", "candidate": "v2"})
    check = envoy_validate(routes, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_the_prometheus_rules_check_and_pass_their_unit_test(tmp_path: Path) -> None:
    (rule,) = objects("monitoring/prometheusrule.yaml")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(MANIFESTS / "monitoring" / "rules.test.yaml", tmp_path)
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules.test.yaml"]):
        run = subprocess.run(
            ["promtool", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
    (monitor,) = objects("monitoring/servicemonitor.yaml")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_a_broken_object_is_caught() -> None:
    """The checks above can fail: a misspelt field and an unknown Istio field are refused."""
    bad = kustomize("overlays/dev")[0] | {"spce": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    vs = objects("istio/model-rollout.yaml")[0]
    vs["spec"]["http"][0]["retrys"] = {"attempts": 3}
    with pytest.raises(AssertionError, match="fields the schema does not know"):
        _strict_istio(vs)
