"""Assignment endpoints: one unit (GET, also sets the routing header) or a batch (POST)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response

from assignment.assign import check_units
from assignment.collector import RejectedEventError, parse_segments
from assignment.deps import API_KEY_SECURITY, ApiKeyDeps, StateDep, check_api_key
from assignment.models import (
    AssignmentOut,
    BatchAssignIn,
    BatchAssignOut,
    ErrorOut,
    assignment_body,
)
from assignment.routes.strict_json import StrictJSONRoute
from assignment.service import ServiceState
from experiments.errors import InvalidUnitError
from experiments.names import UNIT_SCHEMA

router = APIRouter(prefix="/v1", tags=["assign"], route_class=StrictJSONRoute)
BULK_WAIT_S = 1.0  # how long a batch waits for room in a full exposure buffer
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 404, 422, 503)
}


@router.get(
    "/assign/{experiment}",
    response_model=AssignmentOut,
    responses=ERRORS,
    openapi_extra={
        "security": API_KEY_SECURITY,
        "parameters": [
            {"name": "experiment", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "unit",
                "in": "query",
                "required": True,
                "schema": UNIT_SCHEMA,
                "description": "The unit id (user, session, device).",
            },
            {
                "name": "segment.{attribute}",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "The unit's value of a segment the spec declares, e.g."
                " segment.country=DE: recorded with the exposure for per-segment analysis.",
            },
        ],
    },
)
async def assign_unit(request: Request) -> Response:
    """The variant of one unit, with the header to route on (also set on this response).
    Request headers may force a variant through the spec's overrides."""
    # The hot path reads its state, key and parameters itself (they are declared for OpenAPI
    # in openapi_extra): FastAPI's dependency and parameter solving cost this endpoint a
    # fifth of its throughput (wrk: 8.0k against 10.2k requests/s without).
    state: ServiceState = request.app.state.abmesh
    check_api_key(request, state)
    experiment = request.path_params["experiment"]
    unit, given = _query(request.scope["query_string"])
    record = state.cache.get(experiment)
    try:
        segments = parse_segments(given or None, record.spec)
    except RejectedEventError as exc:
        raise HTTPException(422, f"query.segment.{str(exc).removeprefix('segments.')}") from None
    a = await state.assign(record, unit, request.headers, segments)
    body = json.dumps(assignment_body(unit, a)).encode()
    return Response(body, media_type="application/json", headers={a.header_name: a.header_value})


@router.post(
    "/assign",
    response_model=BatchAssignOut,
    responses={**ERRORS, 413: {"model": ErrorOut}},
    dependencies=ApiKeyDeps,
)
async def assign_batch(body: BatchAssignIn, state: StateDep) -> Response:
    """Many units in one or more experiments (default: every running experiment)."""
    if body.experiments is None:
        records = list(state.cache.current().running)
    else:
        records = [state.cache.get(name) for name in dict.fromkeys(body.experiments)]
    if not records:  # assign_many checks the units; with no experiment running, nobody would
        check_units(body.units)
    size = len(body.units) * max(len(records), 1)
    if size > state.settings.max_batch:
        raise HTTPException(
            413,
            f"batch of {len(body.units)} units x {len(records)} experiments = {size} assignments"
            f" exceeds the limit of {state.settings.max_batch}",
        )
    # A bulk caller waits (briefly) for room in a full exposure buffer: a burst then goes at
    # the pace of the store instead of losing exposures.  Single assignments never wait.
    await state.exposures.room(BULK_WAIT_S)
    out = []
    for record in records:
        results = await state.assign_many(record, body.units, body.headers, bulk=True)
        out += [assignment_body(u, a) for u, a in zip(body.units, results, strict=True)]
    return Response(json.dumps({"assignments": out}).encode(), media_type="application/json")


def _query(query: bytes) -> tuple[str, dict[str, str]]:
    """The one `unit` of a query string and its `segment.<attribute>` values, decoded strictly:
    bytes that are not UTF-8 are a 422, not a U+FFFD that would put every such id into one
    bucket."""
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidUnitError("query.unit: the unit is not valid UTF-8") from None
    units = [value for key, value in pairs if key == "unit"]
    if not units:
        raise HTTPException(422, "query.unit: Field required")
    if len(units) > 1:
        raise HTTPException(422, "query.unit: give the unit once")
    segments: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith("segment.") and segments.setdefault(key[8:], value) != value:
            raise HTTPException(422, f"query.{key}: give it once")
    return units[0], segments
