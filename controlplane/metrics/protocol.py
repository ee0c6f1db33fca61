"""What every metrics provider answers: one `Measurement` per guardrail and look.

A provider never raises for what the outside world does (a timeout, a 500, an empty result,
a body that is not JSON): those are measurements too, with phase `error` or `no_data` and a
message, so the controller's tick has one path for every answer, as Argo Rollouts'
`Measurement` has a phase and a message.  Judging the value against the limit is not the
provider's business (controlplane.metrics.reading does it for every provider alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from experiments.spec_rollout import PLACEHOLDER_RE, OperationalGuardrail


class Phase(StrEnum):
    OK = "ok"  # a finite value
    NO_DATA = "no_data"  # the source answered, with nothing to judge (no traffic: 0/0)
    ERROR = "error"  # the source did not answer sensibly


@dataclass(frozen=True, slots=True)
class Measurement:
    phase: Phase
    value: float | None = None
    sample: float | None = None  # requests behind the value, when the provider knows
    message: str = ""

    @classmethod
    def of(cls, value: object, sample: float | None = None, where: str = "") -> Measurement:
        """A reading from what a source sent: a number (or a numeric string, as Prometheus
        sends them) is ok; NaN and ±inf are no data; anything else is an error."""
        if value is None:
            return cls(Phase.NO_DATA, message=f"no value{where}")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return cls(Phase.ERROR, message=f"not a number{where}: a {type(value).__name__}")
        try:
            number = float(value)
        except ValueError:
            return cls(Phase.ERROR, message=f"not a number{where}: {str(value)[:40]!r}")
        if not math.isfinite(number):
            return cls(Phase.NO_DATA, sample=sample, message=f"{number}{where} (no traffic?)")
        return cls(Phase.OK, number, sample)

    @classmethod
    def error(cls, message: str) -> Measurement:
        return cls(Phase.ERROR, message=message)


@dataclass(frozen=True, slots=True)
class Counts:
    """Cumulative counters of one arm, as a relative guardrail reads them: `requests` and the
    events by kind (`errors`, or `gt_<ms>` for requests slower than a bucket bound)."""

    phase: Phase
    requests: float = 0.0
    events: Mapping[str, float] = field(default_factory=dict)
    message: str = ""

    @classmethod
    def error(cls, message: str) -> Counts:
        return cls(Phase.ERROR, message=message)


class MetricsProvider(Protocol):
    """One guardrail's current value for the variables of one candidate (see `render`), and
    for a sequential guardrail one arm's cumulative counters as of the instant `at` (epoch
    seconds; a provider that has no counters answers an error count that says so)."""

    def query(self, guardrail: OperationalGuardrail, variables: Mapping[str, str]) -> Measurement:
        ...  # fmt: skip

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        ...  # fmt: skip


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders; the spec refused unknown names, a missing value is empty."""
    return PLACEHOLDER_RE.sub(lambda m: variables.get(m.group(1), ""), template)
