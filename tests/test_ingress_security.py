"""The shipped ingress recipe (manifests/istio/ingress-ext-authz.yaml) in a real Envoy: the
client's group and tester headers stripped by an early header mutation (taken from the
manifest itself), a tester's JWT verified by jwt_authn against a local JWKS with its claim
copied into the tester header, then abmesh's ext_authz check, then routes rendered from a spec
by abmesh's own renderer.  A client header never chooses a model, with abmesh up, down or hung;
a tester with a valid token reaches the candidate without a unit id; a forged or expired token
does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment import assign_many
from controlplane.lifecycle import Action, change_state
from controlplane.rollout import split
from controlplane.routing.plan import plan_routes
from controlplane.routing.render import envoy_route_configuration
from experiments import load_spec
from experiments.localstack import ROUTER, Process, cluster, free_port, run_envoy, start_model
from experiments.store import open_store
from tests.envoy_stack import ext_authz_filter
from tests.servers import Service, start_service

MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "istio" / "ingress-ext-authz.yaml"
ISSUER, AUDIENCE, SECRET = "https://login.example.com", "model-inference", b"testers-key-0123456789"
TESTER = "x-abmesh-tester"
SPEC = {
    "name": "ranker-v2",
    "header": "x-user-group",
    "variants": [
        {"key": "stable", "header_value": "group-a", "weight": 50,
         "destination": {"host": "model", "subset": "v1"}},
        {"key": "candidate", "header_value": "group-b", "weight": 50,
         "destination": {"host": "model", "subset": "v2"}},
    ],
    "overrides": [{"header": {"name": TESTER, "value": "internal-testers"},
                   "variant": "candidate"}],
}  # fmt: skip


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(key: bytes = SECRET, expires_in: float = 600, claim: str = "internal-testers") -> str:
    """An HS256 JWT, signed here (RFC 7519 / 7515): what a login service would hand a tester."""
    header = {"alg": "HS256", "typ": "JWT", "kid": "testers"}
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time() + expires_in),
               "abmesh_tester": claim}  # fmt: skip
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(signature)}"


def manifest_strip() -> dict[str, Any]:
    """The early header mutation exactly as the manifest's EnvoyFilter patches it in."""
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    strip = next(d for d in docs if d["metadata"]["name"] == "abmesh-strip")
    manager = strip["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
    return {"early_header_mutation_extensions": manager["early_header_mutation_extensions"]}


def jwt_filter() -> dict[str, Any]:
    jwks = {"keys": [{"kty": "oct", "kid": "testers", "alg": "HS256", "k": b64(SECRET)}]}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3"
            ".JwtAuthentication",
            "providers": {
                "testers": {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "claim_to_headers": [{"header_name": TESTER, "claim_name": "abmesh_tester"}],
                }
            },
            # As Istio's RequestAuthentication: no token passes, a bad one is refused.
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "testers"}, {"allow_missing": {}}]}}}],
        },
    }  # fmt: skip


def gateway_config(abmesh_port: int, models: list[Process], admin: int, port: int) -> Any:
    spec = load_spec(SPEC)
    routes = envoy_route_configuration(
        plan_routes(spec, split(spec, 0)), "models", {"stable": "model_v1", "candidate": "model_v2"}
    )
    authz = ext_authz_filter()
    authz["typed_config"]["allowed_headers"]["patterns"].append({"exact": TESTER})
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "route_config": routes,
        "http_filters": [jwt_filter(), authz, ROUTER],
        **manifest_strip(),
    }
    listener = {
        "name": "gateway",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
    }  # fmt: skip
    clusters = [cluster("model_v1", models[0].port), cluster("model_v2", models[1].port),
                cluster("abmesh", abmesh_port)]  # fmt: skip
    return {
        "node": {"id": "abmesh-gateway", "cluster": "abmesh-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"clusters": clusters, "listeners": [listener]},
    }


def routes_to_candidate(config: Any) -> list[Any]:
    """The header matches that route straight to the candidate (the renderer's rules)."""
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hosts = manager["typed_config"]["route_config"]["virtual_hosts"]
    return [r["match"]["headers"] for h in hosts for r in h["routes"]
            if r["match"].get("headers") and r["route"].get("cluster") == "model_v2"]  # fmt: skip


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Service]]:
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    store.put_experiment(load_spec(SPEC))
    change_state(store, "ranker-v2", Action.START)
    store.close()
    service = start_service(url, tmp_path)
    models = [start_model("v1", tmp_path), start_model("v2", tmp_path)]
    admin, port = free_port(), free_port()
    envoy = run_envoy(gateway_config(service.port, models, admin, port), tmp_path, admin)
    yield f"http://127.0.0.1:{port}", service
    envoy.stop()
    for model in models:
        model.stop()
    service.stop()


def model(front: str, headers: dict[str, str]) -> str:
    reply = httpx.get(f"{front}/predict", headers=headers, timeout=10)
    return reply.json()["model"] if reply.status_code == 200 else str(reply.status_code)


def spoofs(unit: str) -> list[dict[str, str]]:
    """Every way a client could try to pick the candidate by header."""
    return [
        {"x-user-group": "group-b"},
        {TESTER: "internal-testers"},
        {"x-user-group": "group-b", TESTER: "internal-testers", "x-user-id": unit},
    ]


def test_a_client_header_never_chooses_a_model(gateway: tuple[str, Service]) -> None:
    front, service = gateway
    # Were the headers not stripped, each spoof would match one of these rules.
    rules = routes_to_candidate(gateway_config(1, [service, service], 2, 3))
    assert sorted(m[0]["name"] for m in rules) == sorted([TESTER, "x-user-group"])
    units = [f"user-{i}" for i in range(40)]
    stable = next(u for u, a in zip(units, assign_many(load_spec(SPEC), units), strict=True)
                  if a.variant == "stable")  # fmt: skip
    assert model(front, {"x-user-id": stable}) == "v1"
    seen = {"up": [model(front, h) for h in spoofs(stable)]}
    os.kill(service.proc.pid, signal.SIGSTOP)  # hung: the check times out (failure_mode_allow)
    try:
        seen["hung"] = [model(front, h) for h in spoofs(stable)]
    finally:
        os.kill(service.proc.pid, signal.SIGCONT)
    service.stop()
    seen["down"] = [model(front, h) for h in spoofs(stable)]
    print(seen)
    assert seen == {state: ["v1"] * 3 for state in ("up", "hung", "down")}


def test_a_tester_with_a_valid_token_reaches_the_candidate_a_forged_one_does_not(
    gateway: tuple[str, Service],
) -> None:
    front, _ = gateway
    valid = {"authorization": f"Bearer {token()}"}
    assert model(front, valid) == "v2"  # no unit id needed
    assert model(front, {**valid, "x-user-id": "user-1"}) == "v2"
    forged = {"authorization": f"Bearer {token(key=b'someone-elses-key-0000')}"}
    expired = {"authorization": f"Bearer {token(expires_in=-120)}"}
    other_claim = {"authorization": f"Bearer {token(claim='everyone')}"}
    assert [model(front, h) for h in (forged, expired, other_claim)] == ["401", "401", "v1"]
