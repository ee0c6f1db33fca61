"""The assignment service: `create_app()` builds the FastAPI app from `Settings`.

Errors: every error a client can cause is a JSON body `{"error": "...", "problems": [...]}`
naming the field, with 401, 403, 404, 405 (with `Allow`), 409, 413 or 422; a store that is down or
too slow (an admin call, an event batch), or configs not loaded yet, is a 503 with Retry-After.
Who may call which route: assignment/auth.py and assignment/deps.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assignment.auth import Role
from assignment.config import Settings
from assignment.openapi import describe
from assignment.request_context import RequestIdMiddleware
from assignment.routes import (
    assign,
    configs,
    events,
    experiments,
    exposures,
    extauthz,
    health,
    integrations,
    predictions,
    reports,
)
from assignment.service import ServiceState
from assignment.telemetry import LatencyMiddleware
from assignment.warmup import warm_up
from experiments.errors import (
    AbmeshError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SpecError,
    StoreError,
)
from experiments.store import open_store, redact

log = logging.getLogger("abmesh.app")
FIRST_LOAD_WAIT = 2.0  # seconds start-up waits for the first config load

STATUS = {
    NotFoundError: 404,
    ConflictError: 409,
    SpecError: 422,
    InvalidInputError: 422,
    StoreError: 503,
}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # what a 405 may allow


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    _warn_about_access(settings)
    state = ServiceState(settings, open_store(settings.store_url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(state.cache.poll(settings.refresh_interval, stop)),
            asyncio.create_task(state.exposures.run(settings.exposure_flush_interval, stop)),
            asyncio.create_task(state.housekeeping(stop)),
        ]
        if settings.fold != "off":
            tasks.append(asyncio.create_task(state.folding.run(stop)))
        warming = asyncio.create_task(_warm_up(state))
        # Start serving once the configs are loaded, or after FIRST_LOAD_WAIT on a store that
        # does not answer: a closed port would fail the liveness probe, while an open one
        # answers 503 with Retry-After until the configs load.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.cache.tried.wait(), FIRST_LOAD_WAIT)
        try:
            yield
        finally:
            stop.set()  # the loops finish what they are writing, then end
            await asyncio.gather(*tasks, warming, return_exceptions=True)
            await state.exposures.flush()  # a graceful shutdown loses no exposure
            if state.exposures.size:
                log.error("%d exposures not written: the store is down", state.exposures.size)
            state.lookups.shutdown(wait=False)
            state.api.shutdown(wait=False)
            state.writer.shutdown(wait=True)
            state.folding.shutdown()
            state.store.close()

    app = FastAPI(
        redirect_slashes=False,  # a stray slash is a JSON 404, not a bare redirect
        title="abmesh",
        summary="Sticky assignment of units to model variants, for service-mesh rollouts.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.abmesh = state
    app.router.routes.append(
        Route(
            extauthz.PATH_PREFIX + "/{path:anything}", extauthz.AnyMethod(), include_in_schema=False
        )
    )
    for router in (
        assign.router,
        extauthz.router,
        configs.router,
        events.router,
        exposures.router,
        experiments.router,
        health.router,
        integrations.router,
        predictions.router,
        reports.router,
        reports.index_router,
    ):
        app.include_router(router)
    app.openapi = describe(app, settings)  # type: ignore[method-assign]
    _add_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, histogram=state.telemetry.latency)
    app.add_middleware(RequestIdMiddleware)
    return app


def _warn_about_access(settings: Settings) -> None:
    """Say at start-up what is open, and why a role's routes will answer 401."""
    if settings.insecure:
        log.warning(
            "INSECURE (--insecure, ABMESH_INSECURE): every route answers without a token;"
            " for local use only, never where others can reach this service"
        )
        return
    closed = [role for role in Role if role not in settings.tokens]
    if closed:
        log.warning(
            "no token for %s: %s (set %s, or the _FILE variants)",
            ", ".join(role.value for role in closed),
            "only the admin token opens their routes"
            if Role.ADMIN in settings.tokens
            else "their routes answer 401",
            ", ".join(role.variable for role in closed),
        )


async def _warm_up(state: ServiceState) -> None:
    if not state.settings.warmup:
        state.warmed_up = True
        return
    try:
        seconds = await asyncio.to_thread(warm_up)
    except Exception:  # a bug: the routes that need the stack will show it; assignment works
        log.exception("warm-up failed; the first verdict or report may be slow")
    else:
        log.info("analysis stack warmed up in %.2f s", seconds)
    state.warmed_up = True


def _error(
    status: int,
    message: str,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, object] = {"error": message}
    if problems:
        body["problems"] = problems
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AbmeshError)
    async def abmesh_error(request: Request, exc: AbmeshError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        if isinstance(exc, StoreError):
            request.app.state.abmesh.telemetry.store_errors.labels("admin").inc()
        problems = exc.problems if isinstance(exc, SpecError) else None
        # A store outage is temporary: tell clients when to retry (the batch, whole).
        retry = {"Retry-After": "1"} if status == 503 else None
        return _error(status, redact(str(exc)), problems, headers=retry)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(err) for err in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(problems), problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's answer to a body it could not decode (not UTF-8): a 422 like any
            # other body that is not JSON, as documented.
            problem = f"body: not valid JSON: {exc.__cause__}"
            return _error(422, f"invalid request: {problem}", [problem])
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            message = f"method {request.method} is not allowed on {request.url.path}"
            message += f" (allowed: {allowed})"
            headers = {**(headers or {}), "Allow": allowed}
        return _error(exc.status_code, message, headers=headers)


def _problem(err: Mapping[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":  # loc is ("body", character offset)
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"body: not valid JSON{where}: {err.get('ctx', {}).get('error', 'invalid')}"
    return f"{'.'.join(str(part) for part in loc)}: {err.get('msg', 'invalid')}"


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path.  Starlette's own 405 names only the first
    matching route's, so POST on /v1/experiments/NAME would be told only GET."""
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


class BodyLimitMiddleware:
    """413 for request bodies over `limit` bytes, declared or streamed, before they are read.
    Not on the ext_authz check: it never reads the body, and must never refuse a request."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(extauthz.PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error(
                413, f"request body of {int(declared)} bytes exceeds the limit of {self.limit}"
            )(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body exceeds the limit of {self.limit} bytes")
            return message

        await self.app(scope, counted, send)
