"""Dependencies shared by the routes, as `Annotated` aliases, and the role checks
(assignment/auth.py says who may do what).

Every route declares what it needs: `ReaderDeps`, `WriterDeps` or `AdminDeps` (a bearer token of
a role that holds the permission), `ApiKeyDeps` (the API key, when one is configured), or
nothing (health, metrics, docs, ext_authz).  tests/test_auth.py walks every route of the app
against a table of these, so a route added without one fails the tests.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPBearer

from assignment.auth import Role, role_of, same_secret
from assignment.config import Settings
from assignment.service import ServiceState

# Dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# hop that cost the assign endpoint two thirds of its throughput.


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.abmesh
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]

# The security schemes, for OpenAPI: a route lists one per role whose token it accepts.  They
# only parse the header (auto_error=False); the checks below decide.
BEARER = {
    role: HTTPBearer(
        scheme_name=role.value,
        auto_error=False,
        description=f"The {role.value} token: {role.variable} (or {role.variable}_FILE).",
    )
    for role in Role
}
API_KEY = APIKeyHeader(
    name="x-api-key",
    scheme_name="apiKey",
    auto_error=False,
    description="Needed only when the service sets ABMESH_API_KEY.",
)
# For the routes that skip dependency injection and declare their security in openapi_extra.
API_KEY_SECURITY: list[dict[str, list[str]]] = [{API_KEY.scheme_name: []}]


def bearer_token(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return given.strip() or None


def authorise(settings: Settings, need: Role, given: str | None) -> None:
    """401 without a right token, 403 with the right token of a role that may not do this."""
    if settings.insecure:
        return
    tokens = settings.tokens
    who = " or ".join(f"the {role.value} token ({role.variable})" for role in need.holders)
    if not any(role in tokens for role in need.holders):
        raise HTTPException(
            401,
            f"the {need.value} API is closed: set {need.variable} (or {need.variable}_FILE),"
            " or run `abmesh serve --insecure` for local use",
        )
    if given is None:
        raise HTTPException(
            401,
            f"missing bearer token: send 'Authorization: Bearer <token>' with {who}",
            headers={"WWW-Authenticate": "Bearer"},
        )
    role = role_of(given, tokens)
    if role is None:
        raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    if role not in need.holders:
        raise HTTPException(403, f"the {role.value} token may not do this: it needs {who}")


class _Guard:
    """The check of one role, as a dependency."""

    def __init__(self, need: Role) -> None:
        self.need = need

    async def __call__(self, request: Request, state: StateDep) -> None:
        authorise(state.settings, self.need, bearer_token(request))


def _needs(role: Role) -> list[DependsParam]:
    return [*(Security(BEARER[holder]) for holder in role.holders), Depends(_Guard(role))]


def check_api_key(request: Request, state: ServiceState) -> None:
    """The API key check itself, for the hot path that skips dependency injection."""
    key = state.settings.api_key
    if key is None:
        return
    given = request.headers.get("x-api-key")
    if given is None:
        raise HTTPException(401, "missing API key: send the 'x-api-key' header")
    if not same_secret(given, key):
        raise HTTPException(401, "wrong API key")


async def require_api_key(request: Request, state: StateDep) -> None:
    check_api_key(request, state)


ReaderDeps = _needs(Role.READER)
WriterDeps = _needs(Role.WRITER)
AdminDeps = _needs(Role.ADMIN)
ApiKeyDeps = [Security(API_KEY), Depends(require_api_key)]
