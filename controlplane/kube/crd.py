"""The `Experiment` CustomResourceDefinition (abmesh.io/v1alpha1), generated from the pydantic
experiment spec so the two cannot drift (tests/test_kube_crd.py regenerates and compares).

    python -m controlplane.kube.crd        # rewrites the CRD files in manifests/

The API server accepts only *structural* schemas (Kubernetes docs, "Specifying a structural
schema"): every node has a type, no `$ref`, `anyOf`/`oneOf` carry no types, no
`additionalProperties` beside `properties`, no `uniqueItems`.  Pydantic's JSON Schema is turned
into one: references inlined, `X | None` becomes `nullable`, `const` an enum, a tuple a
fixed-length list, and the rollout phases (a union told apart by `kind`) one object holding
every phase's fields.  Defaults are left out on purpose: the API server would write them into
the stored object, and the mirrored spec would then differ from what was applied.  The schema
is a first gate (`kubectl apply` refuses wrong types); the controller still validates each
object with the full model and says in status what is wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from experiments.spec import ExperimentSpec

GROUP, VERSION, KIND, PLURAL = "abmesh.io", "v1alpha1", "Experiment", "experiments"
API_VERSION = f"{GROUP}/{VERSION}"
# Set only in the custom resource: what its owner wants the experiment to be doing.  Deleting the
# object is not "stopped": it removes the experiment and its data (after the rollback).
DESIRED_STATES = ("running", "paused", "stopped")
NOT_IN_SPEC = ("apiVersion", "name")  # the object's own apiVersion and metadata.name
ROOT = Path(__file__).resolve().parents[2]
FILES = (
    ROOT / "manifests" / "crd" / "experiments.abmesh.io.yaml",
    ROOT / "manifests" / "helm" / "abmesh" / "crds" / "experiments.abmesh.io.yaml",
)
KEEP = {
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "required",
    "nullable",
}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON Schema node as a structural OpenAPI v3 node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        present = [b for b in branches if b.get("type") != "null"]
        merged = _union([structural(b, defs) for b in present])
        if len(present) < len(branches):
            merged["nullable"] = True
        if "description" in node:
            merged["description"] = node["description"]
        return merged
    out: dict[str, Any] = {k: v for k, v in node.items() if k in KEEP}
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound in ("Minimum", "Maximum"):
        if f"exclusive{bound}" in node:  # JSON Schema's number -> OpenAPI 3.0's flag
            out[bound.lower()] = node[f"exclusive{bound}"]
            out[f"exclusive{bound}"] = True
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        props = {k: structural(v, defs) for k, v in node.get("properties", {}).items()}
        extra = node.get("additionalProperties")
        if props:
            out["properties"] = props
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        if "prefixItems" in node:
            items = _union([structural(i, defs) for i in node["prefixItems"]])
            out["minItems"] = out["maxItems"] = len(node["prefixItems"])
        else:
            items = structural(node.get("items", {}), defs)
        out["items"] = items
    elif kind is None:  # Any
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _union(options: list[dict[str, Any]]) -> dict[str, Any]:
    """One structural node that admits every option (the model checks the rest)."""
    if len(options) == 1:
        return options[0]
    types = {o.get("type") for o in options}
    if types == {"integer", "string"}:
        return {"x-kubernetes-int-or-string": True}
    if types == {"integer", "number"}:
        return {"type": "number"}
    if types == {"object"} and all("properties" in o for o in options):
        props: dict[str, Any] = {}
        for option in options:
            for name, schema in option["properties"].items():
                if name in props and props[name] != schema:
                    props[name] = _union([props[name], schema])
                else:
                    props.setdefault(name, schema)
        required = set.intersection(*(set(o.get("required", ())) for o in options))
        merged: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            merged["required"] = sorted(required)
        return merged
    if "array" in types and len(types) == 1:
        return {"type": "array", "items": _union([o["items"] for o in options])}
    if len(types) == 1 and None not in types:  # same scalar type, different bounds or enums
        scalar = {"type": types.pop()}
        enums = [o.get("enum") for o in options]
        if all(enums):
            scalar["enum"] = sorted({v for e in enums for v in e or ()}, key=str)
        return scalar
    if types <= {"object", None}:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {"x-kubernetes-preserve-unknown-fields": True}


def spec_schema() -> dict[str, Any]:
    schema = ExperimentSpec.model_json_schema()
    spec = structural(schema, schema.get("$defs", {}))
    for name in NOT_IN_SPEC:
        spec["properties"].pop(name, None)
    spec["required"] = [r for r in spec.get("required", []) if r not in NOT_IN_SPEC]
    spec["properties"]["desiredState"] = {
        "type": "string",
        "enum": list(DESIRED_STATES),
        "description": "What the experiment should be doing (default running: applying the"
        " object starts it).  paused holds it, stopped ends it and rolls its routes back.",
    }
    spec["description"] = "The experiment spec (docs/spec.md); its name is metadata.name."
    return spec


def status_schema() -> dict[str, Any]:
    """The fields the printer columns and `kubectl wait` read are declared; the rest (phases,
    rollout state, routes) is kept as the controller writes it."""
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {"type": "integer"},
            "uid": {"type": "string"},
            "state": {"type": "string"},
            "outcome": {"type": "string", "nullable": True},
            "phase": {"type": "string"},
            "rolloutPhase": {"type": "string"},
            "candidateWeight": {"type": "number"},
            "weights": {"type": "object", "additionalProperties": {"type": "number"}},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def column(name: str, kind: str, path: str, description: str) -> dict[str, str]:
    return {"name": name, "type": kind, "jsonPath": path, "description": description}


def crd() -> dict[str, Any]:
    columns = [
        column("State", "string", ".status.state", "draft, running, paused or concluded"),
        column("Outcome", "string", ".status.outcome", "how it ended, once concluded"),
        column("Phase", "string", ".status.rolloutPhase", "the rollout phase it is in"),
        column("Candidate", "number", ".status.candidateWeight", "the candidate's percent"),
        column("Age", "date", ".metadata.creationTimestamp", "since the object was created"),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "experiment",
                "shortNames": ["abx"],
                "categories": ["abmesh"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = (
        "# Generated by `python -m controlplane.kube.crd` from experiments/spec.py: do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main() -> None:
    text = render()
    for path in FILES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
