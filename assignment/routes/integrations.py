"""Verdicts for controllers that are not abmesh's own.

- `GET /v1/experiments/{name}/decision` for Argo Rollouts' `web` metric provider: always 200
  with `{"decision": promote|rollback|pause|continue|no_difference, "guardrails_ok", ...}`
  (Argo turns any non-2xx into a measurement error, not a verdict), behind the reader token.
  An experiment without operational guardrails (and a service without Prometheus for the
  default ones) reports `guardrails_configured: false`, never `guardrails_ok: true`.
- `POST /v1/flagger/{hook}` for Flagger's webhooks; `rollout` and `confirm-traffic-increase`
  answer 412 while no guardrails are configured.  Flagger passes on 200–202 only (its code
  fails on status > 202, so 204 would count as a failure) and cannot send headers, so the
  admin token may come in the payload's `metadata.token` (else in `Authorization: Bearer`);
  `metadata.experiment` names the experiment (default: the canary's name).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from assignment.auth import Role
from assignment.deps import BEARER, ReaderDeps, StateDep, authorise, bearer_token
from assignment.models import ErrorOut
from assignment.routes.bounded import bounded, bounded_call
from assignment.routes.strict_json import StrictJSONRoute
from assignment.service import ServiceState

router = APIRouter(tags=["integrations"], route_class=StrictJSONRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 412, 422, 503)
}
# Every webhook type Flagger has (pkg/apis/flagger/v1beta1: HookType).
Hook = Literal["confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
               "confirm-promotion", "post-rollout", "rollback", "event"]  # fmt: skip
RECORDED = ("event", "post-rollout")  # told, not asked: kept in the audit log, always 200


class FlaggerPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(default="", max_length=253)
    phase: str = Field(default="", max_length=100)
    checksum: str = Field(default="", max_length=200)
    metadata: dict[str, str] = Field(default_factory=dict)


def _verdict(state: ServiceState, name: str) -> dict[str, Any]:
    # Imported here: they pull in scipy and statsmodels, which assignment.warmup loads in the
    # background so that start-up serves assignments at once.
    from controlplane.metrics import ProviderConfig, Providers
    from experiments.verdict import current_verdict

    url = state.settings.prometheus_url
    # Short query timeouts: Flagger's webhook timeout is often 5 s for the whole answer.
    config = ProviderConfig(prometheus_url=url, mesh=state.settings.metrics_mesh, timeout=1.5)
    # With Prometheus configured, an experiment without guardrails of its own gets the
    # service's defaults; without it, none, and the gates that need guardrails say no.
    return current_verdict(state.store, name, Providers(config), service_defaults=bool(url))


@router.get("/v1/experiments/{name}/decision", dependencies=ReaderDeps, responses=ERRORS)
@bounded
def decision(name: str, state: StateDep) -> dict[str, Any]:
    """The current verdict of the sequential test and the guardrails (one always-valid look)."""
    return _verdict(state, name)


# The token is checked in the route, which has read the payload; the dependency declares the
# admin scheme in OpenAPI.
@router.post("/v1/flagger/{hook}", responses=ERRORS, dependencies=[Security(BEARER[Role.ADMIN])])
async def flagger(
    hook: Hook, request: Request, state: StateDep, payload: Annotated[FlaggerPayload, Body()]
) -> JSONResponse:
    """200 means pass (advance, promote, or for `rollback`: roll back now); 412 means not."""
    authorise(state.settings, Role.ADMIN, payload.metadata.get("token") or bearer_token(request))
    # One deadline for the whole answer: Flagger's webhook timeout covers it all.
    return await bounded_call(state, _answer, state, hook, payload)


def _answer(state: ServiceState, hook: Hook, payload: FlaggerPayload) -> JSONResponse:
    name = payload.metadata.get("experiment") or payload.name
    record = state.store.get_experiment(name)  # 404 if unknown
    if hook in RECORDED:
        entry = {
            "at": time.time(),
            "action": f"flagger-{hook}",
            "by": "flagger",
            "what": (payload.metadata.get("eventMessage") or f"{hook}: canary {payload.phase}")[
                :1000
            ],
            "weights": {},
            "guardrails": [],
            "phase": payload.phase,
            "checksum": payload.checksum,
        }
        state.store.append_audit(record.uid, entry)
        return JSONResponse({"recorded": True})
    verdict = _verdict(state, name)
    passed = {
        "confirm-rollout": verdict["decision"] not in ("rollback", "pause"),
        # Before the canary gets traffic: the experiment must be running, or its users would
        # all get the control variant and the canary's sample stay empty.
        "pre-rollout": verdict["state"] == "running"
        and verdict["decision"] not in ("rollback", "pause"),
        # A failed check counts toward Flagger's rollback threshold: only a guardrail over its
        # limit, not a guardrail without data yet, fails it.
        "rollout": verdict["guardrails_configured"]
        and not verdict["guardrails_failed"]
        and verdict["decision"] not in ("rollback", "pause"),
        "confirm-traffic-increase": verdict["guardrails_ok"] and verdict["decision"] != "rollback",
        "confirm-promotion": verdict["decision"] == "promote",
        "rollback": verdict["decision"] == "rollback",
    }[hook]
    return JSONResponse(verdict, status_code=200 if passed else 412)
