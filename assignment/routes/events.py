"""Event ingest (the writer token), and the statistics, snapshots and raw events folded from
it (the reader token)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from assignment import collector, fast_events
from assignment.cache import Configs
from assignment.deps import ReaderDeps, StateDep, WriterDeps
from assignment.models import ErrorOut, EventsIn, EventsOut
from assignment.routes.bounded import bounded
from assignment.routes.events_body import EventsRoute, typed_events
from assignment.routes.strict_json import StrictJSONRoute, loads_unique
from experiments.report_segments import segments_answer
from experiments.reporting import phase_report

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422, 503)
}


async def post_events(body: EventsIn, request: Request, state: StateDep) -> dict[str, Any]:
    """Ingest a batch idempotently (by event_id).  A bad item is rejected alone; the rest is
    applied.  503 with Retry-After when the store is down or has not answered within
    `events_timeout`: resend the whole batch, events already applied come back as duplicates."""
    limit = state.settings.max_events
    if len(body.events) > limit:
        raise HTTPException(413, f"batch of {len(body.events)} events exceeds the limit of {limit}")
    until = time.monotonic() + state.settings.events_timeout  # one deadline for the request
    configs = state.cache.current()
    parsed = await _parse(body, request, configs)
    if any(r.reason == "experiment" for _, r in parsed.rejected):
        # Perhaps created a moment ago on another replica: look again before refusing.
        await state.lookups.call(state.cache.refresh, deadline=until - time.monotonic())
        configs = state.cache.configs
        parsed = await _parse(body, request, configs)
    # Validation runs here, folding on the writer thread: the two overlap across requests.
    outcome = await state.write(
        collector.ingest,
        state.store,
        parsed,
        configs.experiments,
        configs.plans,
        deadline=until - time.monotonic(),
    )
    for name in parsed.by_experiment:
        state.folding.appended(name)
    counter = state.telemetry.events
    counter.labels("accepted", "").inc(outcome.accepted)
    counter.labels("duplicate", "").inc(outcome.duplicates)
    for _, rejection in outcome.rejected:
        counter.labels("rejected", rejection.reason).inc()
    return {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": [
            {"index": i, "error": str(r)} for i, r in sorted(outcome.rejected, key=lambda x: x[0])
        ],
    }


# Its own route class: the body is decoded by `fast_events` when it can be (see events_body).
router.add_api_route(
    "/events",
    post_events,
    methods=["POST"],
    response_model=EventsOut,
    responses=ERRORS,
    tags=["events"],
    dependencies=WriterDeps,
    route_class_override=EventsRoute,
)


async def _parse(body: EventsIn, request: Request, configs: Configs) -> collector.Parsed:
    """The fast path's events when it answers, else each item checked on its own (on the items
    as `loads_unique` decodes them: the fast path's typed ones lack what the errors quote)."""
    typed = typed_events(request)
    if typed is None:
        items = body.events
    else:
        parsed = fast_events.parse_events(typed, configs.experiments, configs.plans)
        if parsed is not None:
            return parsed
        items = loads_unique(await request.body())["events"]
    return collector.parse_events(items, configs.experiments, configs.plans)


@router.get("/experiments/{name}/stats", tags=["stats"], responses=ERRORS, dependencies=ReaderDeps)
@bounded
def get_stats(name: str, state: StateDep, phase: str | None = None) -> dict[str, Any]:
    """Per-arm sufficient statistics of a phase (default: the current one), after folding what
    was appended before the request for up to half the API deadline; `fold` says how far."""
    record = state.store.get_experiment(name)
    return phase_report(state.store, record, phase, settle=state.settings.api_timeout / 2)


@router.get(
    "/experiments/{name}/segments", tags=["stats"], responses=ERRORS, dependencies=ReaderDeps
)
@bounded
def get_segments(name: str, state: StateDep, phase: str | None = None) -> dict[str, Any]:
    """Per segment (attribute = value) and treatment: the effect with its always-valid interval,
    Benjamini–Hochberg flags across segments, the Bonferroni rule the rollout acts on, a harm
    confined to one segment, and the sample ratio per segment (docs/segments.md)."""
    record = state.store.get_experiment(name)
    report = phase_report(state.store, record, phase, settle=state.settings.api_timeout / 2)
    return segments_answer(record, report)


@router.get(
    "/experiments/{name}/snapshots", tags=["stats"], responses=ERRORS, dependencies=ReaderDeps
)
@bounded
def get_snapshots(name: str, state: StateDep, phase: str | None = None) -> dict[str, Any]:
    """The statistics as they were at each snapshot, oldest first."""
    state.store.get_experiment(name)  # 404 for an unknown experiment
    return {
        "experiment": name,
        "snapshots": [
            {"phase": s.phase, "at": s.at, "arms": s.stats}
            for s in state.store.snapshots(name, phase)
        ],
    }


@router.get("/experiments/{name}/events", tags=["stats"], responses=ERRORS, dependencies=ReaderDeps)
@bounded
def get_events(
    name: str,
    state: StateDep,
    since: Annotated[float, Query(ge=0, description="Received at or after (unix s).")] = 0.0,
    after: Annotated[
        str | None,
        Query(
            max_length=128,
            description="Event id received at `since` to start "
            "after: the last event of the previous page.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    """Raw events kept for the retention period, in (received_at, event_id) order.  Page with
    `since` and `after` = the last event's received_at and event_id."""
    state.store.get_experiment(name)
    events = state.store.raw_events(name, since=since, after=after, limit=limit)
    return {"experiment": name, "events": events}
