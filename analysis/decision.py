"""What `decide` returns: a frozen Decision with its status, the reasons quoting the numbers,
every comparison and guardrail check behind it, and the state to keep for the next look.

Every number in a Decision is finite or None: a comparison with no information has no
estimate rather than a nan, and an unbounded interval side is None.  `to_dict()` is plain
JSON; `summary()` reads as text and `_repr_html_` renders in a notebook.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    CONTINUE = "continue"
    WINNER = "winner"
    # Better on the primary metric, but a metric guardrail is not yet shown within its
    # margin or tolerance: keep testing (it is not "no difference"), and never promote on it.
    WINNER_PENDING_GUARDRAILS = "winner_pending_guardrails"
    HARM = "harm"
    NO_DIFFERENCE = "no_difference"
    INVALID = "invalid"


def finite(value: float | None) -> float | None:
    """The value if it is a finite number, else None (nan and ±inf never leave analysis)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class Comparison:
    """One treatment against control on one metric, as of this look."""

    metric: str
    role: str  # "primary", "secondary" or "guardrail"
    variant: str
    control: str
    method: str
    # better, worse, inconclusive, no_difference, non_inferior, within_tolerance, harm,
    # burn_in, unstable
    verdict: str
    estimate: float | None = None  # b − a, or the lift (b − a)/|a| when relative
    ci_low: float | None = None
    ci_high: float | None = None
    pvalue: float | None = None
    adjusted_pvalue: float | None = None  # Benjamini–Hochberg over secondary metrics
    boundary: float | None = None  # group-sequential z boundary of the last look
    statistic: float | None = None
    n_control: float = 0.0
    n_treatment: float = 0.0
    relative: bool = False
    alpha: float | None = None  # the level this comparison was judged at

    def confidence_interval(self) -> tuple[float | None, float | None]:
        return self.ci_low, self.ci_high


@dataclass(frozen=True, slots=True)
class GuardrailCheck:
    name: str
    status: str  # pass, fail, no_data
    value: float | None
    limit: float
    bound: str  # "max": the value must not exceed the limit; "min": not fall below it
    variant: str | None = None


@dataclass
class DecisionState:
    """What a decision keeps between looks: the running always-valid p and interval per
    comparison (`intervals`: key -> [p, low, high], ±inf stored as None), the running
    sequential SRM p-value and the χ² p of the horizon look, the information fractions of
    group-sequential looks taken, the boundaries already crossed (a stopped trial stays
    stopped), and the design all of it was computed under (a changed design starts it
    afresh)."""

    looks: int = 0
    srm_pvalue: float = 1.0
    # Pearson χ² p of the one planned look at the horizon (None until it is reached): the
    # only look where the fixed SRM test gates (analysis.looks, _judge_srm).
    srm_horizon_pvalue: float | None = None
    intervals: dict[str, list[float | None]] = field(default_factory=dict)
    gst_fractions: list[float] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)  # group-sequential verdicts reached
    design: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionState:
        known = {
            "looks", "srm_pvalue", "srm_horizon_pvalue", "intervals", "gst_fractions",
            "stopped", "design",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown decision state fields: {sorted(unknown)}")
        return cls(
            looks=int(data.get("looks", 0)),
            srm_pvalue=float(data.get("srm_pvalue", 1.0)),
            srm_horizon_pvalue=_optional(data.get("srm_horizon_pvalue")),
            intervals={str(k): list(v) for k, v in data.get("intervals", {}).items()},
            gst_fractions=[float(t) for t in data.get("gst_fractions", [])],
            stopped={str(k): str(v) for k, v in data.get("stopped", {}).items()},
            design=str(data.get("design", "")),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    experiment: str
    status: Status
    reasons: tuple[str, ...]
    winner: str | None = None
    harmful: tuple[str, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    guardrails: tuple[GuardrailCheck, ...] = ()
    srm_pvalue: float | None = None
    sequential_srm_pvalue: float | None = None
    state: DecisionState = field(default_factory=DecisionState)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    def summary(self) -> str:
        head = f"{self.experiment}: {self.status.value}"
        if self.winner:
            head += f" (winner {self.winner})"
        return "\n".join([head, *(f"- {r}" for r in self.reasons)])

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(fmt(v))}</td>"
                for v in (
                    c.metric,
                    c.variant,
                    c.verdict,
                    c.estimate,
                    c.ci_low,
                    c.ci_high,
                    c.pvalue,
                    c.n_treatment,
                )
            )
            + "</tr>"
            for c in self.comparisons
        )
        table = (
            "<table><tr><th>metric</th><th>variant</th><th>verdict</th><th>effect</th>"
            f"<th>low</th><th>high</th><th>p</th><th>units</th></tr>{rows}</table>"
        )
        head = html.escape(self.summary().splitlines()[0])
        return f"<div><strong>{head}</strong><ul>{items}</ul>{table}</div>"


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def fmt(value: object) -> str:
    """Numbers to 4 significant digits, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
