"""The report as one self-contained HTML page: plotly's script is embedded once, so the page
opens offline; every chart is drawn from the report JSON (experiments.report)."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _x(ts: float) -> datetime:
    """A chart's time axis keeps sub-second steps (a fast demo snapshots that often)."""
    return datetime.fromtimestamp(ts, UTC)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{cells}</table>"


def _chart(fig: go.Figure, chart_id: str) -> str:
    fig.update_layout(height=360, margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=chart_id))


def _effect_chart(report: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    points = report["over_time"]
    variants = sorted({v for p in points for v in p["effects"]})
    for v in variants:
        xs = [_x(p["at"]) for p in points if v in p["effects"]]
        ef = [p["effects"][v] for p in points if v in p["effects"]]
        fig.add_scatter(x=xs, y=[e["high"] for e in ef], mode="lines", line={"width": 0},
                        showlegend=False, name=f"{v} high")  # fmt: skip
        fig.add_scatter(x=xs, y=[e["low"] for e in ef], mode="lines", line={"width": 0},
                        fill="tonexty", name=f"{v} always-valid interval")  # fmt: skip
        fig.add_scatter(x=xs, y=[e["effect"] for e in ef], mode="lines+markers", name=f"{v} effect")
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title="Primary metric: effect with its always-valid interval over time")
    return fig


def _pvalue_chart(report: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    points = report["over_time"]
    for v in sorted({v for p in points for v in p["effects"]}):
        xs = [_x(p["at"]) for p in points if v in p["effects"]]
        fig.add_scatter(x=xs, y=[p["effects"][v]["pvalue"] for p in points if v in p["effects"]],
                        mode="lines+markers", name=f"{v} always-valid p")  # fmt: skip
    fig.update_yaxes(type="log")
    fig.update_layout(title="Always-valid p-value (running minimum)")
    return fig


def _exposure_chart(report: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    points = report["over_time"]
    for v in sorted({v for p in points for v in p["units"]}):
        xs, ys = [_x(p["at"]) for p in points], [p["units"].get(v, 0) for p in points]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=v)
    fig.update_layout(title="Exposed units per arm")
    return fig


def _stages_chart(report: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    stages = [e for e in report["audit"] if e.get("weights")]
    labels = [f"{i + 1}. {e.get('action', '')}" for i, e in enumerate(stages)]
    for v in sorted({v for e in stages for v in e["weights"]}):
        fig.add_bar(x=labels, y=[e["weights"].get(v, 0) for e in stages], name=v)
    fig.update_layout(barmode="stack", title="Traffic share per rollout stage (%)")
    return fig


def _guardrail_chart(report: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    readings: dict[str, list[tuple[datetime, float, float]]] = {}
    for e in report["audit"]:
        for g in e.get("guardrails", []):
            if g.get("value") is not None:
                readings.setdefault(g["name"], []).append((_x(e["at"]), g["value"], g["limit"]))
    for name, rows in readings.items():
        fig.add_scatter(
            x=[r[0] for r in rows], y=[r[1] for r in rows], mode="lines+markers", name=name
        )
        fig.add_scatter(x=[r[0] for r in rows], y=[r[2] for r in rows], mode="lines",
                        line={"dash": "dash"}, name=f"{name} limit")  # fmt: skip
    fig.update_layout(title="Guardrails at each rollout decision (value and limit)")
    return fig


def _boundary_chart(report: dict[str, Any]) -> go.Figure:
    """Group-sequential: the planned |z| boundaries and the observed z by information."""
    fig = go.Figure()
    design = report["group_sequential"]
    fig.add_scatter(x=design["fractions"], y=design["z"], mode="lines+markers", name="boundary")
    fig.add_scatter(x=design["fractions"], y=[-z for z in design["z"]], mode="lines+markers",
                    name="lower boundary", line={"dash": "dot"})  # fmt: skip
    points = report["over_time"]
    for v in sorted({v for p in points for v in p["effects"]}):
        seen = [p["effects"][v] for p in points if p["effects"].get(v, {}).get("z") is not None]
        fig.add_scatter(x=[e["information"] for e in seen], y=[e["z"] for e in seen],
                        mode="markers", name=f"{v} z")  # fmt: skip
    fig.update_layout(title="Group-sequential boundaries (z) by information fraction")
    return fig


def _shadow_charts(shadow: dict[str, Any]) -> list[str]:
    """Each measure over the looks with its interval and tolerance (its own axis), and the two
    arms' score ECDFs over the same requests."""
    charts = []
    looks = shadow["looks"]
    for name in sorted({n for look in looks for n in look["measures"]}):
        rows = [(look["pairs"], look["measures"][name]) for look in looks
                if name in look["measures"]]  # fmt: skip
        fig = go.Figure()
        xs = [pairs for pairs, _ in rows]
        fig.add_scatter(x=xs, y=[m[2] for _, m in rows], mode="lines", line={"width": 0},
                        showlegend=False, name="high")  # fmt: skip
        fig.add_scatter(x=xs, y=[m[1] for _, m in rows], mode="lines", line={"width": 0},
                        fill="tonexty", name="confidence sequence")  # fmt: skip
        fig.add_scatter(x=xs, y=[m[0] for _, m in rows], mode="lines+markers", name=name)
        tolerance = next((m[3] for _, m in rows if m[3] is not None), None)
        if tolerance is not None:
            fig.add_hline(y=tolerance, line_dash="dash", annotation_text="tolerance")
            if name == "score_shift":
                fig.add_hline(y=-tolerance, line_dash="dash")
        fig.update_layout(title=f"Shadow: {name} by pairs compared", xaxis_title="pairs")
        charts.append(_chart(fig, f"chart-shadow-{name}"))
    ecdf = shadow["ecdf"]
    fig = go.Figure()
    for arm in ("stable", "candidate"):
        fig.add_scatter(x=ecdf["x"], y=ecdf[arm], mode="lines", line_shape="hv", name=arm)
    fig.update_layout(title="Shadow: score ECDF of each model on the same requests",
                      xaxis_title="score", yaxis={"range": [0, 1]})  # fmt: skip
    charts.append(_chart(fig, "chart-shadow-ecdf"))
    return charts


def _shadow_html(shadow: dict[str, Any] | None) -> str:
    if shadow is None:
        return ""
    v = shadow["verdict"]
    rows = [[m["name"], m["state"], m["estimate"], m["low"], m["high"], m["tolerance"], m["alpha"]]
            for m in v["measures"].values()]  # fmt: skip
    shown = v.get("display") or {}
    arms = shown.get("arms") or {}
    arm_rows = [[arm, a.get("mean"), *(a.get("quantiles") or {}).values(), a.get("latency_ms_mean")]
                for arm, a in arms.items()]  # fmt: skip
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in v["reasons"])
    s = shadow["settings"]
    return f"""<h2 id="shadow">Shadow comparison</h2>
<p>{_fmt(s["percent"])} % of {html.escape(", ".join(s["methods"]))} requests mirrored;
<b>{html.escape(v["status"])}</b> after {v["pairs"]} pairs ({shadow["pending"]} waiting,
unpaired {html.escape(json.dumps(shadow["unpaired"]))})</p><ul>{reasons}</ul>
{_table(["measure", "state", "estimate", "low", "high", "tolerance", "α"], rows)}
<p>PSI {_fmt(shown.get("psi"))}, KS {_fmt(shown.get("ks"))},
Wasserstein {_fmt(shown.get("wasserstein"))} (shown, not gated)</p>
{_table(["model", "mean score", "p10", "p50", "p90", "latency ms"], arm_rows)}
{"".join(_shadow_charts(shadow))}"""


def render_html(report: dict[str, Any]) -> str:
    d = report["decision"]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in d["reasons"])
    metric_rows = [
        [m["metric"], m["role"], c["variant"], c["verdict"], c["effect"], c["relative"], c["low"],
         c["high"], c["pvalue"]]
        for m in report["metrics"] for c in m["comparisons"]
    ]  # fmt: skip
    arm_rows = [
        [m["metric"], a["variant"], a["units"], a["mean"]]
        for m in report["metrics"]
        for a in m["arms"]
    ]
    audit_rows = [
        [_when(e.get("at", 0)), e.get("action"), json.dumps(e.get("weights", {})), e.get("what")]
        for e in report["audit"]
    ]  # fmt: skip
    charts = [
        _chart(_effect_chart(report), "chart-effect"),
        _chart(_pvalue_chart(report), "chart-pvalue"),
        _chart(_exposure_chart(report), "chart-exposures"),
        _chart(_stages_chart(report), "chart-stages"),
        _chart(_guardrail_chart(report), "chart-guardrails"),
    ]
    if report.get("group_sequential"):
        charts.append(_chart(_boundary_chart(report), "chart-boundaries"))
    routes = report["routes"]
    route_rows = [
        [r["name"], f"{r['header']}: {r['value']}", r["variant"]] for r in routes["rules"]
    ]
    route_rows.append(["default (weighted)", "–", json.dumps(routes["weights"])])
    title = html.escape(f"abmesh report: {report['experiment']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px}}
.status{{font-size:1.4em;font-weight:bold}}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>{title}</h1>
<p class="status" id="decision">{html.escape(d["status"])}{f": {html.escape(d['winner'])}" if d["winner"] else ""}</p>
<p>phase {html.escape(report["phase"])}, experiment {html.escape(report["status"])}, SRM p {_fmt(d["srm_pvalue"])},
weights {html.escape(json.dumps(report["weights"]))}</p>
<h2>Why</h2><ul id="reasons">{reasons}</ul>
<h2>Effects</h2>{_table(["metric", "role", "variant", "verdict", "effect", "relative", "low", "high", "p"], metric_rows)}
<h2>Arms</h2>{_table(["metric", "variant", "units", "mean"], arm_rows)}
<h2>Route plan</h2>{_table(["route", "match", "to"], route_rows)}
{_shadow_html(report.get("shadow"))}
<h2>Over time</h2>{"".join(charts)}
<h2>Rollout log</h2>{_table(["at", "action", "weights", "what"], audit_rows)}
</body></html>"""  # noqa: E501
