"""Experiment configs for clients that assign in-process (local evaluation).

Behind the reader token, not the API key: a spec holds its overrides (the allowlisted unit
ids, the header value that forces a variant), its guardrails and its rollout target, which the
apps that only assign never need; a client that assigns locally is given a reader token."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from assignment.deps import ReaderDeps, StateDep
from assignment.models import ConfigsOut, ErrorOut
from experiments.reporting import record_data

router = APIRouter(prefix="/v1", tags=["assign"], dependencies=ReaderDeps)


@router.get(
    "/configs",
    response_model=ConfigsOut,
    responses={code: {"model": ErrorOut} for code in (401, 403, 503)},
)
def get_configs(request: Request, state: StateDep) -> Response:
    """Every experiment with its status, spec and generation (a client assigning locally
    reports it with the exposures: POST /v1/exposures).  Send the ETag back as If-None-Match:
    the answer is 304 with no body while nothing changed."""
    configs = state.cache.current()  # before the first load: 503, not "no experiments"
    etag = f'"{configs.epoch}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    body = {
        "epoch": configs.epoch,
        "experiments": [record_data(r) for r in configs.experiments.values()],
    }
    return Response(
        json.dumps(body).encode(), media_type="application/json", headers={"ETag": etag}
    )
