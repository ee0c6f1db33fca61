"""The report as one self-contained HTML page: plotly's script is embedded once, so the page
opens offline; every chart is drawn from the report JSON (experiments.report), those over
time by experiments.report_charts."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from experiments import report_charts as charts
from experiments.report_distributions import QUANTILE_NAMES, distribution_figures
from experiments.report_segments import segments_figure


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]], table_id: str = "") -> str:
    cells = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    named = f' id="{table_id}"' if table_id else ""
    return f"<table{named}><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{cells}</table>"


def _chart(fig: go.Figure, chart_id: str, height: int = 360) -> str:
    fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=chart_id))


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


def _segments_html(report: dict[str, Any]) -> str:
    """Per segment and treatment, each metric's effect and interval with its flags; the
    primary metric's forest chart."""
    section = report.get("segments")
    if section is None:
        return ""
    rows = [
        [f"{s['attribute']}={s['value']}", c["variant"], c["metric"], c["effect"],
         c["relative_effect"], c["low"], c["high"], c["pvalue"], c["adjusted_pvalue"],
         (c["direction"] or "") + (" (confined)" if c["confined"] else "") if c["flagged"]
         else "", "rollout" if c["harm_confirmed"] else "", s["srm_pvalue"], c["note"] or ""]
        for s in section["segments"] for c in s["comparisons"]
    ]  # fmt: skip
    said = section.get("harm_for_rollout", {}).get("reasons", [])
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in said)
    head = ["segment", "variant", "metric", "effect", "relative", "low", "high", "p", "BH p",
            "flagged", "Bonferroni", "SRM p", "note"]  # fmt: skip
    primary = next((m["metric"] for m in report["metrics"] if m["role"] == "primary"), "")
    chart = _chart(segments_figure(section, primary), "chart-segments") if rows else ""
    note = f"<p>{html.escape(section['note'])}</p>" if section.get("note") else ""
    return (f'<h2 id="segments">Segments</h2>{note}<ul>{reasons}</ul>'
            f'{_table(head, rows, "segments-table")}{chart}')  # fmt: skip


def _distributions_html(report: dict[str, Any]) -> str:
    figures = distribution_figures(report.get("distributions"))
    if not figures:
        return ""
    rows = [[series, variant, d["units"], d["zeros"], d["mean"], *d["quantiles"].values()]
            for series, per_arm in report["distributions"].items()
            for variant, d in sorted(per_arm.items())]  # fmt: skip
    head = ["metric", "variant", "units", "at 0", "mean", *QUANTILE_NAMES]
    return (f'<h2 id="distributions">Distributions per unit</h2>{_table(head, rows)}'
            + "".join(_chart(fig, chart_id) for chart_id, fig in figures))


def _basis(report: dict[str, Any]) -> str:
    """Which look the decision and tables are from."""
    d = report["decision"]
    seen = ", observed, not gated" if d["observational"] else ""
    taken = "taken now" if d["by"] == "report" else f"by {d['by']} at {_when(d['at'])}"
    recorded = sum(p["phase"] == report["phase"] and "look" in p for p in report["over_time"])
    return (f"phase {report['phase']}, look {d['look']} ({taken}{seen}): {d['status']}; "
            f"{recorded} looks recorded in the phase")  # fmt: skip


def _srm(decision: dict[str, Any]) -> str:
    if decision["observational"]:
        return "SRM not judged (the split moved)"
    return f"SRM p {_fmt(decision['srm_pvalue'])}"


def _weights(weights: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g} %" for k, v in weights.items())


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
    clock = charts.clock_of(report)
    over_time = [
        _chart(charts.effect_chart(report, clock), "chart-effect"),
        _chart(charts.pvalue_chart(report, clock), "chart-pvalue"),
        _chart(charts.exposure_chart(report, clock), "chart-exposures"),
        _chart(charts.traffic_chart(report, clock), "chart-traffic"),
    ]
    if report.get("group_sequential"):
        over_time.append(_chart(charts.boundary_chart(report), "chart-boundaries"))
    guardrails = "".join(
        f'<div class="panel">{_chart(fig, chart_id, 260)}</div>'
        for chart_id, fig in charts.guardrail_charts(report, clock)
    )
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
.status{{font-size:1.4em;font-weight:bold}}
.panels{{display:grid;grid-template-columns:1fr 1fr;gap:8px}}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>{title}</h1>
<p class="status" id="decision">{html.escape(report["headline"])}</p>
<p id="basis">{html.escape(_basis(report))}; {_srm(d)};
served now: <span id="weights">{html.escape(_weights(report["weights"]))}</span></p>
<h2>Why</h2><ul id="reasons">{reasons}</ul>
<h2>Effects</h2>{_table(["metric", "role", "variant", "verdict", "effect", "relative", "low", "high", "p"], metric_rows)}
<h2>Arms</h2>{_table(["metric", "variant", "units", "mean"], arm_rows)}
<h2>Route plan</h2>{_table(["route", "match", "to"], route_rows)}
{_shadow_html(report.get("shadow"))}
{_segments_html(report)}
{_distributions_html(report)}
<h2>Over time</h2>{"".join(over_time)}
<h2>Guardrails</h2><div class="panels">{guardrails or "<p>no guardrail readings</p>"}</div>
<h2>Rollout log</h2>{_table(["at", "action", "weights", "what"], audit_rows, "log")}
</body></html>"""  # noqa: E501
