"""The position of one experiment's rollout, kept in its status, and the moves it can make.

Pure data and pure functions: the controller (controlplane.controller) reads the world, calls
these with the time, and persists the result.  `weights` is the default route's split and,
through the status, the arms' share: they move together, so an assigned user follows the plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from controlplane.routing.plan import Mirror, Mode, RoutePlan, plan_routes
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import ABTest, Canary, Promote, Shadow
from experiments.status import Outcome


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # held: by hand, or the test found the sample invalid
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    NO_DIFFERENCE = "no_difference"  # ended with the stable model kept

    @property
    def final(self) -> bool:
        return self.outcome is not None

    @property
    def outcome(self) -> Outcome | None:
        return {
            RolloutStatus.PROMOTED: Outcome.PROMOTED,
            RolloutStatus.ROLLED_BACK: Outcome.ROLLED_BACK,
            RolloutStatus.NO_DIFFERENCE: Outcome.NO_DIFFERENCE,
        }.get(self)


class Request(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass
class RolloutState:
    phase: int = 0  # index into the spec's rollout.phases
    step: int = 0  # canary step within the phase
    status: RolloutStatus = RolloutStatus.RUNNING
    weights: dict[str, int] = field(default_factory=dict)  # variant -> percent
    passes: int = 0  # passing guardrail checks in a row at this step
    step_started: float = 0.0
    step_units: float = 0.0  # candidate units exposed when the step started
    data_at: float = 0.0  # when every guardrail last had data (for the progress deadline)
    resumed_at: float = 0.0  # when data came back after a hold: the step's clock restarts
    decision: dict[str, Any] | None = None  # analysis.DecisionState of the A/B phase
    # The canary's observational looks (controlplane.judge): their running state, not gated.
    observed: dict[str, Any] | None = None
    shadow: dict[str, Any] | None = None  # the shadow phase's last comparison (analysis.shadow)
    # Its comparison at every look, thinned evenly past controlplane.shadow_gate.LOOKS.
    shadow_looks: dict[str, Any] = field(default_factory=dict)
    winner: str | None = None
    reason: str = ""
    request: Request | None = None  # a manual command waiting for the next tick
    # Consecutive failing readings and provider errors per guardrail (controlplane.
    # guardrail_policy): kept here so they survive a restart or a change of controller.
    guardrail_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Each relative guardrail's sequential test since the rollout began (controlplane.metrics.
    # sequential): the evidence accumulates over steps, and survives a restart.
    guardrail_tests: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["request"] = self.request.value if self.request else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**{**known, "status": RolloutStatus(data["status"])})
        state.request = Request(data["request"]) if data.get("request") else None
        return state

    @property
    def mode(self) -> Mode:
        if self.status is RolloutStatus.PROMOTED:
            return Mode.PROMOTED
        if self.status in (RolloutStatus.ROLLED_BACK, RolloutStatus.NO_DIFFERENCE):
            return Mode.ROLLED_BACK
        return Mode.EXPERIMENT


def phase_of(spec: ExperimentSpec, state: RolloutState) -> Any:
    """The phase the rollout is in; None past the plan's last (or without a plan)."""
    phases = spec.rollout.phases if spec.rollout else ()
    return phases[state.phase] if state.phase < len(phases) else None


def route_plan(spec: ExperimentSpec, state: RolloutState) -> RoutePlan:
    """The routes the rollout's position asks for: its weights, and a running shadow phase's
    mirror."""
    phase = phase_of(spec, state)
    mirror = None
    if isinstance(phase, Shadow) and state.status is RolloutStatus.RUNNING:
        mirror = Mirror(spec.candidate_variant.key, phase.percent, phase.methods)
    return plan_routes(spec, state.weights, state.mode, mirror)


def split(spec: ExperimentSpec, candidate_percent: int) -> dict[str, int]:
    stable, candidate = spec.control_variant.key, spec.candidate_variant.key
    return {stable: 100 - candidate_percent, candidate: candidate_percent}


def enter_phase(spec: ExperimentSpec, state: RolloutState, index: int, now: float) -> str:
    """Move to phase `index` (or finish, promoted, past the last); returns what happened."""
    assert spec.rollout is not None
    state.phase, state.step, state.passes = index, 0, 0
    state.step_started = state.data_at = now
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
    if isinstance(phase, Shadow):
        state.weights, state.shadow, state.shadow_looks = split(spec, 0), None, {}
        methods = ", ".join(phase.methods)
        return f"shadow phase: {phase.percent:g} % of {methods} requests mirrored to the candidate"
    assert isinstance(phase, Promote)
    return promote(spec, state, state.winner or spec.candidate_variant.key, "promote phase")


def next_step(spec: ExperimentSpec, state: RolloutState, phase: Canary, now: float) -> str | None:
    """The canary's next step: the first of the phase's steps (as the spec says now, so a
    changed plan takes effect here) above the current share; None when the phase is done."""
    share = state.weights.get(spec.candidate_variant.key, 0)
    higher = [s for s in phase.steps if s > share]
    if not higher:
        return None
    state.step, state.passes, state.step_started = phase.steps.index(higher[0]), 0, now
    state.weights = split(spec, higher[0])
    return f"canary step {state.step + 1} of {len(phase.steps)}: {higher[0]} % to the candidate"


def promote(spec: ExperimentSpec, state: RolloutState, winner: str, why: str) -> str:
    state.status, state.winner, state.weights = RolloutStatus.PROMOTED, winner, {winner: 100}
    state.reason = why
    return f"promoted {winner}: {why}"


def roll_back(spec: ExperimentSpec, state: RolloutState, why: str) -> str:
    state.status, state.weights = RolloutStatus.ROLLED_BACK, {spec.control_variant.key: 100}
    state.reason = why
    return f"rolled back to {spec.control_variant.key}: {why}"


def finish(spec: ExperimentSpec, state: RolloutState, why: str) -> str:
    state.status, state.weights = RolloutStatus.NO_DIFFERENCE, {spec.control_variant.key: 100}
    state.reason = why
    return why
