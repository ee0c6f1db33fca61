"""Operational guardrails: values the caller measured (p99 latency, 5xx ratio, model-score
drift, usually from Prometheus) checked against limits.  A missing or non-numeric value is
"no data", which is never a pass: it blocks promotion, though it does not trigger a rollback."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from analysis.decision import GuardrailCheck


@dataclass(frozen=True, slots=True)
class Threshold:
    """`value` must not exceed `limit` (bound "max") or fall below it (bound "min").  With a
    `variant` the reading is that arm's; without one it concerns the whole candidate."""

    name: str
    value: float | str | None  # Prometheus' API sends numbers as strings ("0.16", "NaN")
    limit: float
    variant: str | None = None
    bound: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if not math.isfinite(self.limit):
            raise ValueError(f"guardrail {self.name}: limit must be a finite number")
        if self.bound not in ("max", "min"):
            raise ValueError(f"guardrail {self.name}: bound must be 'max' or 'min'")

    def check(self) -> GuardrailCheck:
        value = _number(self.value)
        if value is None:
            return GuardrailCheck(self.name, "no_data", None, self.limit, self.bound, self.variant)
        over = value > self.limit if self.bound == "max" else value < self.limit
        status = "fail" if over else "pass"
        return GuardrailCheck(self.name, status, value, self.limit, self.bound, self.variant)

    @staticmethod
    def describe(check: GuardrailCheck) -> str:
        where = f" ({check.variant})" if check.variant else ""
        if check.status == "no_data":
            return f"guardrail {check.name}{where}: no data, which is not a pass"
        relation = {
            ("fail", "max"): "over its limit",
            ("fail", "min"): "under its limit",
            ("pass", "max"): "within its limit",
            ("pass", "min"): "within its limit",
        }[(check.status, check.bound)]
        return f"guardrail {check.name}{where} is {check.value:.4g}, {relation} {check.limit:.4g}"


def _number(value: float | str | None) -> float | None:
    """A finite number, or None for a missing, non-numeric or non-finite reading."""
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
