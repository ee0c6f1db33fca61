"""The report's charts over time, drawn from the report JSON (experiments.report).

Every time axis counts from the same moment (the report's `started_at`: the first audit entry
or look) in the unit its span reads best in (seconds, minutes, hours or days, named in the
axis title), and never spans less than one unit: a fast rollout of a few seconds is not drawn
in fractions of a millisecond.  The effect, p-value and exposure charts have one point per
recorded look, a series per analysis phase (each phase is a new sample with its own running
interval and p; a canary's observed looks are open markers); the p axis is fixed to [0, 1];
each guardrail gets its own panel, with its own axis and limit; the traffic chart steps
through every move, the final promotion or rollback marked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

UNITS = ((180.0, 1.0, "s"), (3 * 3600.0, 60.0, "min"), (72 * 3600.0, 3600.0, "h"))
OUTCOMES = {"promoted": "promoted", "rolled_back": "rolled back", "stopped": "stopped",
            "no_difference": "no difference"}  # fmt: skip


@dataclass(frozen=True)
class Clock:
    origin: float
    seconds: float  # per unit
    unit: str
    end: float  # in units

    def __call__(self, ts: float) -> float:
        return (ts - self.origin) / self.seconds

    def axis(self, fig: go.Figure) -> None:
        fig.update_xaxes(title_text=f"time since the rollout started ({self.unit})",
                         range=[0, max(self.end, 1.0) * 1.03], rangemode="tozero")  # fmt: skip


def clock_of(report: dict[str, Any]) -> Clock:
    origin = report["started_at"]
    times = [e["at"] for e in report["audit"] if "at" in e]
    times += [p["at"] for p in report["over_time"]]
    if report["status"] != "concluded":
        times.append(report["built_at"])
    span = max(times, default=origin) - origin
    seconds, unit = next(((s, u) for limit, s, u in UNITS if span < limit), (86400.0, "d"))
    return Clock(origin, seconds, unit, span / seconds)


def _series(points: list[dict[str, Any]]) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Each treatment's points by series label (`phase: variant`, with the writer when looks
    came from several: each writer keeps its own running minimum), with the variant."""
    writers = {p.get("by") for p in points}
    series: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for p in points:
        for variant in p["effects"]:
            label = f"{_phase(p)}: {variant}" + (f" ({p.get('by')})" if len(writers) > 1 else "")
            series.setdefault(label, (variant, []))[1].append(p)
    return series


def _phase(point: dict[str, Any]) -> str:
    return str(point["phase"]) + (" observed" if point.get("observational") else "")


def _marker(points: list[dict[str, Any]]) -> dict[str, str]:
    return {"symbol": "circle-open" if points and points[0].get("observational") else "circle"}


def _hover(p: dict[str, Any]) -> str:
    if "look" not in p:
        return f"{p['phase']}: snapshot"
    seen = " (observed, not gated)" if p["observational"] else ""
    return f"{p['phase']}, look {p['look']} by {p['by']}: {p['status']}{seen}"


def _phase_starts(fig: go.Figure, points: list[dict[str, Any]], clock: Clock) -> None:
    """A dotted line where each later phase's sample starts."""
    firsts: dict[str, float] = {}
    for p in points:
        firsts.setdefault(p["phase"], p["at"])
    for phase, at in list(firsts.items())[1:]:
        fig.add_vline(x=clock(at), line_dash="dot", line_color="#888",
                      annotation_text=phase)  # fmt: skip


def effect_chart(report: dict[str, Any], clock: Clock) -> go.Figure:
    fig = go.Figure()
    for name, (v, points) in _series(report["over_time"]).items():
        xs = [clock(p["at"]) for p in points]
        ef = [p["effects"][v] for p in points]
        fig.add_scatter(x=xs, y=[e["high"] for e in ef], mode="lines", line={"width": 0},
                        showlegend=False, name=f"{name} high")  # fmt: skip
        fig.add_scatter(x=xs, y=[e["low"] for e in ef], mode="lines", line={"width": 0},
                        fill="tonexty", name=f"{name} always-valid interval")  # fmt: skip
        fig.add_scatter(x=xs, y=[e["effect"] for e in ef], mode="lines+markers",
                        name=f"{name} effect", text=[_hover(p) for p in points],
                        marker=_marker(points))  # fmt: skip
    fig.add_hline(y=0, line_dash="dot")
    _phase_starts(fig, report["over_time"], clock)
    fig.update_layout(title="Primary metric: effect with its always-valid interval at each look")
    clock.axis(fig)
    return fig


def pvalue_chart(report: dict[str, Any], clock: Clock) -> go.Figure:
    fig = go.Figure()
    for name, (v, points) in _series(report["over_time"]).items():
        fig.add_scatter(x=[clock(p["at"]) for p in points],
                        y=[p["effects"][v]["pvalue"] for p in points], mode="lines+markers",
                        name=f"{name} p", text=[_hover(p) for p in points],
                        marker=_marker(points))  # fmt: skip
    _phase_starts(fig, report["over_time"], clock)
    fig.add_hline(y=report["alpha"], line_dash="dash", annotation_text=f"α {report['alpha']:g}")
    gst = report.get("group_sequential") is not None
    fig.update_yaxes(range=[0, 1], autorange=False, title_text="p")
    fig.update_layout(title="p at each look (group-sequential: nominal)" if gst
                      else "Always-valid p-value at each look (running minimum)")  # fmt: skip
    clock.axis(fig)
    return fig


def exposure_chart(report: dict[str, Any], clock: Clock) -> go.Figure:
    fig = go.Figure()
    phases: dict[str, list[dict[str, Any]]] = {}
    for p in report["over_time"]:
        phases.setdefault(_phase(p), []).append(p)
    for phase, points in phases.items():
        for v in sorted({v for p in points for v in p["units"]}):
            fig.add_scatter(x=[clock(p["at"]) for p in points],
                            y=[p["units"].get(v, 0) for p in points], mode="lines+markers",
                            name=f"{phase}: {v}", text=[_hover(p) for p in points],
                            marker=_marker(points))  # fmt: skip
    _phase_starts(fig, report["over_time"], clock)
    fig.update_layout(title="Exposed units per arm at each look (each phase a new sample)",
                      yaxis_title="units")  # fmt: skip
    clock.axis(fig)
    return fig


def traffic_chart(report: dict[str, Any], clock: Clock) -> go.Figure:
    """Each arm's share as it stepped, every move of the log with weights, the last included."""
    fig = go.Figure()
    moves = [e for e in report["audit"] if e.get("weights") and "at" in e]
    for v in sorted({v for e in moves for v in e["weights"]}):
        fig.add_scatter(x=[clock(e["at"]) for e in moves],
                        y=[e["weights"].get(v, 0) for e in moves], mode="lines+markers",
                        line_shape="hv", name=v, text=[e.get("action") for e in moves])  # fmt: skip
    outcome = OUTCOMES.get(report.get("outcome") or "")
    if outcome and moves:
        fig.add_vline(x=clock(moves[-1]["at"]), line_dash="dash", annotation_text=outcome)
    fig.update_yaxes(range=[0, 105], title_text="% of traffic")
    fig.update_layout(title="Traffic share per arm at each rollout move (%)")
    clock.axis(fig)
    return fig


def guardrail_charts(report: dict[str, Any], clock: Clock) -> list[tuple[str, go.Figure]]:
    """One panel per guardrail, its readings at each rollout move against its limit.  A
    sequential guardrail (relative to stable, or a ceiling on a share) is judged by its
    always-valid p against α, so that is what its panel draws, the reading's sentence on
    hover; a threshold, its value against its limit.  No data is a gap."""
    readings: dict[str, list[dict[str, Any]]] = {}
    for e in report["audit"]:
        for g in e.get("guardrails", []):
            if "at" in e and g.get("name"):
                readings.setdefault(g["name"], []).append({**g, "at": e["at"]})
    charts = []
    for name, rows in sorted(readings.items()):
        sequential = any(r.get("pvalue") is not None and "alpha" in r for r in rows)
        value, limit = ("pvalue", "alpha") if sequential else ("value", "limit")
        fig = go.Figure()
        xs = [clock(r["at"]) for r in rows]
        colors = ["#d62728" if r.get("status") == "fail" else "#1f77b4" for r in rows]
        fig.add_scatter(x=xs, y=[r.get(value) for r in rows], mode="lines+markers", name=name,
                        marker={"color": colors},
                        text=[r.get("message") or r.get("status") for r in rows])  # fmt: skip
        fig.add_scatter(x=xs, y=[r.get(limit) for r in rows], mode="lines", name="limit",
                        line={"dash": "dash", "color": "#d62728"})  # fmt: skip
        read = any(r.get(value) is not None for r in rows)
        title = name + (f" ({rows[-1].get('kind', 'sequential')})" if sequential else "")
        title += "" if read else ": no data"
        fig.update_layout(title=title, showlegend=False,
                          yaxis_title="always-valid p vs α" if sequential else name)  # fmt: skip
        if sequential:
            fig.update_yaxes(range=[0, 1])
        clock.axis(fig)
        charts.append((f"chart-guardrail-{re.sub(r'[^A-Za-z0-9_-]', '-', name)}", fig))
    return charts


def boundary_chart(report: dict[str, Any]) -> go.Figure:
    """Group-sequential: the planned |z| boundaries, and at each look the observed z against
    the boundary recomputed at the information reached."""
    fig = go.Figure()
    design = report["group_sequential"]
    fig.add_scatter(x=design["fractions"], y=design["z"], mode="lines+markers", name="boundary")
    fig.add_scatter(x=design["fractions"], y=[-z for z in design["z"]], mode="lines+markers",
                    name="lower boundary", line={"dash": "dot"})  # fmt: skip
    points = [p for p in report["over_time"]
              if p["phase"] == report["phase"] and not p.get("observational")]  # fmt: skip
    for v in sorted({v for p in points for v in p["effects"]}):
        seen = [p for p in points if p["effects"].get(v, {}).get("z") is not None]
        info = [p["effects"][v]["information"] for p in seen]
        fig.add_scatter(x=info, y=[p["effects"][v]["z"] for p in seen], mode="markers",
                        name=f"{v} z", text=[_hover(p) for p in seen])  # fmt: skip
        bounds = [(i, p["effects"][v]["boundary"]) for i, p in zip(info, seen, strict=True)
                  if p["effects"][v].get("boundary") is not None]  # fmt: skip
        if bounds:
            fig.add_scatter(x=[b[0] for b in bounds], y=[b[1] for b in bounds], mode="markers",
                            marker={"symbol": "x"}, name=f"{v} boundary at the look")  # fmt: skip
    fig.update_layout(title="Group-sequential: z at each look against its boundary",
                      xaxis_title="information fraction", yaxis_title="z")  # fmt: skip
    return fig
