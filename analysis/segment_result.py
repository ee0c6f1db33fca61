"""What `analyse_segments` returns, and the state it keeps between looks.

Every number is finite or None (as in analysis.decision): `to_dict()` is plain JSON.  The state
is one `DecisionState` per segment (and one for the whole population), the very state `decide`
keeps, so a segment's running p and interval follow the same rules as the main analysis; its
`intervals` also hold the Bonferroni-level intervals under `<key>|bonferroni`.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.decision import DecisionState, fmt


@dataclass(frozen=True, slots=True)
class SegmentComparison:
    """One treatment against control on one metric, in one segment (or the whole population)."""

    metric: str
    role: str  # "primary", "secondary" or "guardrail"
    variant: str
    control: str
    tested: bool  # False below the burn-in: the numbers are shown, no p and no interval
    note: str | None = None
    effect: float | None = None  # ȳ_b − ȳ_a
    relative_effect: float | None = None  # (ȳ_b − ȳ_a)/|ȳ_a|, None where undefined
    scale: str = "absolute"  # what low/high bound: "absolute" (effect) or "relative" (lift)
    low: float | None = None  # always-valid interval at the main analysis's level
    high: float | None = None
    pvalue: float | None = None  # running minimum of the always-valid p
    adjusted_pvalue: float | None = None  # Benjamini–Hochberg over every comparison tested
    flagged: bool = False  # adjusted p ≤ α
    direction: str | None = None  # "harm" or "benefit" by the metric's direction
    # Primary metric only: the interval at α / (number of segment comparisons), and whether
    # the comparison is a flagged harm with that interval wholly on the harmful side (what
    # the rollout may act on).
    bonferroni_low: float | None = None
    bonferroni_high: float | None = None
    harm_confirmed: bool = False
    # A flagged harm where the whole population shows no significant harm (None: the whole
    # population's statistics were not given).
    confined: bool | None = None
    n_control: float = 0.0
    n_treatment: float = 0.0


@dataclass(frozen=True, slots=True)
class SegmentResult:
    attribute: str
    value: str
    units: dict[str, float]  # assigned units per arm
    tested: bool
    note: str | None
    srm_pvalue: float | None  # the sequential test's running p in this segment
    srm_adjusted_pvalue: float | None  # × the number of segments (Bonferroni)
    srm_chi2_pvalue: float | None  # Pearson's χ² at this look, for information only
    srm_mismatch: bool
    comparisons: tuple[SegmentComparison, ...] = ()


@dataclass
class SegmentState:
    """What to carry to the next look: per segment (`attribute=value`) and for the whole
    population the running p and intervals, and the families the corrections were sized for
    (a family only grows, so a value seen once keeps counting)."""

    segments: dict[str, DecisionState] = field(default_factory=dict)
    overall: DecisionState | None = None
    family: int = 0  # segment comparisons on the primary metric (Bonferroni)
    srm_family: int = 0  # segments (Bonferroni for the SRM)

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments": {k: s.to_dict() for k, s in self.segments.items()},
            "overall": None if self.overall is None else self.overall.to_dict(),
            "family": self.family,
            "srm_family": self.srm_family,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentState:
        unknown = set(data) - {"segments", "overall", "family", "srm_family"}
        if unknown:
            raise ValueError(f"unknown segment state fields: {sorted(unknown)}")
        overall = data.get("overall")
        return cls(
            segments={
                str(k): DecisionState.from_dict(v) for k, v in data.get("segments", {}).items()
            },
            overall=None if overall is None else DecisionState.from_dict(overall),
            family=int(data.get("family", 0)),
            srm_family=int(data.get("srm_family", 0)),
        )


@dataclass(frozen=True, slots=True)
class SegmentAnalysis:
    alpha: float
    correction: dict[str, Any]  # which correction does what, and the family sizes
    harm_rule: str  # analysis.segment_harm: "flag" or "rollback"
    segments: tuple[SegmentResult, ...]
    overall: tuple[SegmentComparison, ...]  # the whole population, when given
    flagged: tuple[dict[str, Any], ...]
    harm_for_rollout: bool
    reasons: tuple[str, ...]
    srm_mismatches: tuple[str, ...]  # "attribute=value"
    state: SegmentState = field(default_factory=SegmentState)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (no nan or inf); the state is left out: `state.to_dict()` keeps it."""
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "harm_rule": self.harm_rule,
            "segments": [asdict(s) for s in self.segments],
            "overall": [asdict(c) for c in self.overall],
            "flagged": list(self.flagged),
            "harm_for_rollout": {"harm": self.harm_for_rollout, "reasons": list(self.reasons)},
            "srm_mismatches": list(self.srm_mismatches),
        }

    def summary(self) -> str:
        head = f"segments: {len(self.flagged)} flagged"
        head += ", harm for the rollout" if self.harm_for_rollout else ""
        return "\n".join([head, *(f"- {r}" for r in self.reasons)])

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in _cells(s, c)) + "</tr>"
            for s in self.segments
            for c in s.comparisons
        )
        head = "".join(f"<th>{h}</th>" for h in _COLUMNS)
        items = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        title = html.escape(self.summary().splitlines()[0])
        table = f"<table><tr>{head}</tr>{rows}</table>"
        return f"<div><strong>{title}</strong><ul>{items}</ul>{table}</div>"


_COLUMNS = ("segment", "variant", "metric", "effect", "relative", "low", "high", "p", "BH p",
            "flag", "SRM p")  # fmt: skip


def _cells(s: SegmentResult, c: SegmentComparison) -> tuple[object, ...]:
    flag = c.direction if c.flagged else ""
    return (f"{s.attribute}={s.value}", c.variant, c.metric, c.effect, c.relative_effect, c.low,
            c.high, c.pvalue, c.adjusted_pvalue, flag, s.srm_pvalue)  # fmt: skip
