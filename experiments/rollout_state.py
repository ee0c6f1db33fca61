"""The controller's state of one experiment's rollout, as stored between ticks, and the moves
it can make.  Pure data: the controller (experiments.controller) reads the world and calls these.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from experiments.routing.plan import Mode
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import ABTest, Canary, Promote


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    NO_DIFFERENCE = "no_difference"  # ended with the stable model kept

    @property
    def final(self) -> bool:
        return self in (
            RolloutStatus.PROMOTED,
            RolloutStatus.ROLLED_BACK,
            RolloutStatus.NO_DIFFERENCE,
        )


class Request(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass
class RolloutState:
    phase: int = 0
    step: int = 0
    status: RolloutStatus = RolloutStatus.RUNNING
    weights: dict[str, int] = field(default_factory=dict)  # default route, variant -> percent
    passes: int = 0  # passing guardrail checks in a row at this step
    step_started: float = 0.0
    step_units: float = 0.0  # candidate units exposed when the step started
    stats_phase: str = ""  # the statistics phase of the current A/B phase
    decision: dict[str, Any] | None = None  # analysis.DecisionState of the A/B phase
    winner: str | None = None
    reason: str = ""
    request: Request | None = None  # a manual command waiting for the next tick

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["request"] = self.request.value if self.request else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        state = cls(**{**data, "status": RolloutStatus(data["status"])})
        state.request = Request(data["request"]) if data.get("request") else None
        return state

    @property
    def mode(self) -> Mode:
        if self.status is RolloutStatus.PROMOTED:
            return Mode.PROMOTED
        if self.status in (RolloutStatus.ROLLED_BACK, RolloutStatus.NO_DIFFERENCE):
            return Mode.ROLLED_BACK
        return Mode.EXPERIMENT


def split(spec: ExperimentSpec, candidate_percent: int) -> dict[str, int]:
    stable, candidate = spec.control_variant.key, spec.candidate_variant.key
    return {stable: 100 - candidate_percent, candidate: candidate_percent}


def enter_phase(spec: ExperimentSpec, state: RolloutState, index: int) -> str:
    """Move to phase `index` (or finish, promoted, past the last); returns what happened."""
    assert spec.rollout is not None
    state.phase, state.step, state.passes = index, 0, 0
    state.step_started = time.time()
    if index >= len(spec.rollout.phases):
        return promote(spec, state, state.winner or spec.candidate_variant.key, "plan completed")
    phase = spec.rollout.phases[index]
    if isinstance(phase, Canary):
        state.weights = split(spec, phase.steps[0])
        return f"canary step 1 of {len(phase.steps)}: {phase.steps[0]} % to the candidate"
    if isinstance(phase, ABTest):
        state.weights = split(spec, phase.split)
        state.decision = None
        return f"A/B phase at {100 - phase.split}/{phase.split}"
    assert isinstance(phase, Promote)
    return promote(spec, state, state.winner or spec.candidate_variant.key, "promote phase")


def promote(spec: ExperimentSpec, state: RolloutState, winner: str, why: str) -> str:
    state.status, state.winner, state.weights = RolloutStatus.PROMOTED, winner, {winner: 100}
    state.reason = why
    return f"promoted {winner}: {why}"


def roll_back(spec: ExperimentSpec, state: RolloutState, why: str) -> str:
    state.status, state.weights = RolloutStatus.ROLLED_BACK, {spec.control_variant.key: 100}
    state.reason = why
    return f"rolled back to {spec.control_variant.key}: {why}"
