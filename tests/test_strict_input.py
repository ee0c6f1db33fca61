"""Strict input: a YAML key given twice, and HTTP requests the service must refuse with a 4xx
that names what is wrong (never a 500, never a silent default)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from assignment.routes.strict_json import loads_unique
from controlplane.lifecycle import Action, change_state
from controlplane.routing.routers import ManifestsRouter
from experiments import EXAMPLES_DIR, load_spec, strict_yaml
from experiments.errors import SpecError
from experiments.store import open_store
from tests.servers import start_service

EXAMPLE_TEXT = (EXAMPLES_DIR / "ranker-v2.yaml").read_text()


@pytest.mark.parametrize(
    ("extra", "key"),
    [("coverage: 0.05\ncoverage: 1\n", "coverage"), ("name: ranker-v3\n", "name")],
)
def test_a_key_given_twice_is_refused_with_its_lines(extra: str, key: str) -> None:
    text = EXAMPLE_TEXT + extra
    lines = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(f"{key}:")]
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    assert caught.value.problems == [
        f"duplicate key {key!r} on line {lines[1]} (first on line {lines[0]})"
    ]


def test_nested_and_flow_duplicates_are_refused_too() -> None:
    nested = EXAMPLE_TEXT.replace("  primary: {name: click,", "  primary: {name: click, name: buy,")
    with pytest.raises(SpecError, match="duplicate key 'name' on line"):
        load_spec(nested)
    with pytest.raises(SpecError, match="duplicate key 'a'"):
        load_spec('{"a": 1, "a": 2}')  # JSON text goes through the same loader


def test_a_merge_may_still_override_what_it_brings_in() -> None:
    data = strict_yaml.load("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 5\n")
    assert data["m"] == {"x": 5, "y": 2}


def test_the_cli_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "twice.yaml"
    spec.write_text(EXAMPLE_TEXT + "coverage: 0.05\ncoverage: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "validate", "-f", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = len(spec.read_text().splitlines())
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: invalid experiment spec: duplicate key 'coverage' on line {last}"
        f" (first on line {last - 1})"
    )


def test_the_manifests_router_reads_its_files_strictly(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("kind: VirtualService\nkind: HTTPRoute\n")
    with pytest.raises(strict_yaml.DuplicateKeyError, match="duplicate key 'kind' on line 2"):
        ManifestsRouter(path).get_routes()


# The service: one process for the HTTP tests below, on its embedded SQLite store.

TOKEN = "strict-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("strict")
    store_url = f"sqlite:///{workdir / 'abmesh.db'}"
    store = open_store(store_url)
    store.put_experiment(load_spec(EXAMPLE_TEXT))
    change_state(store, "ranker-v2", Action.START)
    store.close()
    service = start_service(store_url, workdir, admin_token=TOKEN)
    with httpx.Client(base_url=service.url, headers=ADMIN, timeout=10) as client:
        yield client
    service.stop()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/experiments/ranker-v2/stats", "GET"),
        ("POST", "/v1/experiments/ranker-v2/snapshots", "GET"),
        ("POST", "/v1/experiments/ranker-v2/events", "GET"),
        ("POST", "/v1/experiments/ranker-v2/decision", "GET"),
        ("POST", "/v1/experiments/ranker-v2/report", "GET"),
        ("POST", "/v1/experiments/ranker-v2/report.html", "GET"),
        ("POST", "/v1/experiments/ranker-v2", "GET, PUT, DELETE"),
        ("PATCH", "/v1/experiments", "GET, POST"),
        ("DELETE", "/v1/experiments/ranker-v2/start", "POST"),
        ("POST", "/v1/configs", "GET"),
        ("POST", "/readyz", "GET"),
        ("PUT", "/metrics", "GET"),
    ],
)
def test_an_unsupported_method_is_405_with_allow(
    http: httpx.Client, method: str, path: str, allowed: str
) -> None:
    r = http.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json()["error"] == f"method {method} is not allowed on {path} (allowed: {allowed})"


def test_an_unknown_action_is_no_endpoint(http: httpx.Client) -> None:
    r = http.post("/v1/experiments/ranker-v2/frobnicate")
    assert r.status_code == 404
    assert r.json()["error"] == "no such endpoint: POST /v1/experiments/ranker-v2/frobnicate"


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        ("POST", "/v1/events", b'{"events": [}', "body: not valid JSON at character 12: "),
        ("POST", "/v1/assign", b"[1,", "body: not valid JSON at character 3: Expecting value"),
        ("POST", "/v1/experiments", b"{bad", "body: not valid JSON at character 1: "),
        ("PUT", "/v1/experiments/x", b"\xff{}", "body: not valid JSON: 'utf-8' codec can't"),
        ("POST", "/v1/events", b"\xc3\x28", "body: not valid JSON: 'utf-8' codec can't"),
    ],
)
def test_an_undecodable_body_is_422(
    http: httpx.Client, method: str, path: str, body: bytes, problem: str
) -> None:
    r = http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["problems"][0].startswith(problem)
    assert r.json()["error"].startswith(f"invalid request: {problem}")


SPEC_JSON = json.dumps(yaml.safe_load(EXAMPLE_TEXT))


@pytest.mark.parametrize(
    ("method", "path", "body", "key"),
    [
        # A small coverage, then a second one further down that would enrol everyone.
        (
            "PUT",
            "/v1/experiments/ranker-v2",
            '{"coverage": 0.05, ' + SPEC_JSON[1:-1] + ', "coverage": 1}',
            "coverage",
        ),
        ("POST", "/v1/experiments", '{"name": "a", "name": "b"}', "name"),
        ("POST", "/v1/events", '{"events": [{"event_id": "d", "value": 1, "value": 9}]}', "value"),
        ("POST", "/v1/assign", '{"units": ["u"], "units": ["v"]}', "units"),
        ("POST", "/v1/flagger/rollout", '{"name": "x", "metadata": {"a": "1", "a": "2"}}', "a"),
    ],
)
def test_a_json_body_repeating_a_key_is_422_and_changes_nothing(
    http: httpx.Client, method: str, path: str, body: str, key: str
) -> None:
    before = http.get("/v1/experiments/ranker-v2").json()
    r = http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    where = body.rfind(f'"{key}"')
    problem = f"body: not valid JSON at character {where}: duplicate key {key!r}"
    assert r.json()["problems"] == [problem]
    assert http.get("/v1/experiments/ranker-v2").json() == before


def test_strict_json_decodes_what_json_does() -> None:
    doc = '{"a": [1, {"b": null, "c": "\u00e9"}], "d": {"a": 2}}'  # one key per object
    assert loads_unique(doc) == json.loads(doc)
    assert loads_unique(doc.encode()) == json.loads(doc)


def _event(event_id: str, **fields: object) -> dict[str, object]:
    base = {"event_id": event_id, "experiment": "ranker-v2", "unit": "u-1", "metric": "click"}
    return {**base, **fields}


def test_null_values_and_far_future_timestamps_are_rejected(http: httpx.Client) -> None:
    now = time.time()
    events = [
        _event("null-value", value=None),
        _event("millis", timestamp=now * 1000),
        _event("year-2999", timestamp="2999-01-01T00:00:00+00:00"),
        _event("skewed", timestamp=now + 3600),  # an hour ahead: a wrong clock, accepted
        _event("null-timestamp", timestamp=None),  # null timestamp: now, as documented
    ]
    r = http.post("/v1/events", json={"events": events})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    errors = {x["index"]: x["error"] for x in body["rejected"]}
    assert errors[0] == "events[0].value: null; send a number, or leave it out to count 1"
    ahead = re.escape("days ahead of the server's clock (at most 1)")
    assert re.fullmatch(rf"events\[1\]\.timestamp: 2\.0\de\+07 {ahead}; milliseconds .*", errors[1])
    assert re.fullmatch(rf"events\[2\]\.timestamp: 3\.\d\de\+05 {ahead}", errors[2])


def test_openapi_shows_what_ext_authz_and_metrics_really_answer(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    check = paths["/v1/extauthz/{path}"]["get"]["responses"]
    assert list(check) == ["200"]  # never an error status
    assert "content" not in check["200"]  # an empty body
    assert "x-user-group" in check["200"]["headers"]
    answer = http.get("/v1/extauthz/anything", headers={"x-user-id": "u-1"})
    assert (answer.status_code, answer.content) == (200, b"")
    assert answer.headers["x-user-group"] in ("group-a", "group-b")

    metrics = paths["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")


def test_ext_authz_answers_any_path_and_method(http: httpx.Client) -> None:
    # A newline in the path (%0A) once missed the route: a 404, which Envoy turns into a denial.
    for method, path in (("GET", "/v1/extauthz/a%0Ab"), ("QUERY", "/v1/extauthz/x"),
                         ("PROPFIND", "/v1/extauthz/"), ("TRACE", "/v1/extauthz/%00")):  # fmt: skip
        answer = http.request(method, path, headers={"x-user-id": "u-1"})
        assert (answer.status_code, answer.content) == (200, b""), (method, path)
        assert answer.headers["x-user-group"] in ("group-a", "group-b")


def test_a_bad_unit_in_a_batch_is_422_naming_it(http: httpx.Client) -> None:
    for experiments in (None, ["ranker-v2"]):
        r = http.post("/v1/assign", json={"units": ["ok", "bad\u0000"], "experiments": experiments})
        assert r.status_code == 422
        assert r.json()["error"] == "units[1]: unit must not contain control characters"
