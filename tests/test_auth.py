"""Closed by default, three roles (assignment/auth.py), against `abmesh serve` in its own process.

ROUTES names what every route of the app needs.  `test_every_route_has_a_role` walks the app's
routes, so a route added without an entry here fails; the other tests ask each entry over
HTTP with no token, a wrong one and each role's, and read its requirement in the OpenAPI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
import yaml

from assignment.auth import Role
from assignment.config import Settings, SettingsError
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.store import open_store
from tests.servers import TOKENS, Service, auth, start_service, wait_until

OPEN, API_KEY = "open", "api key"  # no credential; the API key when ABMESH_API_KEY is set
# (method, path) -> what it needs.  "*": every method (the ext_authz check, which must never
# refuse: a refusal would block the user's request at the gateway).
ROUTES: dict[tuple[str, str], str | Role] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): OPEN,  # scraped by Prometheus: counters per experiment and variant
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("*", "/v1/extauthz/{path:anything}"): OPEN,
    ("GET", "/v1/extauthz/{path:anything}"): OPEN,
    ("GET", "/v1/assign/{experiment}"): API_KEY,
    ("POST", "/v1/assign"): API_KEY,
    ("GET", "/v1/configs"): Role.READER,
    ("GET", "/v1/experiments"): Role.READER,
    ("GET", "/v1/experiments/{name}"): Role.READER,
    ("GET", "/v1/experiments/{name}/stats"): Role.READER,
    ("GET", "/v1/experiments/{name}/snapshots"): Role.READER,
    ("GET", "/v1/experiments/{name}/events"): Role.READER,
    ("GET", "/v1/experiments/{name}/report"): Role.READER,
    ("GET", "/v1/experiments/{name}/report.html"): Role.READER,
    ("GET", "/v1/experiments/{name}/decision"): Role.READER,
    ("GET", "/v1/experiments/{name}/shadow"): Role.READER,
    ("GET", "/v1/experiments/{name}/segments"): Role.READER,
    ("GET", "/v1/reports"): Role.READER,
    ("GET", "/reports"): Role.READER,
    ("POST", "/v1/events"): Role.WRITER,
    ("POST", "/v1/exposures"): Role.WRITER,
    ("POST", "/v1/predictions"): Role.WRITER,
    ("POST", "/v1/experiments"): Role.ADMIN,
    ("PUT", "/v1/experiments/{name}"): Role.ADMIN,
    ("DELETE", "/v1/experiments/{name}"): Role.ADMIN,
    ("POST", "/v1/experiments/{name}/phase"): Role.ADMIN,
    ("POST", "/v1/experiments/{name}/start"): Role.ADMIN,
    ("POST", "/v1/experiments/{name}/pause"): Role.ADMIN,
    ("POST", "/v1/experiments/{name}/stop"): Role.ADMIN,
    ("POST", "/v1/flagger/{hook}"): Role.ADMIN,
}
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # not in the schema
PROTECTED = [route for route, need in ROUTES.items() if isinstance(need, Role)]
EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
EVENT = {"event_id": "auth-1", "experiment": "ranker-v2", "unit": "user-1", "metric": "click"}
# Reads ask about a real experiment, so a pass is a 200; changes name one that does not exist,
# so a pass (404 or 422) changes nothing.
PARAMS = {"experiment": "ranker-v2", "path": "predict", "hook": "confirm-rollout"}
BODIES: dict[str, Any] = {
    "/v1/assign": {"units": ["user-1"]},
    "/v1/events": {"events": [EVENT]},
    "/v1/exposures": {
        "exposures": [{"experiment": "ranker-v2", "unit": "user-1", "variant": "control"}]
    },
    "/v1/predictions": {
        "experiment": "ranker-v2",
        "predictions": [{"request_id": "auth-1", "variant": "control", "score": 0.5}],
    },
    "/v1/experiments": {},
    "/v1/experiments/{name}": {},
    "/v1/experiments/{name}/phase": {"phase": "ab"},
    "/v1/flagger/{hook}": {"name": "ghost"},
}


def request(
    svc: Service, route: tuple[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    method, path = route
    method = "POST" if method == "*" else method
    params = {**PARAMS, "name": "ranker-v2" if method == "GET" else "ghost"}
    url = re.sub(r"{(\w+)(:path)?}", lambda m: params[m.group(1)], path)
    query = {"unit": "user-1"} if path.startswith("/v1/assign/") else None
    return httpx.request(
        method,
        svc.url + url,
        params=query,
        json=BODIES.get(path) if method != "GET" else None,
        headers=headers,
        timeout=30,
    )


def warmed(svc: Service) -> Service:
    """The service once /readyz is 200 (it is 503 while the analysis stack warms up), so every
    route answers for itself."""
    wait_until(lambda: httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200,
               "the service warmed up", timeout=120)  # fmt: skip
    return svc


def passed(r: httpx.Response) -> bool:
    """Past the role check: what the route itself answers to a good or a bad request."""
    return r.status_code in (200, 201, 404, 422)


@pytest.fixture(scope="module")
def seeded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'abmesh.db'}"
    store = open_store(url)
    store.put_experiment(load_spec(EXAMPLE))
    change_state(store, "ranker-v2", Action.START)
    store.close()
    return url


@pytest.fixture(scope="module")
def svc(seeded_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """As deployed: a token for every role."""
    service = warmed(start_service(seeded_url, tmp_path_factory.mktemp("roles")))
    yield service
    service.stop()


def test_every_route_has_a_role(tmp_path: Path) -> None:
    from assignment.app import create_app

    app = create_app(Settings(store_url=f"sqlite:///{tmp_path / 'a.db'}"))
    # Newer FastAPI keeps each included router as one entry; iter_route_contexts flattens them
    # (older versions list the routes themselves).
    flatten = getattr(fastapi.routing, "iter_route_contexts", lambda routes: routes)
    routes = set()
    for route in flatten(app.routes):
        methods = route.methods - {"HEAD"} if route.methods else {"*"}
        routes |= {(method, route.path) for method in methods}
    assert routes == set(ROUTES), "a route without an entry in ROUTES, or an entry too many"


def test_openapi_declares_the_schemes_and_what_each_route_needs(svc: Service) -> None:
    # As deployed: tokens for every role, no ABMESH_API_KEY, so assignment needs nothing.
    assert_security(httpx.get(f"{svc.url}/openapi.json").json(), api_key=False)


def test_openapi_requires_the_api_key_only_when_one_is_set(tmp_path: Path) -> None:
    from assignment.app import create_app

    store = f"sqlite:///{tmp_path / 'a.db'}"
    keyed = create_app(Settings(store_url=store, api_key="k", **TOKEN_SETTINGS)).openapi()
    assert_security(keyed, api_key=True)
    open_ = create_app(Settings(store_url=store, insecure=True)).openapi()
    assert "securitySchemes" not in open_["components"]
    for operations in open_["paths"].values():
        for operation in operations.values():
            assert "security" not in operation
            assert not {"401", "403"} & set(operation["responses"])


TOKEN_SETTINGS = {f"{role.value}_token": token for role, token in TOKENS.items()}


def assert_security(schema: dict[str, Any], *, api_key: bool) -> None:
    schemes = schema["components"]["securitySchemes"]
    expected_schemes = {
        "reader": ("http", "bearer"),
        "writer": ("http", "bearer"),
        "admin": ("http", "bearer"),
    } | ({"apiKey": ("apiKey", None)} if api_key else {})
    assert {name: (s["type"], s.get("scheme")) for name, s in schemes.items()} == expected_schemes
    if api_key:
        assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "x-api-key")
    documented = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            route = (method.upper(), path.replace("{path}", "{path:anything}"))
            documented.add(route)
            # The ext_authz check is documented under every method OpenAPI can name.
            need = ROUTES[route] if route in ROUTES else ROUTES[("*", route[1])]
            expected = (
                [{role.value: []} for role in need.holders]
                if isinstance(need, Role)
                else [{"apiKey": []}]
                if need == API_KEY and api_key
                else None
            )
            assert operation.get("security") == expected, route
            assert ("401" in operation["responses"]) == (expected is not None), route
    expected_routes = {(m, p) for m, p in ROUTES if m != "*" and p not in DOCS}
    extauthz = "/v1/extauthz/{path:anything}"
    methods = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")
    assert documented == expected_routes | {(m, extauthz) for m in methods}


def test_without_a_token_every_data_and_ingest_route_is_401(svc: Service) -> None:
    for route in PROTECTED:
        r = request(svc, route)
        assert r.status_code == 401, (route, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert "missing bearer token" in r.json()["error"]
        wrong = request(svc, route, {"Authorization": "Bearer not-a-token"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "wrong bearer token"), route
    for route in ROUTES.keys() - set(PROTECTED):
        assert passed(request(svc, route)), route


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_its_routes_and_only_them(svc: Service, role: Role) -> None:
    for route, need in ROUTES.items():
        r = request(svc, route, auth(role))
        if not isinstance(need, Role) or role in need.holders:
            assert passed(r), (route, r.status_code, r.text)
        else:
            assert r.status_code == 403, (route, r.status_code, r.text)
            assert r.json()["error"].startswith(f"the {role.value} token may not do this")


def test_reader_reads_writer_ingests(svc: Service) -> None:
    """The issue's two attacks: reading users' events, forging conversions."""
    reader, writer = auth(Role.READER), auth(Role.WRITER)
    forged = {"events": [{**EVENT, "event_id": "forged"}]}
    refused = httpx.post(f"{svc.url}/v1/events", json=forged, headers=reader)
    assert refused.status_code == 403
    assert (
        "it needs the writer token (ABMESH_WRITER_TOKEN) or the admin token"
        in (refused.json()["error"])
    )
    sent = httpx.post(f"{svc.url}/v1/events", json={"events": [EVENT]}, headers=writer)
    assert sent.json()["rejected"] == []
    raw = f"{svc.url}/v1/experiments/ranker-v2/events"
    assert httpx.get(raw, headers=writer).status_code == 403
    ids = [e["event_id"] for e in httpx.get(raw, headers=reader).json()["events"]]
    assert "auth-1" in ids
    assert "forged" not in ids
    stats = httpx.get(f"{svc.url}/v1/experiments/ranker-v2/stats", headers=reader)
    assert stats.json()["experiment"] == "ranker-v2"


def test_flagger_sends_the_admin_token_in_its_payload(svc: Service) -> None:
    def hook(token: str) -> int:
        payload = {"name": "ghost", "metadata": {"token": token}}
        return httpx.post(f"{svc.url}/v1/flagger/event", json=payload, timeout=30).status_code

    assert hook(TOKENS[Role.ADMIN]) == 404  # past the check: there is no experiment "ghost"
    assert hook(TOKENS[Role.READER]) == 403
    assert hook("not-a-token") == 401


def test_closed_by_default_naming_the_variable_to_set(seeded_url: str, tmp_path: Path) -> None:
    svc = warmed(start_service(seeded_url, tmp_path, tokens=False))
    try:
        for route in PROTECTED:
            for headers in (None, auth(Role.ADMIN)):
                r = request(svc, route, headers)
                need = ROUTES[route]
                assert isinstance(need, Role)
                assert (r.status_code, r.json()["error"]) == (
                    401,
                    f"the {need.value} API is closed: set {need.variable} (or"
                    f" {need.variable}_FILE), or run `abmesh serve --insecure` for local use",
                ), route
        for route in ROUTES.keys() - set(PROTECTED):
            assert passed(request(svc, route)), route
    finally:
        svc.stop()
    assert "no token for reader, writer, admin: their routes answer 401" in svc.output()


def test_insecure_opens_everything_and_says_so(seeded_url: str, tmp_path: Path) -> None:
    svc = warmed(start_service(seeded_url, tmp_path, tokens=False, insecure=True))
    try:
        for route in ROUTES:
            r = request(svc, route)
            assert passed(r), (route, r.status_code, r.text)
    finally:
        svc.stop()
    assert "INSECURE (--insecure, ABMESH_INSECURE): every route answers without a token" in (
        svc.output()
    )


def test_a_token_from_a_mounted_file(seeded_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "reader"
    secret.write_text("from-a-file\n")  # as `echo` writes it
    svc = start_service(seeded_url, tmp_path, tokens=False, reader_token_file=secret)
    try:
        stats = f"{svc.url}/v1/experiments/ranker-v2/stats"
        assert httpx.get(stats, headers={"Authorization": "Bearer from-a-file"}).status_code == 200
        assert httpx.get(stats, headers={"Authorization": "Bearer from"}).status_code == 401
        # Admin has no token here: the admin API stays closed.
        assert request(svc, ("DELETE", "/v1/experiments/{name}")).status_code == 401
    finally:
        svc.stop()


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"ABMESH_STORE": f"sqlite:///{tmp_path / 'a.db'}", **env})


def test_token_settings(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(" admin-from-file\n")
    read = settings(tmp_path, ABMESH_ADMIN_TOKEN_FILE=str(path), ABMESH_WRITER_TOKEN="w")
    assert read.tokens == {Role.ADMIN: "admin-from-file", Role.WRITER: "w"}
    assert not read.insecure
    assert settings(tmp_path, ABMESH_INSECURE="1").insecure
    assert not settings(tmp_path, ABMESH_INSECURE="false").insecure


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ABMESH_READER_TOKEN": "a", "ABMESH_READER_TOKEN_FILE": "/x"},
            "set ABMESH_READER_TOKEN or ABMESH_READER_TOKEN_FILE, not both",
        ),
        (
            {"ABMESH_ADMIN_TOKEN_FILE": "/nonexistent/token"},
            "ABMESH_ADMIN_TOKEN_FILE='/nonexistent/token': cannot read the token",
        ),
        ({"ABMESH_ADMIN_TOKEN_FILE": "EMPTY"}, "the token is empty"),
        ({"ABMESH_WRITER_TOKEN": "two words"}, "ABMESH_WRITER_TOKEN: a token is visible ASCII"),
        (
            {"ABMESH_READER_TOKEN": "same", "ABMESH_ADMIN_TOKEN": "same"},
            "ABMESH_READER_TOKEN and ABMESH_ADMIN_TOKEN hold the same token",
        ),
        ({"ABMESH_INSECURE": "maybe"}, "ABMESH_INSECURE='maybe' must be 1 or 0"),
    ],
)
def test_bad_token_settings_name_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    env = {k: str(empty) if v == "EMPTY" else v for k, v in env.items()}
    with pytest.raises(SettingsError, match=re.escape(message)):
        settings(tmp_path, **env)


def test_settings_never_show_a_token() -> None:
    settings = Settings(store_url="sqlite://", admin_token="adm1n", reader_token="r3ad",
                        writer_token="wr1te", api_key="k3y")  # fmt: skip
    assert not {"adm1n", "r3ad", "wr1te", "k3y"} & set(re.findall(r"\w+", repr(settings)))
