"""Envoy / Istio ext_authz HTTP check: the gateway asks, abmesh answers 200 with the group header.

Envoy sends the original method, path (after the configured prefix) and allowed headers.  The
unit comes from a configured header or cookie.  A header override (a tester header the gateway
sets from a verified token, see manifests/istio/ingress-ext-authz.yaml) applies with no unit.
The answer is always 200 — a failed check would block the user's request, while a check
without a group header only sends it to the stable model — so a missing or malformed unit, an
unknown experiment, or an internal error give no header (or, as configured, the control group)
instead of an error status.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request, Response
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.types import Receive, Scope, Send

from assignment.assign import Assignment, Reason, forced_by_headers
from assignment.service import ServiceState
from experiments.names import unit_problem
from experiments.store import ExperimentRecord

log = logging.getLogger("abmesh.extauthz")


class AnythingConvertor(PathConvertor):
    """Starlette's `path` stops at a newline (`.*`): a request for `/a%0Ab` would miss the
    check and get a 404, which Envoy turns into a denial."""

    regex = r"[\s\S]*"


register_url_convertor("anything", AnythingConvertor())
router = APIRouter(prefix="/v1", tags=["ext_authz"])
PATH_PREFIX = "/v1/extauthz"
_FORCED = (Reason.OVERRIDE_HEADER, Reason.OVERRIDE_UNIT)


@router.get(
    "/extauthz/{path:anything}",
    response_class=Response,  # no body: OpenAPI shows no content type
    responses={
        200: {
            "description": "Always, with an empty body; the group headers carry the answer.",
            "headers": {
                "x-user-group": {
                    "description": "One header per experiment, named by its spec's `header`"
                    " (x-user-group by default), valued with the unit's group; absent when the"
                    " request has no usable unit and ABMESH_EXTAUTHZ_UNASSIGNED is none.",
                    "schema": {"type": "string"},
                }
            },
        }
    },
    # Declared here rather than as an argument: a path is never invalid, so no 422 is listed.
    openapi_extra={
        "parameters": [
            {
                "name": "path",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The original request's path, as Envoy appends it.",
            }
        ]
    },
)
async def extauthz_check(request: Request) -> Response:
    """Carries `<experiment header>: <group>` for Envoy's allowed_upstream_headers.  Envoy
    forwards the original method, so every method is answered alike (OpenAPI shows GET)."""
    path = request.path_params.get("path", "")
    state: ServiceState = request.app.state.abmesh  # no dependency injection on the hot path
    try:
        headers = await group_headers(request, state)
    except Exception:
        log.exception("ext_authz check failed for path %r; answering without a group", path)
        state.telemetry.extauthz_errors.inc()
        headers = {}
    return Response(status_code=200, headers=headers)


class AnyMethod:
    """The same check as an ASGI app, which Starlette routes for every method (PROPFIND, PURGE
    and other extension methods included): a 405 would reach the user as a denial.  create_app
    mounts it ahead of the routers; the GET route above documents the check in OpenAPI."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await extauthz_check(Request(scope, receive))
        await response(scope, receive, send)


def _experiments(state: ServiceState) -> Sequence[ExperimentRecord]:
    names = state.settings.extauthz_experiments
    if names:
        return [state.cache.experiments[n] for n in names if n in state.cache.experiments]
    return state.cache.running


def _text(raw: str | None) -> str | None:
    """A header value as sent: HTTP servers decode header bytes as latin-1, so a UTF-8 unit id
    arrives garbled; undo that (None if the bytes are not UTF-8)."""
    if raw is None:
        return None
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


async def group_headers(request: Request, state: ServiceState) -> dict[str, str]:
    settings = state.settings
    unit = _text(request.headers.get(settings.extauthz_unit_header))
    if unit is None and settings.extauthz_unit_cookie is not None:
        unit = _text(request.cookies.get(settings.extauthz_unit_cookie))
    if unit is not None and unit_problem(unit) is not None:
        unit = None
    # Experiments may share a header (disjoint layer slices): a unit's real assignment, in any
    # of them, beats another's control; control fills a header only when nobody assigned it.
    assigned: dict[str, str] = {}
    controls: dict[str, str] = {}
    for record in _experiments(state):
        spec = record.spec
        if spec.header not in assigned:
            if unit is not None:
                a: Assignment | None = await state.assign(record, unit, request.headers)
            else:
                a = forced_by_headers(spec, request.headers)
            if a is not None and (a.in_experiment or a.reason in _FORCED):
                assigned[a.header_name] = a.header_value
                continue
        controls.setdefault(spec.header, spec.control_variant.header_value)
    if settings.extauthz_unassigned == "control":
        return {**controls, **assigned}
    return assigned
