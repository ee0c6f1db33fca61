"""Dependencies shared by the routes, as `Annotated` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from assignment.service import ServiceState

# Dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# hop that cost the assign endpoint two thirds of its throughput.


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.abmesh
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def same_secret(given: str, expected: str) -> bool:
    # Constant-time: the time taken does not tell how much of a guess was right.
    return hmac.compare_digest(given.encode(), expected.encode())


async def require_admin(request: Request, state: StateDep) -> None:
    token = state.settings.admin_token
    if token is None:
        raise HTTPException(401, "the admin API is disabled: set ABMESH_ADMIN_TOKEN")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401,
            "missing bearer token: send 'Authorization: Bearer <ABMESH_ADMIN_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not same_secret(given.strip(), token):
        raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(request: Request, state: StateDep) -> None:
    check_api_key(request, state)


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


AdminDep = Depends(require_admin)
ApiKeyDep = Depends(require_api_key)
