"""Experiment status transitions: one table, one place for the rules.

Only a running experiment randomises units; in every other status the overrides (testers, QA)
still apply and everyone else gets the control variant, so a draft can be checked end to end
before it starts and a paused or stopped one sends all traffic to the stable model.
"""

from __future__ import annotations

from enum import StrEnum

from experiments.errors import ConflictError
from experiments.store.protocol import ExperimentStatus


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


def is_terminal(status: ExperimentStatus) -> bool:
    return status is ExperimentStatus.STOPPED


def next_status(current: ExperimentStatus, action: Action) -> ExperimentStatus:
    """The status after `action`; ConflictError names the allowed actions when it is refused."""
    target = TRANSITIONS.get((current, action))
    if target is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is current)
        hint = f"allowed: {', '.join(allowed)}" if allowed else "it is final"
        raise ConflictError(f"cannot {action.value} an experiment that is {current.value} ({hint})")
    return target
