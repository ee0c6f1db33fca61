"""The assignment service over real HTTP: `abmesh serve` in its own process, real stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment import assign
from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.store import open_store
from tests.servers import Service, auth, start_service, wait_until

TOKEN = "s3cret-token"
EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())


def serve(store_url: str, workdir: Path) -> Service:
    """ranker-v2 running and draft-exp a draft, on a service of their own."""
    store = open_store(store_url)
    store.put_experiment(load_spec(EXAMPLE))
    change_state(store, "ranker-v2", Action.START)
    store.put_experiment(load_spec({**EXAMPLE, "name": "draft-exp"}))
    store.close()
    return start_service(store_url, workdir, admin_token=TOKEN, refresh_interval=0.2)


@pytest.fixture(scope="module")
def http(module_store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Shared by the tests that change no experiment (each would otherwise start a service)."""
    service = serve(module_store_url, tmp_path_factory.mktemp("service"))
    with httpx.Client(base_url=service.url, timeout=10) as client:
        yield client
    service.stop()


@pytest.fixture
def fresh_http(store_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """For the tests that change experiments."""
    service = serve(store_url, tmp_path)
    with httpx.Client(base_url=service.url, timeout=10) as client:
        yield client
    service.stop()


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def test_assign_one_unit_sets_the_routing_header(http: httpx.Client) -> None:
    r = http.get("/v1/assign/ranker-v2", params={"unit": "user-42"})
    assert r.status_code == 200
    body = r.json()
    expected = assign(load_spec(EXAMPLE), "user-42")
    assert body == {
        "experiment": "ranker-v2",
        "unit": "user-42",
        "variant": expected.variant,
        "in_experiment": True,
        "reason": "hash",
        "header": {"name": "x-user-group", "value": expected.header_value},
    }
    assert r.headers["x-user-group"] == expected.header_value


def test_request_headers_force_a_variant(http: httpx.Client) -> None:
    r = http.get(
        "/v1/assign/ranker-v2",
        params={"unit": "anyone"},
        headers={"X-User-Group": "internal-testers"},
    )
    assert (r.json()["variant"], r.json()["reason"], r.json()["in_experiment"]) == (
        "treatment",
        "override-header",
        False,
    )
    assert r.headers["x-user-group"] == "group-b"


def test_experiment_that_is_not_running_gives_control(http: httpx.Client) -> None:
    body = http.get("/v1/assign/draft-exp", params={"unit": "user-1"}).json()
    assert (body["variant"], body["reason"], body["in_experiment"]) == (
        "control",
        "inactive",
        False,
    )
    forced = http.get("/v1/assign/draft-exp", params={"unit": "qa-1"}).json()
    assert forced["variant"] == "treatment"  # testers can check a draft end to end


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/assign/nope", {"unit": "u"}, 404, "experiment 'nope' does not exist"),
        ("/v1/assign/ranker-v2", {"unit": ""}, 422, "unit must not be empty"),
        ("/v1/assign/ranker-v2", {"unit": "x" * 300}, 422, "at most 256"),
        ("/v1/assign/ranker-v2", {"unit": "a\x00b"}, 422, "control characters"),
        ("/v1/assign/ranker-v2", {"unit": "a\nb"}, 422, "control characters"),
        ("/v1/assign/ranker-v2", {}, 422, "query.unit: Field required"),
        ("/v1/nowhere", {}, 404, "no such endpoint"),
    ],
)
def test_bad_assign_requests(
    http: httpx.Client, path: str, params: dict[str, str], status: int, message: str
) -> None:
    r = http.get(path, params=params)
    assert r.status_code == status
    assert message in r.json()["error"]


def test_batch_assign(http: httpx.Client) -> None:
    units = [f"user-{i}" for i in range(50)] + ["qa-2"]
    r = http.post("/v1/assign", json={"units": units, "experiments": ["ranker-v2", "draft-exp"]})
    assert r.status_code == 200
    rows = r.json()["assignments"]
    assert len(rows) == 2 * len(units)
    spec = load_spec(EXAMPLE)
    for row, unit in zip(rows[: len(units)], units, strict=True):
        assert (row["unit"], row["variant"]) == (unit, assign(spec, unit).variant)
    assert {row["reason"] for row in rows[len(units) : -1]} == {"inactive"}
    # Without "experiments": every running experiment.
    default = http.post("/v1/assign", json={"units": ["u1"]}).json()["assignments"]
    assert [row["experiment"] for row in default] == ["ranker-v2"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"units": [f"u{i}" for i in range(600)], "experiments": ["ranker-v2", "draft-exp"]},
            413,
            "exceeds the limit of 1000",
        ),
        ({"units": ["ok", ""], "experiments": ["ranker-v2"]}, 422, "units[1]: unit must not"),
        ({"units": ["u"], "experiments": ["ghost"]}, 404, "'ghost' does not exist"),
        ({"units": []}, 422, "body.units"),
        ({"units": "u1"}, 422, "body.units"),
        ({"unit": ["u1"]}, 422, "body.unit"),
    ],
)
def test_bad_batches(http: httpx.Client, body: dict[str, Any], status: int, message: str) -> None:
    r = http.post("/v1/assign", json=body)
    assert r.status_code == status
    assert message in r.json()["error"]


def test_oversized_and_malformed_bodies(http: httpx.Client) -> None:
    big = http.post(
        "/v1/assign",
        content=b"[" + b"1," * 600_000 + b"1]",
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413
    assert "exceeds the limit" in big.json()["error"]
    bad = http.post(
        "/v1/assign", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    assert "JSON" in bad.json()["error"]


def test_admin_needs_the_bearer_token(http: httpx.Client) -> None:
    assert http.get("/v1/experiments").status_code == 401
    wrong = http.get("/v1/experiments", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "wrong bearer token")
    assert http.get("/v1/experiments", headers={"Authorization": TOKEN}).status_code == 401
    listing = http.get("/v1/experiments", headers=ADMIN)
    assert listing.status_code == 200
    assert [e["name"] for e in listing.json()] == ["draft-exp", "ranker-v2"]


def test_admin_create_update_and_lifecycle(fresh_http: httpx.Client) -> None:
    spec = {**EXAMPLE, "name": "new-exp"}
    created = fresh_http.post("/v1/experiments", json=spec, headers=ADMIN)
    assert created.status_code == 201
    assert (created.json()["generation"], created.json()["status"]["state"]) == (1, "draft")
    assert fresh_http.post("/v1/experiments", json=spec, headers=ADMIN).status_code == 409
    changed = {
        **spec,
        "variants": [{**v, "weight": w} for v, w in zip(spec["variants"], (90, 10), strict=True)],
    }
    updated = fresh_http.put("/v1/experiments/new-exp", json=changed, headers=ADMIN)
    assert (updated.status_code, updated.json()["generation"]) == (200, 2)
    assert (
        fresh_http.put(
            "/v1/experiments/brand-new", json={**spec, "name": "brand-new"}, headers=ADMIN
        ).status_code
        == 201
    )
    for action, state in (
        ("start", "running"),
        ("pause", "paused"),
        ("start", "running"),
        ("stop", "concluded"),
    ):
        r = fresh_http.post(f"/v1/experiments/new-exp/{action}", headers=ADMIN)
        assert (r.status_code, r.json()["status"]["state"]) == (200, state)
    assert r.json()["status"]["outcome"] == "stopped"
    refused = fresh_http.post("/v1/experiments/new-exp/start", headers=ADMIN)
    assert refused.status_code == 409
    assert "cannot start an experiment that is concluded" in refused.json()["error"]
    assert fresh_http.post("/v1/experiments/new-exp/explode", headers=ADMIN).status_code == 404
    first = fresh_http.get("/v1/experiments/new-exp", params={"revision": 1}, headers=ADMIN)
    assert first.json()["spec"]["variants"][1]["weight"] == 50
    assert fresh_http.delete("/v1/experiments/brand-new", headers=ADMIN).status_code == 204
    assert fresh_http.get("/v1/experiments/brand-new", headers=ADMIN).status_code == 404


def test_admin_changes_reach_the_assign_endpoint_at_once(fresh_http: httpx.Client) -> None:
    assert fresh_http.post("/v1/experiments/draft-exp/start", headers=ADMIN).status_code == 200
    body = fresh_http.get("/v1/assign/draft-exp", params={"unit": "user-1"}).json()
    assert body["reason"] == "hash"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({**EXAMPLE, "variants": EXAMPLE["variants"][:1]}, "variants:"),
        ({**EXAMPLE, "header": "x user"}, "header:"),
        ({**EXAMPLE, "coverage": 2}, "coverage:"),
        ({**EXAMPLE, "name": "a/b"}, "name:"),
    ],
)
def test_admin_rejects_invalid_specs_naming_the_field(
    http: httpx.Client, body: dict[str, Any], problem: str
) -> None:
    r = http.post("/v1/experiments", json=body, headers=ADMIN)
    assert r.status_code == 422
    assert any(p.startswith(problem) for p in r.json()["problems"])
    assert [e["name"] for e in http.get("/v1/experiments", headers=ADMIN).json()] == [
        "draft-exp",
        "ranker-v2",
    ]  # nothing stored


def test_put_with_a_different_name_is_refused(http: httpx.Client) -> None:
    r = http.put("/v1/experiments/ranker-v2", json={**EXAMPLE, "name": "other"}, headers=ADMIN)
    assert r.status_code == 422
    assert "the body names 'other'" in r.json()["error"]


def test_health_readiness_and_metrics(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    # Ready once the configs are loaded and the analysis stack is warmed up (in the background).
    wait_until(lambda: http.get("/readyz").status_code == 200, "readyz")
    ready = http.get("/readyz")
    assert (ready.status_code, ready.json()["status"], ready.json()["experiments"]) == (
        200,
        "ready",
        2,
    )
    variant = assign(load_spec(EXAMPLE), "user-42").variant
    counter = f'abmesh_assignments_total{{experiment="ranker-v2",variant="{variant}"}} '
    before = _metric(http, counter)  # the service is shared: other tests assign too
    http.get("/v1/assign/ranker-v2", params={"unit": "user-42"})
    metrics = http.get("/metrics").text
    assert _metric(http, counter) == before + 1
    assert 'route="/v1/assign/{experiment}"' in metrics
    assert "abmesh_config_age_seconds" in metrics
    assert "abmesh_config_age_seconds " in metrics
    assert "# TYPE abmesh_store_errors_total counter" in metrics


def _metric(http: httpx.Client, line_start: str) -> float:
    lines = [x for x in http.get("/metrics").text.splitlines() if x.startswith(line_start)]
    return float(lines[0].removeprefix(line_start)) if lines else 0.0


def test_odd_requests_get_json_errors(http: httpx.Client) -> None:
    huge = http.get("/v1/experiments/ranker-v2", params={"revision": 2**63}, headers=ADMIN)
    assert huge.status_code == 422
    assert "revision" in huge.json()["error"]
    slash = http.get("/v1/assign/ranker-v2/", params={"unit": "u"})
    assert (slash.status_code, slash.json()["error"]) == (
        404,
        "no such endpoint: GET /v1/assign/ranker-v2/",
    )


def test_configs_for_local_evaluation_with_etag(http: httpx.Client) -> None:
    r = http.get("/v1/configs", headers=auth(Role.READER))
    assert r.status_code == 200
    assert {e["name"] for e in r.json()["experiments"]} == {"ranker-v2", "draft-exp"}
    again = http.get(
        "/v1/configs", headers={"If-None-Match": r.headers["ETag"], **auth(Role.READER)}
    )
    assert (again.status_code, again.content) == (304, b"")


def test_openapi_documents_the_endpoints(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/assign/{experiment}",
        "/v1/assign",
        "/v1/extauthz/{path}",
        "/v1/experiments",
        "/v1/experiments/{name}/start",
        "/readyz",
    ):
        assert path in paths
    assert http.get("/docs").status_code == 200


def test_openapi_schema_builds_cleanly(tmp_path: Path) -> None:
    # In-process, so that any warning (e.g. duplicate operation ids) fails the test.
    from assignment.app import create_app
    from assignment.config import Settings

    schema = create_app(Settings(store_url=f"sqlite:///{tmp_path / 'a.db'}")).openapi()
    params = schema["paths"]["/v1/assign/{experiment}"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in params] == [
        ("experiment", "path", True),
        ("unit", "query", True),
        ("segment.{attribute}", "query", False),  # documents segment.country=DE and the like
    ]
