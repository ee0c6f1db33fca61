"""Admin API for experiments: changes need the admin token; reading a spec and its status
needs the reader token (/v1/configs gives readers the same records).

Store calls block, so these are plain `def` routes run on the API pool under `api_timeout`
(assignment.routes.bounded); every write refreshes this replica's config cache at once, others
follow within one poll.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response

from assignment.deps import AdminDeps, ReaderDeps, StateDep
from assignment.models import ErrorOut, ExperimentOut, PhaseIn
from assignment.routes.bounded import bounded
from assignment.routes.strict_json import StrictJSONRoute
from assignment.service import ServiceState
from controlplane import lifecycle
from controlplane.lifecycle import Action, apply_spec, change_state
from experiments.errors import NotFoundError
from experiments.loader import spec_from_mapping
from experiments.reporting import record_data

router = APIRouter(
    prefix="/v1/experiments", tags=["experiments"], route_class=StrictJSONRoute
)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422, 503)
}
SpecBody = Body(description="An experiment spec (the JSON form of the YAML spec).")


@router.get("", response_model=list[ExperimentOut], responses=ERRORS, dependencies=ReaderDeps)
@bounded
def list_experiments(state: StateDep) -> list[dict[str, Any]]:
    return [record_data(r) for r in state.store.list_experiments()]


@router.get("/{name}", response_model=ExperimentOut, responses=ERRORS, dependencies=ReaderDeps)
@bounded
def get_experiment(
    name: str,
    state: StateDep,
    revision: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> dict[str, Any]:
    return record_data(state.store.get_experiment(name, revision))


@router.post(
    "", status_code=201, response_model=ExperimentOut, responses=ERRORS, dependencies=AdminDeps
)
@bounded
def create_experiment(state: StateDep, spec: dict[str, Any] = SpecBody) -> dict[str, Any]:
    """Create an experiment (409 if one of that name exists: use PUT to change it)."""
    parsed = spec_from_mapping(spec)
    try:
        state.store.get_experiment(parsed.name)
    except NotFoundError:
        pass
    else:
        raise HTTPException(409, f"experiment {parsed.name!r} exists; PUT to change it")
    record = apply_spec(state.store, parsed).record
    state.cache.refresh()
    return record_data(record)


@router.put("/{name}", response_model=ExperimentOut, responses=ERRORS, dependencies=AdminDeps)
@bounded
def put_experiment(
    name: str, response: Response, state: StateDep, spec: dict[str, Any] = SpecBody
) -> dict[str, Any]:
    """Create or change an experiment; a changed spec becomes a new revision (201 if new)."""
    parsed = spec_from_mapping({"name": name, **spec})
    if parsed.name != name:
        raise HTTPException(422, f"name: the body names {parsed.name!r} but the path {name!r}")
    result = apply_spec(state.store, parsed)
    if result.changed and result.record.revision == 1:
        response.status_code = 201
    state.cache.refresh()
    return record_data(result.record)


@router.post(
    "/{name}/phase", response_model=ExperimentOut, responses=ERRORS, dependencies=AdminDeps
)
@bounded
def start_phase(name: str, state: StateDep, body: PhaseIn) -> dict[str, Any]:
    """Start a new analysis phase: exposures and statistics start from zero in it (the old
    phase's stay readable)."""
    record = lifecycle.start_phase(state.store, name, body.phase)
    state.cache.refresh()
    return record_data(record)


ACTIONS = {
    Action.START: "draft or paused → running.",
    Action.PAUSE: "running → paused: everyone but the overrides gets the control variant.",
    Action.STOP: "→ concluded with outcome stopped: final; a running rollout is rolled back.",
}


def _changer(action: Action) -> Callable[[str, ServiceState], Awaitable[dict[str, Any]]]:
    def change(name: str, state: StateDep) -> dict[str, Any]:
        record = change_state(state.store, name, action, by="admin api")
        state.cache.refresh()
        return record_data(record)

    change.__name__ = f"{action.value}_experiment"  # the OpenAPI operation id
    change.__doc__ = ACTIONS[action]
    return bounded(change)


# One route per action, not `/{name}/{action}`: that would also catch POST on the read-only
# sub-routes (stats, report, ...) and answer 422 instead of 405.
for _action in Action:
    router.post(
        f"/{{name}}/{_action.value}", response_model=ExperimentOut, responses=ERRORS,
        dependencies=AdminDeps,
    )(_changer(_action))  # fmt: skip


@router.delete("/{name}", status_code=204, responses=ERRORS, dependencies=AdminDeps)
@bounded
def delete_experiment(
    name: str,
    state: StateDep,
    keep_history: Annotated[
        bool, Query(description="Keep the audit log, readable by the experiment's uid.")
    ] = False,
    force: Annotated[
        bool, Query(description="Even with a rollout in progress (409 otherwise).")
    ] = False,
) -> Response:
    """Delete the experiment and everything kept for it; a new one of the same name starts
    from nothing (a new uid).  One with a rollout in progress is refused (409) unless
    `force`: stop it first, and the controller rolls its routes back."""
    lifecycle.delete(state.store, name, keep_history=keep_history, force=force)
    state.cache.refresh()
    return Response(status_code=204)
