"""Request and response bodies of the HTTP API, split by direction."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from assignment.assign import Assignment
from experiments.names import NAME_RE, UNIT_SCHEMA


class HeaderOut(BaseModel):
    name: str
    value: str


class AssignmentOut(BaseModel):
    experiment: str
    unit: str
    variant: str
    in_experiment: bool
    reason: str
    header: HeaderOut


def assignment_body(unit: str, a: Assignment) -> dict[str, Any]:
    """The JSON body of AssignmentOut, built directly (the hot path skips model validation)."""
    return {
        "experiment": a.experiment,
        "unit": unit,
        "variant": a.variant,
        "in_experiment": a.in_experiment,
        "reason": a.reason.value,
        "header": {"name": a.header_name, "value": a.header_value},
    }


class BatchAssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The unit rules are documented, not enforced here: assign() names the broken rule.
    units: list[Annotated[str, Field(json_schema_extra=UNIT_SCHEMA)]] = Field(
        min_length=1, description="Unit ids to assign."
    )
    experiments: list[str] | None = Field(
        default=None, min_length=1, description="Experiments to assign in; default: all running."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers that may force a variant."
    )


class BatchAssignOut(BaseModel):
    assignments: list[AssignmentOut]


class ExperimentOut(BaseModel):
    name: str
    generation: int = Field(description="Bumped by every change of the spec, and only then.")
    created_at: float
    updated_at: float
    spec: dict[str, Any] = Field(description="What the experiment's owner applied.")
    status: dict[str, Any] = Field(
        description="What the system did: uid, observed_generation, state, outcome, phase,"
        " phases, weights (effective), position, conditions, routes."
    )


class PhaseIn(BaseModel):
    # The pattern is documented, not enforced by pydantic: the store's check names the rule.
    phase: str = Field(
        description="The new phase's name, e.g. canary-2 or ab.",
        json_schema_extra={"pattern": f"^{NAME_RE.pattern}$"},
    )


class ConfigsOut(BaseModel):
    epoch: int
    experiments: list[ExperimentOut]


class ErrorOut(BaseModel):
    error: str = Field(description="What is wrong, naming the field or parameter.")
    problems: list[str] | None = None


class EventsIn(BaseModel):
    events: list[Any] = Field(
        description="Events {event_id, experiment, unit, metric, value (default 1), timestamp "
        "(unix s or ISO 8601 with offset; default now), pre_period (default false)}; each is "
        "validated on its own."
    )


class RejectedOut(BaseModel):
    index: int
    error: str


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedOut]


class ExposuresIn(BaseModel):
    exposures: list[Any] = Field(
        description="Variants served by local evaluation {experiment, unit, variant, generation "
        "(of the spec that chose it, optional), timestamp (unix s or ISO 8601 with offset; "
        "default now)}; each is validated on its own."
    )


class ExposuresOut(BaseModel):
    accepted: int = Field(description="Exposures buffered; the first of each unit counts.")
    rejected: list[RejectedOut]
