"""Envoy / Istio ext_authz HTTP check: the gateway asks, abmesh answers 200 with the group header.

Envoy sends the original method, path (after the configured prefix) and allowed headers.  The
unit comes from a configured header or cookie.  The answer is always 200 — a failed check would
block the user's request, while a check without a group header only sends it to the stable
model — so a missing or malformed unit, an unknown experiment, or an internal error give no
header (or, as configured, the control group) instead of an error status.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request, Response

from assignment.assign import Reason
from assignment.service import ServiceState
from experiments.names import unit_problem
from experiments.store import ExperimentRecord

log = logging.getLogger("abmesh.extauthz")
router = APIRouter(prefix="/v1", tags=["ext_authz"])
# Envoy forwards the original method.  OpenAPI shows the check once (GET); one operation per
# method would repeat it and clash on operation ids.
OTHER_METHODS = ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_FORCED = (Reason.OVERRIDE_HEADER, Reason.OVERRIDE_UNIT)


@router.api_route("/extauthz/{path:path}", methods=["GET"])
@router.api_route("/extauthz/{path:path}", methods=OTHER_METHODS, include_in_schema=False)
async def extauthz_check(path: str, request: Request) -> Response:
    """Always 200; carries `<experiment header>: <group>` for Envoy's allowed_upstream_headers."""
    state: ServiceState = request.app.state.abmesh  # no dependency injection on the hot path
    try:
        headers = await group_headers(request, state)
    except Exception:
        log.exception("ext_authz check failed for path %r; answering without a group", path)
        state.telemetry.extauthz_errors.inc()
        headers = {}
    return Response(status_code=200, headers=headers)


def _experiments(state: ServiceState) -> Sequence[ExperimentRecord]:
    names = state.settings.extauthz_experiments
    if names:
        return [state.cache.experiments[n] for n in names if n in state.cache.experiments]
    return state.cache.running


async def group_headers(request: Request, state: ServiceState) -> dict[str, str]:
    settings = state.settings
    unit = request.headers.get(settings.extauthz_unit_header)
    if unit is None and settings.extauthz_unit_cookie is not None:
        unit = request.cookies.get(settings.extauthz_unit_cookie)
    if unit is not None and unit_problem(unit) is not None:
        unit = None
    control = settings.extauthz_unassigned == "control"
    out: dict[str, str] = {}
    for record in _experiments(state):
        spec = record.spec
        if spec.header in out:  # two experiments on one header: the first (by name) owns it
            continue
        if unit is None:
            if control:
                out[spec.header] = spec.control_variant.header_value
            continue
        a = await state.assign(record, unit, request.headers)
        if a.in_experiment or a.reason in _FORCED or control:
            out[a.header_name] = a.header_value
    return out
