"""The serving platforms' routers (kserve, inference-pool, seldon) through the real
`kubernetes` client against the loopback API stub (tests/kube_stub.py): the objects they leave
validate against the upstream CRD schemas (tests/schemas, sources in extract_crd_schema.py),
weights land where each platform reads them, an unchanged plan writes nothing, a 409 is
retried, a missing object or one owned by another experiment is refused; KServe gives no weight
to a revision that is not Ready; Seldon mirrors in the shadow phase; the inference pool keeps
abmesh's header rules; and which routers are sticky."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kubernetes import client as k8s

from controlplane.lifecycle import apply_spec
from controlplane.routing import routers
from controlplane.routing.inference_pool import InferencePoolRouter
from controlplane.routing.kserve import MODE_ANNOTATION, KServeRouter
from controlplane.routing.kube import KubeRouter
from controlplane.routing.plan import Mirror, Mode, RoutePlan, plan_routes
from controlplane.routing.routers import RouterError, make_router
from controlplane.routing.seldon import SeldonRouter
from controlplane.targets import Defaults, resolve
from experiments import load_spec
from experiments.errors import InvalidInputError, NotFoundError
from experiments.store import open_store
from tests.kube_stub import KubeStub
from tests.test_kube_routers import api
from tests.test_mirror_routes import HTTP_ROUTE_SCHEMA, SCHEMAS, strict
from tests.test_routing import DOC, SPEC

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
SELDON = ("mlops.seldon.io", "v1alpha1", "experiments")
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
MODELS = (("control", "ranker-v1"), ("treatment", "ranker-v2"))
CANARY = plan_routes(SPEC, {"control": 80, "treatment": 20})


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(strict(json.loads((SCHEMAS / name).read_text())))


ISVC_SCHEMA = schema("inferenceservice-v0.20.0.json")
SELDON_SCHEMA = schema("experiment-mlops-v2.10.2.json")
POOL_SCHEMA = schema("inferencepool-v1.6.0.json")


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub()
    yield s
    s.stop()


def meta(name: str = "ranker", **annotations: str) -> dict[str, Any]:
    return {"name": name, "namespace": "models", "annotations": annotations}


def revisions(created: int, ready: int, rolled_out: int = 1) -> dict[str, Any]:
    """A Knative-mode InferenceService's predictor status, revisions by number."""

    def rev(n: int) -> str:
        return f"ranker-predictor-{n:05d}"

    traffic = [{"revisionName": rev(rolled_out), "percent": 100, "latestRevision": False,
                "tag": "prev"}]  # fmt: skip
    return {"components": {"predictor": {
        "latestCreatedRevision": rev(created), "latestReadyRevision": rev(ready),
        "latestRolledoutRevision": rev(rolled_out), "traffic": traffic,
    }}}  # fmt: skip


def model(uri: str) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}


def isvc(mode: str = "Knative", **fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": meta(**{MODE_ANNOTATION: mode}),
        "spec": {"predictor": model("gs://models/ranker/v2")},
        "status": revisions(created=2, ready=1),
    }  # fmt: skip
    obj.update(fields)
    return obj


def standard_isvc(ready: bool) -> dict[str, Any]:
    # The canary list's schema requires a container name in `model` (the predictor's does not).
    canary_model = model("gs://models/ranker/v2")
    canary_model["model"]["name"] = "kserve-container"
    canary = {"predictor": {"name": "ranker-v2", **canary_model}, "trafficPercent": 0}
    return isvc(
        "Standard",
        spec={"predictor": {"name": "ranker-v1", **model("gs://models/ranker/v1")},
              "canary": [canary]},
        status={"canaryStatuses": [{"name": "ranker-v2", "ready": ready, "trafficPercent": 0}]},
    )  # fmt: skip


def seldon_experiment() -> dict[str, Any]:
    spec = {"default": "ranker-v1", "candidates": [{"name": "ranker-v1", "weight": 100}]}
    return {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Experiment", "metadata": meta(),
            "spec": spec}  # fmt: skip


def gateway_route() -> dict[str, Any]:
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference-gateway"}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": meta("model-inference"),
            "spec": {"parentRefs": [parent], "rules": []}}  # fmt: skip


def valid(validator: jsonschema.Draft202012Validator, obj: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(obj)]  # fmt: skip
    assert errors == []


# Each router with the object it needs, how it is built, and the schema its object follows.
Case = tuple[tuple[str, str, str], Callable[[], dict[str, Any]],
             Callable[[k8s.ApiClient], KubeRouter], jsonschema.Draft202012Validator]  # fmt: skip
CASES: dict[str, Case] = {
    "kserve": (KSERVE, lambda: isvc(status=revisions(created=2, ready=2)),
               lambda c: KServeRouter("ranker", "models", c, control="control"), ISVC_SCHEMA),
    "seldon": (SELDON, seldon_experiment,
               lambda c: SeldonRouter("ranker", "models", c, control="control", models=MODELS),
               SELDON_SCHEMA),
    "inference-pool": (ROUTE, gateway_route,
                       lambda c: InferencePoolRouter("model-inference", "models", c),
                       HTTP_ROUTE_SCHEMA),
}  # fmt: skip


@pytest.mark.parametrize("kind", CASES)
def test_each_router_writes_once_retries_conflicts_and_refuses_what_is_not_its(
    stub: KubeStub, kind: str
) -> None:
    plural, make_object, build, validator = CASES[kind]
    router = build(api(stub))
    with pytest.raises(RouterError, match="does not exist: create it first"):
        router.set_routes(CANARY)
    path = stub.put(*plural, make_object())
    stub.conflicts = 2
    assert router.set_routes(CANARY)
    assert len(stub.patches) == 3  # two conflicts, then the write
    assert stub.patches[-1]["content_type"] == "application/merge-patch+json"
    stored = stub.objects[path]
    valid(validator, stored)
    assert stored["metadata"]["annotations"]["abmesh.io/experiment"] == "ranker-v2"
    assert not router.set_routes(CANARY)  # unchanged: no PATCH
    assert len(stub.patches) == 3
    stub.conflicts = 99
    with pytest.raises(RouterError, match="5 conflicts in a row"):
        router.set_routes(plan_routes(SPEC, {"control": 50, "treatment": 50}))
    stub.conflicts = 0
    other = make_object()
    other["metadata"]["annotations"]["abmesh.io/experiment"] = "other"
    stub.put(*plural, other)
    with pytest.raises(RouterError, match="managed for experiment 'other'"):
        router.set_routes(CANARY)


def test_kserve_knative_gives_the_candidate_revision_weight_only_once_it_is_ready(
    stub: KubeStub,
) -> None:
    path = stub.put(*KSERVE, isvc())
    router = KServeRouter("ranker", "models", api(stub), control="control")
    with pytest.raises(RouterError, match="revision ranker-predictor-00002 is not Ready"):
        router.set_routes(CANARY)
    assert stub.patches == []
    assert router.set_routes(plan_routes(SPEC, {"control": 100}))  # no weight: allowed
    assert stub.objects[path]["spec"]["predictor"]["canaryTrafficPercent"] == 0
    stub.objects[path]["status"] = revisions(created=2, ready=2)  # the revision came up
    assert router.set_routes(CANARY)
    predictor = stub.objects[path]["spec"]["predictor"]
    assert predictor == {**model("gs://models/ranker/v2"), "canaryTrafficPercent": 20}
    valid(ISVC_SCHEMA, stub.objects[path])
    assert router.set_routes(plan_routes(SPEC, {"treatment": 100}, Mode.PROMOTED))
    assert "canaryTrafficPercent" not in stub.objects[path]["spec"]["predictor"]
    valid(ISVC_SCHEMA, stub.objects[path])
    assert router.set_routes(plan_routes(SPEC, {"control": 50, "treatment": 50}, Mode.ROLLED_BACK))
    assert stub.objects[path]["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_kserve_needs_a_candidate_revision_of_its_own(stub: KubeStub) -> None:
    stub.put(*KSERVE, isvc(status=revisions(created=1, ready=1)))
    router = KServeRouter("ranker", "models", api(stub), control="control")
    with pytest.raises(RouterError, match="already the rolled-out one: there is no candidate"):
        router.set_routes(CANARY)
    stub.put(*KSERVE, isvc(mode="ModelMesh"))
    with pytest.raises(RouterError, match="deployment mode 'ModelMesh' has no canary"):
        router.set_routes(CANARY)


def test_kserve_standard_mode_sets_the_named_canarys_percent(stub: KubeStub) -> None:
    path = stub.put(*KSERVE, standard_isvc(ready=False))
    router = KServeRouter("ranker", "models", api(stub), control="control", models=MODELS)
    with pytest.raises(RouterError, match="canary 'ranker-v2' is not Ready"):
        router.set_routes(CANARY)
    stub.objects[path]["status"]["canaryStatuses"][0]["ready"] = True
    assert router.set_routes(CANARY)
    spec = stub.objects[path]["spec"]
    assert [(c["predictor"]["name"], c["trafficPercent"]) for c in spec["canary"]] == [
        ("ranker-v2", 20)
    ]
    assert spec["canary"][0]["predictor"]["model"]["storageUri"] == "gs://models/ranker/v2"
    assert spec["predictor"]["name"] == "ranker-v1"  # the owner's, untouched
    valid(ISVC_SCHEMA, stub.objects[path])
    router.set_routes(plan_routes(SPEC, {"treatment": 100}, Mode.PROMOTED))
    assert stub.objects[path]["spec"]["canary"][0]["trafficPercent"] == 100
    router.set_routes(plan_routes(SPEC, {"control": 100}, Mode.ROLLED_BACK))
    assert stub.objects[path]["spec"]["canary"][0]["trafficPercent"] == 0
    unnamed = KServeRouter("ranker", "models", api(stub), control="control")  # no models
    with pytest.raises(RouterError, match=r"no canary with predictor\.name 'model-inference'"):
        unnamed.set_routes(CANARY)


def test_kserve_takes_two_arms_and_no_mirror(stub: KubeStub) -> None:
    stub.put(*KSERVE, isvc(status=revisions(created=2, ready=2)))
    router = KServeRouter("ranker", "models", api(stub), control="control")
    three = load_spec({**DOC, "variants": [*DOC["variants"], {
        "key": "other", "header_value": "group-c", "weight": 0,
        "destination": {"host": "model-inference", "subset": "v3"}}]})  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"one candidate; .* arms \['control', 'tre"):
        router.set_routes(plan_routes(three, {"control": 80, "treatment": 10, "other": 10}))
    shadow = plan_routes(SPEC, {"control": 100}, mirror=Mirror("treatment", 10, ("POST",)))
    with pytest.raises(InvalidInputError, match="cannot mirror"):
        router.set_routes(shadow)
    assert stub.patches == []


def seldon_plans() -> dict[str, RoutePlan]:
    return {
        "shadow": plan_routes(SPEC, {"control": 100}, mirror=Mirror("treatment", 10, ("POST",))),
        "canary": CANARY,
        "promoted": plan_routes(SPEC, {"treatment": 100}, Mode.PROMOTED),
        "rolled back": plan_routes(SPEC, {"control": 100}, Mode.ROLLED_BACK),
    }


def test_seldon_splits_by_weight_and_mirrors_in_the_shadow_phase(stub: KubeStub) -> None:
    path = stub.put(*SELDON, {**seldon_experiment(), "spec": {
        "candidates": [{"name": "ranker-v1", "weight": 1}], "resourceType": "model"}})  # fmt: skip
    router = SeldonRouter("ranker", "models", api(stub), control="control", models=MODELS)
    written = {}
    for phase, plan in seldon_plans().items():
        router.set_routes(plan)
        valid(SELDON_SCHEMA, stub.objects[path])
        written[phase] = stub.objects[path]["spec"]
    assert written["shadow"] == {
        "default": "ranker-v1", "resourceType": "model",
        "candidates": [{"name": "ranker-v1", "weight": 100}],  # the mirror is no candidate
        "mirror": {"name": "ranker-v2", "percent": 10},
    }  # fmt: skip
    assert "mirror" not in written["canary"]
    assert written["canary"]["candidates"] == [{"name": "ranker-v1", "weight": 80},
                                               {"name": "ranker-v2", "weight": 20}]  # fmt: skip
    assert written["promoted"]["candidates"] == [{"name": "ranker-v1", "weight": 0},
                                                 {"name": "ranker-v2", "weight": 100}]  # fmt: skip
    assert written["rolled back"]["candidates"][0] == {"name": "ranker-v1", "weight": 100}
    assert {w["default"] for w in written.values()} == {"ranker-v1"}


def test_seldon_needs_distinct_models_and_a_whole_mirror_percent(stub: KubeStub) -> None:
    stub.put(*SELDON, seldon_experiment())
    hosts = SeldonRouter("ranker", "models", api(stub), control="control")
    with pytest.raises(InvalidInputError, match=r"different models.*rollout.target.models"):
        hosts.set_routes(CANARY)  # both variants' destination host is model-inference
    router = SeldonRouter("ranker", "models", api(stub), control="control", models=MODELS)
    with pytest.raises(InvalidInputError, match=r"whole percent of requests, not 12\.5"):
        router.set_routes(
            plan_routes(SPEC, {"control": 100}, mirror=Mirror("treatment", 12.5, ("POST",)))
        )
    assert stub.patches == []


def test_inference_pool_routes_keep_the_header_rules_in_order(stub: KubeStub) -> None:
    path = stub.put(*ROUTE, gateway_route())
    router = make_router("inference-pool", name="model-inference", namespace="models",
                         api_client=api(stub))  # fmt: skip
    assert router.set_routes(plan_routes(SPEC, {"control": 95, "treatment": 5}))
    stored = stub.objects[path]
    valid(HTTP_ROUTE_SCHEMA, stored)
    assert stored["spec"]["parentRefs"][0]["name"] == "inference-gateway"  # the owner's
    rules = stored["spec"]["rules"]

    def pool(name: str, **weight: int) -> dict[str, Any]:
        return {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name,
                **weight}  # fmt: skip

    assert [(r.get("matches"), r["backendRefs"]) for r in rules] == [
        ([{"headers": [{"type": "Exact", "name": "x-user-group", "value": "internal-testers"}]},
          {"headers": [{"type": "Exact", "name": "x-user-group", "value": "group-b"}]}],
         [pool("model-inference-v2")]),  # the forced testers and group-b: the treatment
        ([{"headers": [{"type": "Exact", "name": "x-user-group", "value": "group-a"}]}],
         [pool("model-inference-v1")]),
        (None, [pool("model-inference-v1", weight=95), pool("model-inference-v2", weight=5)]),
    ]  # fmt: skip
    # The pools it names are InferencePools as the extension's v1 CRD defines them.
    for ref in rules[-1]["backendRefs"]:
        valid(POOL_SCHEMA, {
            "apiVersion": f"{ref['group']}/v1", "kind": ref["kind"],
            "metadata": {"name": ref["name"], "namespace": "models"},
            "spec": {"selector": {"matchLabels": {"app": ref["name"]}},
                     "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": f"{ref['name']}-epp", "port": {"number": 9002}}},
        })  # fmt: skip
    shadow = plan_routes(SPEC, {"control": 100}, mirror=Mirror("treatment", 10, ("POST",)))
    assert router.set_routes(shadow)
    valid(HTTP_ROUTE_SCHEMA, stub.objects[path])
    mirrors = [f["requestMirror"] for r in stub.objects[path]["spec"]["rules"]
               for f in r.get("filters", [])]  # fmt: skip
    # Copies of the two rules to stable (group-a's and the default), each to the candidate's pool.
    assert [m["backendRef"] for m in mirrors] == [pool("model-inference-v2")] * 2


def test_sticky_flags() -> None:
    expected = {"envoy": True, "istio": True, "gateway-api": True, "manifests": True,
                "inference-pool": True, "kserve": False, "seldon": False}  # fmt: skip
    assert {name: routers.sticky(name) for name in routers.ROUTERS} == expected
    built = {"inference-pool": InferencePoolRouter("r", "models", k8s.ApiClient()),
             "kserve": KServeRouter("r", "models", k8s.ApiClient(), control="control"),
             "seldon": SeldonRouter("r", "models", k8s.ApiClient(), control="control")}  # fmt: skip
    assert {name: r.sticky for name, r in built.items()} == {name: expected[name] for name in built}
    with pytest.raises(InvalidInputError, match="unknown router 'knative'"):
        routers.sticky("knative")


CANARY_ONLY = [{"kind": "canary", "steps": [10, 50]}, {"kind": "promote"}]


def test_targets_resolve_the_platform_routers() -> None:
    def target(**t: Any) -> Any:
        rollout = {**DOC["rollout"], "phases": CANARY_ONLY, "target": t}
        return resolve(load_spec({**DOC, "rollout": rollout}), Defaults(namespace="models"))

    kserve = target(router="kserve", name="ranker", models={"treatment": "ranker-v2"})
    assert dict(kserve.options) == {
        "name": "ranker", "namespace": "models", "api_client": None, "control": "control",
        "models": (("treatment", "ranker-v2"),),
    }  # fmt: skip
    assert kserve.where == "InferenceService models/ranker"
    seldon = target(router="seldon", models=dict(MODELS))
    assert seldon.option("models") == MODELS
    assert seldon.option("name") == "model-inference"  # default: the service
    pool, route = target(router="inference-pool"), target(router="gateway-api")
    assert pool.claims == route.claims  # one HTTPRoute: the two would fight over it
    assert pool.where == "HTTPRoute models/model-inference"


@pytest.mark.parametrize(
    ("router", "phases", "refused"),
    [
        ("kserve", ["canary", "ab", "promote"], "an A/B phase is refused"),
        ("seldon", ["ab", "promote"], "an A/B phase is refused"),
        ("kserve", ["shadow", "canary", "promote"], "cannot mirror"),
        ("seldon", ["shadow", "canary", "promote"], None),
        ("inference-pool", ["shadow", "canary", "ab", "promote"], None),
    ],
)
def test_a_weights_only_target_gets_no_ab_phase(
    router: str, phases: list[str], refused: str | None, tmp_path: Path
) -> None:
    """Refused where the spec names the router (apply) and where the controller's default
    names it (resolve); the rest runs."""
    kinds = [{"kind": k, "steps": [10]} if k == "canary" else {"kind": k} for k in phases]
    doc = {**DOC, "rollout": {**DOC["rollout"], "phases": kinds, "target": {"router": router}}}
    spec = load_spec(doc)
    default = load_spec({**doc, "rollout": {**doc["rollout"], "target": {}}})
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    if refused is None:
        apply_spec(store, spec)
        resolve(default, Defaults(router=router))
        return
    with pytest.raises(InvalidInputError, match=refused):
        apply_spec(store, spec)
    with pytest.raises(NotFoundError):
        store.get_experiment(spec.name)  # nothing stored
    with pytest.raises(InvalidInputError, match=refused):
        resolve(default, Defaults(router=router))
