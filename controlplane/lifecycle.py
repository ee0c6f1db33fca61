"""An experiment's lifecycle outside the rollout: apply a spec, start, pause, stop, new phase.

States and the actions between them live in one table.  Only a running experiment randomises
units; a draft or paused one gives everyone but the overrides the control variant (so a draft
can be checked end to end before it starts); a concluded one is final and serves its outcome.

Applying a spec never writes routes or weights: the rollout controller owns those while a
rollout runs.  What an apply does to the status is written with the spec, atomically:
- an identical spec changes nothing (no revision, no status write);
- without a running rollout, a change of how events fold (metrics) or of the arms (variants,
  their weights) starts a new analysis phase if the current one holds data — statistics
  gathered under two plans would not mean anything — and the status observes the generation;
- with a rollout running, the controller observes the new generation at its next tick and
  applies the rules of `controlplane.controller` (restart, or the new plan at the next step).
"""

from __future__ import annotations

import time
from dataclasses import replace
from enum import StrEnum

from controlplane.routing.routers import refusal
from experiments.errors import ConflictError, InvalidInputError, NotFoundError
from experiments.folding import FoldPlan
from experiments.spec import ExperimentSpec
from experiments.status import Outcome, State, Status, end_phase, enter_phase
from experiments.store import ExperimentRecord, PutResult, Store
from experiments.store.protocol import check_phase


class Action(StrEnum):
    START = "start"
    PAUSE = "pause"
    STOP = "stop"


TRANSITIONS: dict[tuple[State, Action], State] = {
    (State.DRAFT, Action.START): State.RUNNING,
    (State.PAUSED, Action.START): State.RUNNING,
    (State.RUNNING, Action.PAUSE): State.PAUSED,
    (State.DRAFT, Action.STOP): State.CONCLUDED,
    (State.RUNNING, Action.STOP): State.CONCLUDED,
    (State.PAUSED, Action.STOP): State.CONCLUDED,
}
RETRIES = 20  # compare-and-set attempts while a controller writes the same status


def next_state(current: State, action: Action) -> State:
    """The state after `action`; ConflictError names the allowed actions when it is refused."""
    target = TRANSITIONS.get((current, action))
    if target is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is current)
        hint = f"allowed: {', '.join(allowed)}" if allowed else "it is final"
        raise ConflictError(f"cannot {action.value} an experiment that is {current.value} ({hint})")
    return target


def arms_changed(before: ExperimentSpec, after: ExperimentSpec) -> bool:
    """Whether the arms differ in what they are (keys, routing, destinations, control)."""

    def arms(spec: ExperimentSpec) -> object:
        return (
            [(v.key, v.header_value, v.destination) for v in spec.variants],
            spec.control_variant.key,
            spec.header,
        )

    return arms(before) != arms(after)


def sample_changed(before: ExperimentSpec, after: ExperimentSpec) -> bool:
    """Whether statistics gathered under `before` can go on under `after`."""
    return FoldPlan.from_spec(before) != FoldPlan.from_spec(after) or arms_changed(before, after)


def apply_spec(store: Store, spec: ExperimentSpec) -> PutResult:
    """Store a spec with what it does to the status (see the module docstring).  A rollout
    whose own target names a router that cannot run its phases is refused here; one that
    leaves the router to the controller's default is checked by the controller."""
    router = spec.rollout.target.router if spec.rollout else None
    if router is not None:
        assert spec.rollout is not None
        why = refusal(router, [p.kind for p in spec.rollout.phases])
        if why is not None:
            raise InvalidInputError(f"rollout.target.router: {why}")
    try:
        with_data = set(store.phases(spec.name))
    except NotFoundError:
        with_data = set()

    def react(before: ExperimentSpec | None, status: Status, generation: int) -> Status:
        if status.rollout is not None:
            return status  # the controller's to observe
        status = replace(status, observed_generation=generation)
        if before is None or status.state is State.CONCLUDED or status.phase not in with_data:
            return status
        weights_moved = [v.weight for v in before.variants] != [v.weight for v in spec.variants]
        if not (sample_changed(before, spec) or weights_moved):
            return status
        weights = {v.key: v.weight for v in spec.variants}
        return enter_phase(status, f"{status.phase}-r{generation}", time.time(), weights)

    return store.put_experiment(spec, react=react)


def change_state(store: Store, name: str, action: Action, *, by: str = "user") -> ExperimentRecord:
    """Start, pause or stop, with an audit entry; retried while a controller writes."""
    for _ in range(RETRIES):
        record = store.get_experiment(name)
        state = next_state(record.state, action)
        now = time.time()
        status = replace(record.status, state=state)
        if state is State.CONCLUDED:
            status = end_phase(replace(status, outcome=Outcome.STOPPED), now)
        entry = {"at": now, "by": by, "action": "lifecycle", "what": f"{action.value}: now"
                 f" {state.value}", "state": state.value, "generation": record.generation,
                 "weights": {}}  # fmt: skip
        try:
            return store.commit_status(
                name, status, expected_version=record.status.version, audit=[entry]
            )
        except ConflictError:
            continue
    raise ConflictError(f"the status of {name!r} kept changing: try again")


def delete(store: Store, name: str, *, keep_history: bool = False, force: bool = False) -> str:
    """Delete an experiment and everything kept for it; returns its uid.  One whose rollout
    has routes in the mesh and is not over is refused unless `force`: nobody would be left to
    take those routes back (stop it first: the controller rolls them back)."""
    record = store.get_experiment(name)
    rollout = record.status.rollout
    live = rollout is not None and rollout["status"] in ("running", "paused")
    if live and record.state is not State.CONCLUDED and not force:
        raise ConflictError(
            f"experiment {name!r} has a rollout in progress: stop it first (abmesh stop"
            f" {name}; the controller rolls its routes back), or delete with force"
        )
    return store.delete_experiment(name, keep_history=keep_history)


def start_phase(store: Store, name: str, phase: str) -> ExperimentRecord:
    """Start a new analysis phase by hand: exposures and statistics start from zero in it,
    planned with the weights in force."""
    check_phase(phase)
    for _ in range(RETRIES):
        record = store.get_experiment(name)
        status = record.status
        used = {p.name for p in status.phases} | set(store.phases(name))
        if phase == status.phase:
            return record
        if phase in used:
            raise ConflictError(
                f"experiment {name!r} used phase {phase!r} before; a new phase needs a new name"
                " (its statistics would otherwise continue)"
            )
        if status.state is State.CONCLUDED:
            raise ConflictError(f"experiment {name!r} is concluded: its analysis is final")
        weights = {v.key: v.weight for v in record.effective_spec.variants}
        new = enter_phase(status, phase, time.time(), weights)
        try:
            return store.commit_status(name, new, expected_version=status.version)
        except ConflictError:
            continue
    raise ConflictError(f"the status of {name!r} kept changing: try again")
