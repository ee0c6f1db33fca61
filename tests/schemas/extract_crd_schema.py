"""Writes one version's OpenAPI schema out of a CustomResourceDefinition, descriptions removed,
as the JSON the tests validate against:

    python tests/schemas/extract_crd_schema.py CRD.yaml v1 > tests/schemas/NAME.json

httproute-v1.3.0.json: kubernetes-sigs/gateway-api, tag v1.3.0 (commit 40be951c),
config/crd/standard/gateway.networking.k8s.io_httproutes.yaml, version v1 — the first release
whose standard channel has RequestMirror's `percent` and `fraction` (v1.2 had them only in the
experimental channel).  The CEL rules (x-kubernetes-validations) stay in the file but JSON
Schema does not evaluate them: controlplane.routing.render checks the HTTPRoute limits itself.

inferenceservice-v0.20.0.json: kserve/kserve, tag v0.20.0 (commit 1fb78105),
config/crd/full/serving.kserve.io_inferenceservices.yaml, version v1beta1 — the first release
with the Standard (raw deployment) mode's `spec.canary` list and `status.canaryStatuses`.
Kept whole (1.6 MB with descriptions removed).

inferencepool-v1.6.0.json: kubernetes-sigs/gateway-api-inference-extension, tag v1.6.0
(commit 992e5c29), config/crd/bases/inference.networking.k8s.io_inferencepools.yaml, version
v1.  The group moved from inference.networking.x-k8s.io (v1alpha2, up to v0.5) to
inference.networking.k8s.io (v1, from v1.0.0); v1.6.0 publishes only the latter for pools.

experiment-mlops-v2.10.2.json: SeldonIO/seldon-core, tag v2.10.2 (commit 8ca3c3c7),
operator/config/crd/bases/mlops.seldon.io_experiments.yaml, version v1alpha1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(path: str, version: str) -> None:
    with open(path) as f:
        crd = yaml.safe_load(f)
    (entry,) = (v for v in crd["spec"]["versions"] if v["name"] == version)
    json.dump(strip(entry["schema"]["openAPIV3Schema"]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
