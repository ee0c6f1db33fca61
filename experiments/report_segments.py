"""Segments as the service, the report and the controller read them: one look of
`analysis.analyse_segments` at a phase's folded cells, with the Bonferroni family fixed by the
spec (so a value turning up late cannot loosen the stop rule), and the report's table and
chart of it."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from analysis.looks import treatments_of
from analysis.segment_result import SegmentAnalysis
from analysis.segments import analyse_segments
from experiments.reporting import analysed_spec
from experiments.spec import ExperimentSpec
from experiments.spec_metrics import SegmentHarm
from experiments.store import ExperimentRecord


def family_size(spec: ExperimentSpec, cells: dict[str, Any]) -> int:
    """Segment comparisons on the primary metric the spec allows: per attribute its declared
    values or its cap, plus `(other)`, times the treatment arms; more if a store with several
    partitions (each capping alone) holds more."""
    planned = sum((len(s.values) if s.values else s.max_values) + 1 for s in spec.segments)
    present = sum(len(values) for values in cells.values())
    return max(planned, present, 1) * max(len(treatments_of(spec)), 1)


def segment_analysis(
    record: ExperimentRecord, phase_report: dict[str, Any]
) -> SegmentAnalysis | None:
    """The segments of a phase report (`experiments.reporting.phase_report`), judged with the
    spec as the phase was planned; None when the phase keeps no segments."""
    cells = phase_report.get("segments")
    if cells is None or record.spec.metrics is None:
        return None
    spec = analysed_spec(record, phase_report["phase"])
    return analyse_segments(cells, spec, overall=phase_report["arms"],
                            family_size=family_size(spec, cells))  # fmt: skip


def segment_harm(record: ExperimentRecord, phase_report: dict[str, Any]) -> str | None:
    """Why the rollout must roll back for a harm in a segment, or None: only with
    `analysis.segment_harm: rollback`, and only for a harm confirmed at the Bonferroni level."""
    if record.spec.analysis.segment_harm is not SegmentHarm.ROLLBACK:
        return None
    analysis = segment_analysis(record, phase_report)
    if analysis is None or not analysis.harm_for_rollout:
        return None
    confirmed = [f"{s.attribute}={s.value}: {c.variant} harms {c.metric}"
                 for s in analysis.segments for c in s.comparisons if c.harm_confirmed]  # fmt: skip
    return "harm in a segment: " + "; ".join(confirmed)


def segments_answer(record: ExperimentRecord, phase_report: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/experiments/{name}/segments`: the analysis, or why there is none."""
    head = {"experiment": record.name, "phase": phase_report["phase"],
            "fold": phase_report["fold"]}  # fmt: skip
    analysis = segment_analysis(record, phase_report)
    if analysis is None:
        why = ("the spec declares no segments" if not record.spec.segments else
               "this phase's statistics keep no segments (they were declared after it began,"
               " or it has no metrics): they are counted from the next phase on")  # fmt: skip
        return {**head, "segments": [], "note": why}
    return {**head, **analysis.to_dict()}


def segments_figure(section: dict[str, Any], primary: str) -> go.Figure:
    """The primary metric's effect per segment with its always-valid interval (a forest plot):
    flagged segments stand out in their direction's colour."""
    fig = go.Figure()
    colours = {"harm": "#c0392b", "benefit": "#1e8449", None: "#566573"}
    for direction in ("harm", "benefit", None):
        rows = [(f"{s['attribute']}={s['value']} · {c['variant']}", c)
                for s in section["segments"] for c in s["comparisons"]
                if c["metric"] == primary and c["tested"]
                and (c["direction"] if c["flagged"] else None) == direction]  # fmt: skip
        if not rows:
            continue
        fig.add_scatter(
            x=[c["effect"] if c["scale"] == "absolute" else c["relative_effect"] for _, c in rows],
            y=[label for label, _ in rows],
            error_x={"type": "data", "symmetric": False,
                     "array": [_gap(c, "high") for _, c in rows],
                     "arrayminus": [_gap(c, "low") for _, c in rows]},
            mode="markers", marker={"color": colours[direction]},
            name=f"flagged: {direction}" if direction else "not flagged",
        )  # fmt: skip
    fig.add_vline(x=0, line_dash="dot")
    fig.update_layout(title=f"{primary} by segment: effect and always-valid interval",
                      height=max(360, 28 * len(section["segments"]) + 120))  # fmt: skip
    return fig


def _gap(c: dict[str, Any], side: str) -> float | None:
    centre = c["effect"] if c["scale"] == "absolute" else c["relative_effect"]
    bound = c[side]
    if centre is None or bound is None:
        return None
    return float(bound - centre if side == "high" else centre - bound)
