"""The rollout plan: how the controller moves traffic from the stable model to the candidate.

Phases run in order: `canary` walks its steps (the candidate's share in percent) while the
operational guardrails hold, a step advancing only on complete evidence (enough passing
checks in a row, enough time, enough units); `ab` holds a fixed split until the sequential
test decides; `promote` sends everything to the winner.  A guardrail over its limit, or harm
from the test, rolls back at once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, Strict, model_validator

from experiments.spec_base import Name, Number, SpecModel, no_repeats

Count = Annotated[int, Strict()]


class Bound(StrEnum):
    MAX = "max"  # the value must not exceed the limit
    MIN = "min"  # the value must not fall below it


# The metrics provider's named query templates (experiments.metrics_provider has one per mesh).
Query = Literal["p99_latency_ms", "error_ratio", "request_rate"]


class OperationalGuardrail(SpecModel):
    """A value read each check (from Prometheus, with a named query template)."""

    name: Name
    query: Query
    limit: Number = Field(allow_inf_nan=False)
    bound: Bound = Bound.MAX


class Canary(SpecModel):
    kind: Literal["canary"] = "canary"
    steps: tuple[Count, ...] = Field(default=(5, 20, 50), min_length=1, max_length=20)
    checks: Count = Field(default=3, ge=1, le=1000)  # passing checks in a row per step
    min_duration_s: Number = Field(default=0, ge=0, le=7 * 86400, allow_inf_nan=False)
    min_units: Count = Field(default=0, ge=0)  # candidate units exposed during the step

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        if any(not 0 < s < 100 for s in self.steps):
            raise ValueError(f"steps are the candidate's percent, each in 1..99: {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must increase: {list(self.steps)}")
        return self


class ABTest(SpecModel):
    kind: Literal["ab"] = "ab"
    split: Count = Field(default=50, ge=1, le=99)  # the candidate's percent, fixed for the phase


class Promote(SpecModel):
    kind: Literal["promote"] = "promote"


Phase = Annotated[Canary | ABTest | Promote, Field(discriminator="kind")]


def _default_guardrails() -> tuple[OperationalGuardrail, ...]:
    return (
        OperationalGuardrail(name="p99_latency_ms", query="p99_latency_ms", limit=150),
        OperationalGuardrail(name="error_ratio", query="error_ratio", limit=0.001),
    )


class Rollout(SpecModel):
    candidate: Name | None = None  # default: the first variant that is not the control
    service: Name | None = None  # the host clients call (VirtualService hosts); default: name
    guardrails: tuple[OperationalGuardrail, ...] = Field(
        default_factory=_default_guardrails, max_length=20
    )
    phases: tuple[Phase, ...] = Field(
        default_factory=lambda: (Canary(), ABTest(), Promote()), min_length=1, max_length=10
    )

    @model_validator(mode="after")
    def _order(self) -> Self:
        no_repeats([g.name for g in self.guardrails], "rollout.guardrails: names")
        kinds = [p.kind for p in self.phases]
        if "promote" in kinds and kinds.index("promote") != len(kinds) - 1:
            raise ValueError("rollout.phases: 'promote' can only be the last phase")
        return self
