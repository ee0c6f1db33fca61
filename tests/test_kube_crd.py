"""The Experiment CRD: generated from the spec model and committed in sync, a valid
CustomResourceDefinition (kubernetes-validate, strict), structural as the API server demands,
and its schema admits every example spec and refuses wrong types, as `kubectl apply` would
(openapi-schema-validator's OpenAPI 3.0 validator, which knows `nullable`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from controlplane.kube.crd import FILES, crd, render
from controlplane.kube.objects import experiment_object, published_status, spec_of
from controlplane.lifecycle import apply_spec
from controlplane.targets import Defaults, resolve
from experiments import EXAMPLES_DIR, load_spec
from experiments.status import Status
from experiments.store import ExperimentRecord, open_store
from tests.controller_rig import spec_of as rig_spec
from tests.test_manifests import K8S_VERSION

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def test_the_committed_crd_files_are_the_generated_one() -> None:
    for path in FILES:
        assert path.read_text() == render(), f"{path}: run python -m controlplane.kube.crd"


def test_the_crd_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(crd(), K8S_VERSION, strict=True)
    version = crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "State": ".status.state",
        "Outcome": ".status.outcome",
        "Phase": ".status.rolloutPhase",
        "Candidate": ".status.candidateWeight",
        "Age": ".metadata.creationTimestamp",
    }


def structural_problems(node: dict[str, Any], where: str = "") -> list[str]:
    """The rules of a structural schema (Kubernetes docs, "Specifying a structural schema"),
    checked over every node."""
    problems = []
    untyped = not (
        node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    )
    if "type" not in node and untyped:
        problems.append(f"{where or '/'}: no type")
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "not", "uniqueItems", "default", "const"):
        if banned in node:
            problems.append(f"{where}: {banned}")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties")
    if node.get("additionalProperties") is False:
        problems.append(f"{where}: additionalProperties false")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{where}.{name}")
    if "items" in node:
        problems += structural_problems(node["items"], f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{where}{{}}")
    return problems


def test_the_schema_is_structural() -> None:
    assert structural_problems(SCHEMA) == []
    # and the checker does see a broken one
    broken = copy.deepcopy(SCHEMA)
    broken["properties"]["spec"]["properties"]["header"] = {"anyOf": [{"type": "string"}]}
    assert structural_problems(broken) == [".spec.header: no type", ".spec.header: anyOf"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_as_an_object_passes_the_schema_and_round_trips(path: Any) -> None:
    spec = load_spec(path)
    obj = experiment_object(spec, "models")
    OAS30Validator(SCHEMA).validate(obj)
    assert spec_of(obj) == spec
    # what kubectl apply sends is the YAML a person writes
    assert spec_of(yaml.safe_load(yaml.safe_dump(obj))) == spec


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": "two"}, "variants"),
        ({"coverage": "all"}, "coverage"),
        ({"desiredState": "go"}, "desiredState"),
        ({"sticky": "yes"}, "sticky"),
    ],
)
def test_wrong_types_are_refused_by_the_schema(change: dict[str, Any], field: str) -> None:
    obj = experiment_object(load_spec(EXAMPLES[0]), "models")
    obj["spec"].update(change)
    errors = list(OAS30Validator(SCHEMA).iter_errors(obj))
    assert errors
    assert any(field in "/".join(map(str, e.absolute_path)) for e in errors)


def test_a_name_in_the_spec_is_refused_by_the_controller() -> None:
    obj = experiment_object(load_spec(EXAMPLES[0]), "models")
    obj["spec"]["name"] = "other"
    with pytest.raises(ValueError, match=r"spec\.name"):
        spec_of(obj)


def test_the_published_status_passes_the_status_schema() -> None:
    spec = load_spec(rig_spec("ranker"))
    status = Status.new(1_000.0).with_condition("RouteTargetReady", True, "Applied", "x", 1_000.0)
    record = ExperimentRecord(spec, 1, status, 1_000.0, 1_000.0)
    published = published_status(record, 1)
    OAS30Validator(SCHEMA["properties"]["status"]).validate(published)
    assert published["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:16:40Z"
    assert published["state"] == "draft"
    assert published["candidateWeight"] == 0.0


def test_the_example_object_is_the_example_spec_and_passes_the_schema() -> None:
    obj = yaml.safe_load((FILES[0].parent / "model-rollout.experiment.yaml").read_text())
    OAS30Validator(SCHEMA).validate(obj)
    assert spec_of(obj) == load_spec(EXAMPLES_DIR / "model-rollout.yaml")
    kustomization = yaml.safe_load((FILES[0].parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [FILES[0].name]


def test_the_kserve_example_passes_and_can_run_on_kserve(tmp_path: Path) -> None:
    obj = yaml.safe_load((FILES[0].parent / "kserve-canary.experiment.yaml").read_text())
    OAS30Validator(SCHEMA).validate(obj)
    spec = spec_of(obj)
    assert spec.rollout is not None
    assert spec.rollout.target.router == "kserve"
    apply_spec(open_store(f"sqlite:///{tmp_path}/s.db"), spec)  # no A/B phase: accepted
    target = resolve(spec, Defaults())
    assert target.where == "InferenceService models/ranker"
