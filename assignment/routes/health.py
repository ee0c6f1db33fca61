"""Liveness, readiness and Prometheus metrics.

/readyz (the readiness probe) is 503 until the configs have been loaded once and the analysis
stack is warmed up (assignment.warmup), then 200: a replica answers from its cached configs
through a store outage (sticky lookups fall back to the hash, exposures are buffered), and
taking every replica out of the Service because the store is down would turn a store outage
into a full one.  The body still says "degraded", with the reasons, while the configs cannot be
refreshed (store unreachable, or a config this version cannot read) or are stale.
`/readyz?strict=true` answers 503 in that state too: for operators and alerts that want to know
whether the store is reachable, not for a probe.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from assignment.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class ReadyOut(BaseModel):
    status: Literal["starting", "degraded", "ready"]
    experiments: int
    config_age_seconds: float | None
    reasons: list[str]


@router.get(
    "/readyz",
    responses={
        200: {"model": ReadyOut, "description": "Ready (perhaps degraded: see reasons)."},
        503: {"model": ReadyOut, "description": "Starting; or, when strict, degraded."},
    },
)
async def readyz(state: StateDep, strict: bool = False) -> JSONResponse:
    """Ready once configs are loaded and the warm-up is done; `strict`: and currently fresh."""
    cache = state.cache
    starting = []
    if not cache.loaded:
        starting.append("configs not loaded yet")
    if not state.warmed_up:
        starting.append("warming up")
    reasons = []
    if cache.error is not None:
        reasons.append(f"configs not refreshed: {cache.error}")
    elif cache.loaded and cache.age() > 5 * state.settings.refresh_interval + 10:
        reasons.append(f"configs not refreshed for {cache.age():.0f} s")
    body: dict[str, Any] = {
        "status": "starting" if starting else "degraded" if reasons else "ready",
        "experiments": len(cache.experiments),
        "config_age_seconds": round(cache.age(), 3) if cache.loaded else None,
        "reasons": starting + reasons,
    }
    ready = not starting and not (strict and reasons)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,  # what OpenAPI shows: text, not the default JSON
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def metrics(state: StateDep) -> Response:
    return Response(state.telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)
