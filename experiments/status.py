"""An experiment's status: what the system did with its spec, in the manner of Kubernetes.

The spec is its owner's (only `apply` changes it, and each change bumps its generation); the
status is the system's (the service's lifecycle commands and the rollout controller write it,
nobody else).  A GitOps tool re-applying the same spec therefore changes nothing: the rollout's
position, the effective weights and the analysis phase live here, not in the spec.

`version` counts writes of the status, so every write is a compare-and-set: two writers (two
controllers, a controller and `abmesh stop`) cannot both win.  `uid` is new for every create:
everything derived from an experiment (rollout state, verdict state, audit log, leases) is keyed
by it, so a deleted and re-created experiment of the same name starts from nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

DEFAULT_PHASE = "main"


class State(StrEnum):
    DRAFT = "draft"  # stored, not randomising: overrides apply, everyone else gets control
    RUNNING = "running"
    PAUSED = "paused"  # held by its owner: control for all but overrides
    CONCLUDED = "concluded"  # final: see `outcome`; nothing more enters its analysis

    @property
    def active(self) -> bool:
        return self in (State.RUNNING, State.PAUSED)


class Outcome(StrEnum):
    PROMOTED = "promoted"  # the candidate serves everyone
    ROLLED_BACK = "rolled_back"  # harm or a guardrail: the stable model serves everyone
    STOPPED = "stopped"  # ended by its owner: the stable model serves everyone
    NO_DIFFERENCE = "no_difference"  # the test ended without a winner: stable kept


@dataclass(frozen=True, slots=True)
class Condition:
    """One observed aspect, as Kubernetes conditions: `status` is "True", "False" or
    "Unknown"; `last_transition_time` changes only when `status` does."""

    type: str
    status: str
    reason: str
    message: str = ""
    last_transition_time: float = 0.0


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """An analysis phase: exposures and events land in exactly one phase at a time.  `weights`
    is the split it was planned with (what SRM is checked against); None where the split
    moves during the phase (a canary)."""

    name: str
    started_at: float
    ended_at: float | None = None
    weights: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Status:
    uid: str
    version: int = 0
    observed_generation: int = 0
    state: State = State.DRAFT
    outcome: Outcome | None = None
    phase: str = DEFAULT_PHASE  # where exposures and events land (the analysed phase, once
    # concluded)
    phases: tuple[PhaseRecord, ...] = ()
    weights: dict[str, float] | None = None  # effective arm weights; None: the spec's
    rollout: dict[str, Any] | None = None  # the controller's rollout state (controlplane)
    conditions: tuple[Condition, ...] = ()
    routes: dict[str, Any] | None = None  # what the route target last confirmed

    @classmethod
    def new(cls, now: float) -> Status:
        return cls(uid=uuid.uuid4().hex, phases=(PhaseRecord(DEFAULT_PHASE, now),))

    def phase_record(self, name: str | None = None) -> PhaseRecord | None:
        wanted = name or self.phase
        return next((p for p in self.phases if p.name == wanted), None)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def with_condition(
        self, type_: str, status: bool | None, reason: str, message: str, now: float
    ) -> Status:
        """This status with the condition set; its transition time moves only on a change."""
        text = "Unknown" if status is None else str(status)
        old = self.condition(type_)
        since = old.last_transition_time if old is not None and old.status == text else now
        new = Condition(type_, text, reason, message, since)
        if old == new:
            return self
        rest = tuple(c for c in self.conditions if c.type != type_)
        return replace(self, conditions=(*rest, new))

    def assignment_view(self) -> tuple[Any, ...]:
        """What assignment and event collection read: a change here must reach every cache."""
        return (self.state, self.outcome, self.phase, self.weights)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["outcome"] = self.outcome.value if self.outcome else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Status:
        return cls(
            uid=str(data["uid"]),
            version=int(data.get("version", 0)),
            observed_generation=int(data.get("observed_generation", 0)),
            state=State(data.get("state", State.DRAFT.value)),
            outcome=Outcome(data["outcome"]) if data.get("outcome") else None,
            phase=str(data.get("phase", DEFAULT_PHASE)),
            phases=tuple(PhaseRecord(**p) for p in data.get("phases", ())),
            weights=dict(data["weights"]) if data.get("weights") is not None else None,
            rollout=data.get("rollout"),
            conditions=tuple(Condition(**c) for c in data.get("conditions", ())),
            routes=data.get("routes"),
        )

    @classmethod
    def legacy(cls, uid: str, status: str, phase: str, created_at: float) -> Status:
        """A status from a store written before status existed (uid = the name)."""
        stopped = status == "stopped"
        return cls(
            uid=uid,
            state=State.CONCLUDED if stopped else State(status),
            outcome=Outcome.STOPPED if stopped else None,
            phase=phase,
            phases=(PhaseRecord(phase, created_at),),
        )


def new_phase_name(status: Status, base: str) -> str:
    """`base-1`, `base-2`, …: the first name no earlier phase of this experiment used."""
    used = {p.name for p in status.phases}
    k = 1
    while f"{base}-{k}" in used:
        k += 1
    return f"{base}-{k}"


def enter_phase(
    status: Status, name: str, now: float, weights: Mapping[str, float] | None
) -> Status:
    """End the current analysis phase and start `name`: statistics start from zero in it."""
    record = PhaseRecord(name, now, None, dict(weights) if weights is not None else None)
    ended = end_phase(status, now)
    return replace(ended, phase=name, phases=(*ended.phases, record))


def end_phase(status: Status, now: float) -> Status:
    """Close the current analysis phase (the experiment concluded)."""
    return replace(
        status,
        phases=tuple(
            replace(p, ended_at=now) if p.name == status.phase and p.ended_at is None else p
            for p in status.phases
        ),
    )


__all__ = [
    "DEFAULT_PHASE",
    "Condition",
    "Outcome",
    "PhaseRecord",
    "State",
    "Status",
    "end_phase",
    "enter_phase",
    "new_phase_name",
]
