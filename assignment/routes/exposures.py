"""Exposures reported by clients that assign in-process (local evaluation): the variant each
unit was served, recorded as it is.  Deriving it again here, as `POST /v1/assign` does, would
record another arm for a unit served before a split change the server already knows of."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from assignment import collector
from assignment.deps import StateDep, WriterDeps
from assignment.models import ErrorOut, ExposuresIn, ExposuresOut
from assignment.routes.strict_json import StrictJSONRoute

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 413, 422, 503)
}
# Rejections a replica with configs older than the client's would make: a new experiment, one
# just started, a spec changed a moment ago.
STALE = frozenset({"experiment", "state", "generation"})


@router.post(
    "/exposures",
    response_model=ExposuresOut,
    responses=ERRORS,
    tags=["assign"],
    dependencies=WriterDeps,
)
async def post_exposures(body: ExposuresIn, state: StateDep) -> dict[str, Any]:
    """Record the variants a client served.  A bad item is rejected alone; the rest is buffered
    like the exposures of `/v1/assign` (a unit's first exposure in the phase counts, later ones
    change nothing), so a retried batch is harmless."""
    limit = state.settings.max_events
    if len(body.exposures) > limit:
        raise HTTPException(
            413, f"batch of {len(body.exposures)} exposures exceeds the limit of {limit}"
        )
    if state.exposures.full:  # the store is not taking the backlog: wait, do not drop
        raise HTTPException(
            503,
            "the exposure buffer is full (the store is not taking exposures): retry",
            headers={"Retry-After": "1"},
        )
    configs = state.cache.current()
    valid, rejected = collector.parse_exposures(body.exposures, configs.experiments)
    if any(r.reason in STALE for _, r in rejected):
        await state.lookups.call(state.cache.refresh, deadline=state.settings.events_timeout)
        configs = state.cache.configs
        valid, rejected = collector.parse_exposures(body.exposures, configs.experiments)
    for _, e in valid:
        record = e.record
        state.exposures.add(
            record.name,
            record.phase,
            configs.plans[record.name],
            e.unit,
            e.variant,
            at=e.at,
            generation=e.generation,
            segments=e.segments,
        )
    counter = state.telemetry.exposures_reported
    counter.labels("accepted", "").inc(len(valid))
    for _, rejection in rejected:
        counter.labels("rejected", rejection.reason).inc()
    return {
        "accepted": len(valid),
        "rejected": [{"index": i, "error": str(r)} for i, r in rejected],
    }
