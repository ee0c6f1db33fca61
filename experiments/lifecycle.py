"""Experiment status transitions: one table, one place for the rules.

Only a running experiment randomises units; in every other status the overrides (testers, QA)
still apply and everyone else gets the control variant, so a draft can be checked end to end
before it starts and a paused or stopped one sends all traffic to the stable model.
"""

from __future__ import annotations

from enum import StrEnum

from experiments.errors import ConflictError, NotFoundError
from experiments.folding import FoldPlan
from experiments.spec import ExperimentSpec
from experiments.store.protocol import ExperimentRecord, ExperimentStatus, PutResult, Store


class Action(StrEnum):
    START = "start"
    PAUSE = "pause"
    STOP = "stop"


_S = ExperimentStatus
TRANSITIONS: dict[tuple[ExperimentStatus, Action], ExperimentStatus] = {
    (_S.DRAFT, Action.START): _S.RUNNING,
    (_S.PAUSED, Action.START): _S.RUNNING,
    (_S.RUNNING, Action.PAUSE): _S.PAUSED,
    (_S.DRAFT, Action.STOP): _S.STOPPED,
    (_S.RUNNING, Action.STOP): _S.STOPPED,
    (_S.PAUSED, Action.STOP): _S.STOPPED,
}


def next_status(current: ExperimentStatus, action: Action) -> ExperimentStatus:
    """The status after `action`; ConflictError names the allowed actions when it is refused."""
    target = TRANSITIONS.get((current, action))
    if target is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is current)
        hint = f"allowed: {', '.join(allowed)}" if allowed else "it is final"
        raise ConflictError(f"cannot {action.value} an experiment that is {current.value} ({hint})")
    return target


def apply_spec(store: Store, spec: ExperimentSpec) -> PutResult:
    """Store a spec; if it changes how events fold (metrics added, removed or redefined) while
    the current phase holds data, start a new phase, named after the revision: statistics
    folded under two different plans would not mean anything."""
    try:
        before: ExperimentRecord | None = store.get_experiment(spec.name)
    except NotFoundError:
        before = None
    result = store.put_experiment(spec)
    if before is None or not result.changed:
        return result
    if FoldPlan.from_spec(before.spec) == FoldPlan.from_spec(spec):
        return result
    if before.phase not in store.phases(spec.name):
        return result
    record = store.set_phase(spec.name, f"{before.phase}-r{result.record.revision}")
    return PutResult(record, changed=True)
