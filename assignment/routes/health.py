"""Liveness, readiness and Prometheus metrics.

/readyz is 503 until the configs are loaded, and while they cannot be refreshed (store
unreachable, or a config this version cannot read), with the reasons in the body.  During a
store outage every replica is in that state, and taking them all out of a Service would turn a
store outage into a full one, although they still answer from the cache; so
`?allow_cached=true` (for Kubernetes readiness probes) answers 200 while cached configs are
served, still listing the reasons.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from assignment.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep, allow_cached: bool = False) -> JSONResponse:
    """Ready when the store is reachable and the configs are loaded."""
    cache = state.cache
    reasons = []
    if not cache.loaded:
        reasons.append("configs not loaded yet")
    if cache.error is not None:
        reasons.append(f"configs not refreshed: {cache.error}")
    elif cache.loaded and cache.age() > 5 * state.settings.refresh_interval + 10:
        reasons.append(f"configs not refreshed for {cache.age():.0f} s")
    body: dict[str, Any] = {
        "status": "degraded" if reasons else "ready",
        "experiments": len(cache.experiments),
        "config_age_seconds": round(cache.age(), 3) if cache.loaded else None,
        "reasons": reasons,
    }
    serving = cache.loaded and allow_cached
    return JSONResponse(body, status_code=200 if not reasons or serving else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,  # what OpenAPI shows: text, not the default JSON
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def metrics(state: StateDep) -> Response:
    return Response(state.telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)
