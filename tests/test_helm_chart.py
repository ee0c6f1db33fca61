"""The Helm chart (manifests/helm/abmesh), checked offline like the kustomize manifests
(tests/test_manifests.py, whose helpers it reuses): `helm lint --strict`; `helm template` with
the defaults and with each option set renders core objects that pass the Kubernetes schemas in
strict mode; the controller gets exactly the rights its router and source need; every
container is probed, bounded and locked down; bad values are refused naming the field; and the
defaults render the kustomize base's args, ports, env, probes and settings, so the two do not
drift."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from assignment.auth import Role
from tests.test_manifests import (
    CRDS,
    K8S_VERSION,
    MANIFESTS,
    assert_locked_down,
    kustomize,
    objects,
)

CHART = MANIFESTS / "helm" / "abmesh"
RELEASE, NAMESPACE = "abmesh", "abmesh"
Rights = set[tuple[str, str, str, str]]  # (namespace, or "*" cluster-wide; group, resource, verb)

# No skip when helm is missing: it comes with the dev extra (helm-binary), and CI must run
# these; a missing binary fails them, saying so.

EXTERNAL_STORE = {"redis": {"enabled": False, "url": "redis://redis-master.redis.svc:6379/0"}}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis": EXTERNAL_STORE,
    "secrets": {
        "redis": {
            "enabled": False,
            "urlSecret": {"name": "store", "key": "url"},
            "passwordSecret": {"name": "store", "key": "password"},
        },
        "assignment": {"apiKeySecret": {"name": "assign", "key": "api-key"}},
        "tokens": {
            "secretName": "roles",
            "values": {"reader": "r1", "writer": "w1", "admin": "a1"},
            "keys": {"reader": "read", "writer": "write", "admin": "root"},
        },
    },
    "kubernetes": {"controller": {"source": "kubernetes", "extraRouteNamespaces": ["ml"]}},
    "kubernetes-cluster-wide": {"controller": {"source": "kubernetes", "clusterWide": True}},
    "monitors": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "one-replica": {
        "assignment": {"replicas": 1, "autoscaling": {"enabled": False}},
        "controller": {"replicas": 1},
    },
    **{
        f"router-{r}": {"controller": {"router": r}}
        for r in ("istio", "gateway-api", "kserve", "seldon", "inference-pool")
    },
}

ROUTER_RIGHTS = {
    "istio": {("networking.istio.io", "virtualservices", v) for v in ("get", "patch")},
    "gateway-api": {("gateway.networking.k8s.io", "httproutes", v) for v in ("get", "patch")},
    "kserve": {("serving.kserve.io", "inferenceservices", v) for v in ("get", "patch")},
    "seldon": {("mlops.seldon.io", "experiments", v) for v in ("get", "create", "patch")},
    "inference-pool": {("gateway.networking.k8s.io", "httproutes", v) for v in ("get", "patch")}
    | {("inference.networking.k8s.io", "inferencepools", "get")},
}
# What controlplane/kube calls, no more: patch on experiments is the rollback finalizer
# (mirror.py), the status is only ever merge-patched, and Leases are read, listed, created,
# replaced and deleted (leases.py), never watched or patched.
EXPERIMENT_RIGHTS = {("abmesh.io", "experiments", v) for v in ("get", "list", "watch", "patch")} | {
    ("abmesh.io", "experiments/status", "patch")
}
LEASE_RIGHTS = {
    ("coordination.k8s.io", "leases", v) for v in ("get", "list", "create", "update", "delete")
}


def helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["helm", *args, str(CHART), "--values", "-"],
        input=json.dumps(values or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    run = helm("template", RELEASE, "--namespace", NAMESPACE, "--kube-version", K8S_VERSION,
               values=values)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def by_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    pod = by_name(docs)[("Deployment", deployment)]["spec"]["template"]["spec"]
    first: dict[str, Any] = pod["containers"][0]
    return first


def rights(docs: list[dict[str, Any]]) -> Rights:
    """Every right granted to anyone, after checking that each role is bound to the controller
    alone and nothing else is bound."""
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    bindings = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
    }
    assert len(bindings) == len(roles)
    granted: Rights = set()
    for role in roles:
        meta = role["metadata"]
        binding = bindings[(role["kind"] + "Binding", meta.get("namespace"), meta["name"])]
        assert binding["roleRef"]["kind"] == role["kind"]
        assert binding["roleRef"]["name"] == meta["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "abmesh-controller", "namespace": NAMESPACE}
        ]
        scope = meta.get("namespace", "*")
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, URLs
            granted |= {(scope, g, r, v) for g in rule["apiGroups"]
                        for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    return granted


def scoped(namespace: str, grants: set[tuple[str, str, str]]) -> Rights:
    return {(namespace, *g) for g in grants}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict_and_every_core_object_passes_the_kubernetes_schemas(name: str) -> None:
    lint = helm("lint", "--strict", values=VALUE_SETS[name])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(VALUE_SETS[name])
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["apiVersion"] in CRDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_container_is_probed_bounded_locked_down_and_holds_no_token(name: str) -> None:
    docs = render(VALUE_SETS[name])
    forbidden = {role.variable for role in Role} | {"ABMESH_INSECURE"}  # values, not files
    for settings in (d["data"] for d in docs if d["kind"] == "ConfigMap"):
        assert not set(settings) & forbidden
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        assert_locked_down(deployment)
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert c["readinessProbe"], c["name"]
            assert c["livenessProbe"], c["name"]
            assert c["resources"]["requests"], c["name"]
            assert c["resources"]["limits"]["memory"], c["name"]
            assert not {e["name"] for e in c.get("env", [])} & forbidden


ISTIO = ROUTER_RIGHTS["istio"]
RBAC_CASES = [
    pytest.param({}, scoped("models", ISTIO), id="defaults"),
    *[
        pytest.param({"controller": {"router": r}}, scoped("models", ROUTER_RIGHTS[r]), id=r)
        for r in ROUTER_RIGHTS
    ],
    pytest.param(
        {"controller": {"source": "kubernetes", "extraRouteNamespaces": ["ml"]}},
        scoped("models", ISTIO)
        | scoped("ml", ISTIO)
        | scoped(NAMESPACE, EXPERIMENT_RIGHTS | LEASE_RIGHTS),
        id="kubernetes-source",
    ),
    pytest.param(
        {"controller": {"source": "kubernetes", "watchNamespace": "teams"}},
        scoped("models", ISTIO)
        | scoped("teams", EXPERIMENT_RIGHTS)
        | scoped(NAMESPACE, LEASE_RIGHTS),
        id="kubernetes-source-elsewhere",
    ),
    pytest.param(
        {"controller": {"source": "kubernetes", "clusterWide": True, "router": "seldon"}},
        scoped("*", ROUTER_RIGHTS["seldon"] | EXPERIMENT_RIGHTS) | scoped(NAMESPACE, LEASE_RIGHTS),
        id="kubernetes-source-cluster-wide",
    ),
    pytest.param(
        {"controller": {"clusterWide": True}}, scoped("*", ISTIO), id="store-source-cluster-wide"
    ),
    pytest.param({"controller": {"enabled": False}}, set(), id="no-controller"),
]


@pytest.mark.parametrize(("values", "expected"), RBAC_CASES)
def test_the_controller_gets_exactly_the_rights_it_needs(
    values: dict[str, Any], expected: Rights
) -> None:
    assert rights(render(values)) == expected


def flags(docs: list[dict[str, Any]]) -> dict[str, str]:
    args = container(docs, "abmesh-controller")["args"]
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--"))


@pytest.mark.parametrize(
    "values",
    [
        {"controller": {"source": "kubernetes"}},
        {"controller": {"source": "kubernetes", "watchNamespace": "teams", "namespace": "ml"}},
        {"controller": {"source": "kubernetes", "clusterWide": True}},
    ],
    ids=["release-namespace", "other-namespaces", "cluster-wide"],
)
def test_the_kubernetes_source_is_told_the_namespaces_it_has_rights_in(
    values: dict[str, Any],
) -> None:
    assert "source" not in flags(render())  # the store is the default source
    docs = render(values)
    flag = flags(docs)
    assert flag["source"] == "kubernetes"
    granted = rights(docs)
    for namespace, needed in (
        (flag["namespace"], ISTIO),
        (flag["watch-namespace"], EXPERIMENT_RIGHTS),
        (flag["lease-namespace"], LEASE_RIGHTS),
    ):
        held = {(g, r, v) for s, g, r, v in granted if s in (namespace, "*")}
        assert needed <= held, namespace


def test_the_assignment_service_has_no_kubernetes_token() -> None:
    docs = by_name(render({"controller": {"source": "kubernetes", "clusterWide": True}}))
    assert docs[("ServiceAccount", "abmesh")]["automountServiceAccountToken"] is False
    pod = docs[("Deployment", "abmesh")]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("abmesh", False)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"assignment": {"replicas": "two"}},
            "assignment.replicas: Invalid type. Expected: integer, given: string",
        ),
        ({"replica": 2}, "Additional property replica is not allowed"),
        ({"controller": {"replicas": 1.5}}, "controller.replicas: Invalid type"),
        ({"controller": {"router": "linkerd"}}, "controller.router must be one of"),
        ({"controller": {"source": "crd"}}, "controller.source must be one of"),
        ({"serviceMonitor": {"enabled": "yes"}}, "serviceMonitor.enabled: Invalid type"),
        ({"settings": {"log_level": "debug"}}, 'settings: Property name of "log_level"'),
        ({"settings": {"ABMESH_INSECURE": "1"}}, "settings.ABMESH_INSECURE: not a ConfigMap"),
        ({"settings": {"ABMESH_ADMIN_TOKEN": "x"}}, "settings.ABMESH_ADMIN_TOKEN: not a"),
        (
            {"controller": {"clusterWide": True, "watchNamespace": "teams"}},
            "controller.watchNamespace: with controller.clusterWide",
        ),
        ({"redis": {"url": "redis://other:6379/0"}}, "redis: set exactly one of"),
        ({"redis": {"enabled": False}}, "redis: set exactly one of"),
        ({"redis": {"passwordSecret": {"name": "p", "key": "k"}}}, "redis.passwordSecret is"),
        ({"tokens": {"values": {"reader": "r1"}}}, "tokens.values: give all three"),
        (
            {"tokens": {"values": {"reader": "t", "writer": "t", "admin": "a"}}},
            "tokens.values: each role needs its own token",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_field(values: dict[str, Any], message: str) -> None:
    run = helm("template", RELEASE, values=values)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr


def test_tokens_come_from_a_secret_the_chart_makes_only_when_given_every_token() -> None:
    assert not [d for d in render() if d["kind"] == "Secret"]
    docs = render(VALUE_SETS["secrets"])
    (secret,) = (d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == "roles"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"read": "r1", "write": "w1", "root": "a1"}
    pod = by_name(docs)[("Deployment", "abmesh")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tokens"]["secret"]["secretName"] == "roles"
    files = {i["key"]: i["path"] for i in volumes["tokens"]["secret"]["items"]}
    assert files == {"read": "reader", "write": "writer", "root": "admin"}
    service = pod["containers"][0]
    (mount,) = (m for m in service["volumeMounts"] if m["name"] == "tokens")
    env = {e["name"]: e.get("value") for e in service["env"]}
    for role in Role:
        assert env[f"{role.variable}_FILE"] == f"{mount['mountPath']}/{role.value}"


def test_the_store_is_the_release_redis_an_existing_url_or_a_secret() -> None:
    docs = by_name(render())
    redis_port = docs[("Service", "abmesh-redis")]["spec"]["ports"][0]["port"]
    store = docs[("ConfigMap", "abmesh-config")]["data"]["ABMESH_STORE"]
    assert store.startswith(f"redis://abmesh-redis:{redis_port}/")
    external = by_name(render(EXTERNAL_STORE))
    assert ("Deployment", "abmesh-redis") not in external
    url = EXTERNAL_STORE["redis"]["url"]
    assert external[("ConfigMap", "abmesh-config")]["data"]["ABMESH_STORE"] == url
    secret = render(VALUE_SETS["secrets"])
    assert "ABMESH_STORE" not in by_name(secret)[("ConfigMap", "abmesh-config")]["data"]
    for deployment in ("abmesh", "abmesh-controller"):
        c = container(secret, deployment)
        env = {e["name"]: e for e in c["env"]}
        assert env["ABMESH_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "store", "key": "url"}
        (mount,) = (m for m in c["volumeMounts"] if m["name"] == "store-password")
        assert env["ABMESH_STORE_PASSWORD_FILE"]["value"] == f"{mount['mountPath']}/password"


def test_disruption_budgets_only_where_more_than_one_replica_runs() -> None:
    budgets = {d["metadata"]["name"] for d in render() if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {"abmesh", "abmesh-controller"}
    single = render(VALUE_SETS["one-replica"])
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    assert not [d for d in single if d["kind"] == "HorizontalPodAutoscaler"]
    forced = {"podDisruptionBudget": {"enabled": True, "minAvailable": 0}}
    one_forced = render({"assignment": {"replicas": 1, "autoscaling": {"enabled": False},
                                        **forced}, "controller": {"replicas": 1}})  # fmt: skip
    assert [d["metadata"]["name"] for d in one_forced if d["kind"] == "PodDisruptionBudget"] == [
        "abmesh"
    ]


def test_monitors_only_when_enabled_and_as_the_monitoring_manifests() -> None:
    assert not [d for d in render() if d["apiVersion"] == "monitoring.coreos.com/v1"]
    docs = by_name(render(VALUE_SETS["monitors"]))
    monitor, pods = docs[("ServiceMonitor", "abmesh")], docs[("PodMonitor", "abmesh-controller")]
    (kustomized,) = objects("monitoring/servicemonitor.yaml")
    (kustomized_pods,) = objects("monitoring/podmonitor.yaml")
    assert monitor["spec"]["endpoints"] == kustomized["spec"]["endpoints"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert pods["spec"]["podMetricsEndpoints"] == kustomized_pods["spec"]["podMetricsEndpoints"]
    service = docs[("Service", "abmesh")]
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_every_file_in_crds_is_a_custom_resource_definition() -> None:
    for path in sorted((CHART / "crds").glob("*")):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            assert (doc["apiVersion"], doc["kind"]) == (
                "apiextensions.k8s.io/v1", "CustomResourceDefinition"), path  # fmt: skip
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


CONTAINER_FIELDS = ("args", "ports", "env", "envFrom", "readinessProbe", "livenessProbe",
                    "resources", "securityContext")  # fmt: skip


@pytest.mark.parametrize(
    ("deployment", "overlay"),
    [("abmesh", "base"), ("abmesh-controller", "base"), ("abmesh-redis", "overlays/dev")],
)
def test_the_defaults_render_what_the_kustomize_manifests_do(deployment: str, overlay: str) -> None:
    chart, kustomized = by_name(render()), by_name(kustomize(overlay))
    ours, theirs = (
        docs[("Deployment", deployment)]["spec"]["template"]["spec"] for docs in (chart, kustomized)
    )
    assert ours["securityContext"] == theirs["securityContext"]
    if theirs.get("automountServiceAccountToken") is False:
        assert ours["automountServiceAccountToken"] is False
    mine, base = ours["containers"][0], theirs["containers"][0]
    for field in CONTAINER_FIELDS:
        if field in base:
            assert mine[field] == base[field], f"{deployment}: {field} drifted from {overlay}"
    mounts = {m["mountPath"] for m in base.get("volumeMounts", [])}
    assert {m["mountPath"] for m in mine.get("volumeMounts", [])} == mounts
    hpa = kustomized.get(("HorizontalPodAutoscaler", deployment))
    if hpa is not None:  # the autoscaler owns the count
        assert chart[("HorizontalPodAutoscaler", deployment)]["spec"] == hpa["spec"]
    else:
        replicas = kustomized[("Deployment", deployment)]["spec"]["replicas"]
        assert chart[("Deployment", deployment)]["spec"]["replicas"] == replicas
    budget = kustomized.get(("PodDisruptionBudget", deployment))
    if budget is not None:
        ours_budget = chart[("PodDisruptionBudget", deployment)]["spec"]
        assert ours_budget["minAvailable"] == budget["spec"]["minAvailable"]
    if overlay == "base":
        settings = kustomized[("ConfigMap", "abmesh-config")]["data"]
        assert chart[("ConfigMap", "abmesh-config")]["data"] == settings
    service = kustomized.get(("Service", deployment))
    if service is not None:
        assert chart[("Service", deployment)]["spec"]["ports"] == service["spec"]["ports"]
