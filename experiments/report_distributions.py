"""The report's distributions: per arm, how the unit values of each `sum`/`mean` metric are
spread (the folded bins of experiments.distributions), as quantiles and an ECDF.  Two arms
with the same mean can differ in who moved: a few heavy spenders or everyone a little."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from experiments.distributions import quantile

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
QUANTILE_NAMES = tuple(f"p{round(q * 100)}" for q in QUANTILES)


def distributions_section(phase_report: dict[str, Any]) -> dict[str, Any] | None:
    """`{series: {variant: {units, zeros, mean, quantiles, ecdf: {x, y}}}}`, or None when the
    phase keeps no bins (no sum or mean metric, or a phase older than the bins)."""
    dists = phase_report.get("distributions")
    if not dists:
        return None
    arms = phase_report["arms"]
    out: dict[str, Any] = {}
    for series, per_arm in dists.items():
        out[series] = {}
        for variant, dist in per_arm.items():
            metric = arms.get(variant, {}).get("metrics", {}).get(series, {})
            n = metric.get("n") or 0
            out[series][variant] = {
                "units": dist["units"],
                "zeros": dist["zeros"],
                "mean": metric.get("sum", 0.0) / n if n else None,
                "quantiles": {
                    name: quantile(dist, q)
                    for name, q in zip(QUANTILE_NAMES, QUANTILES, strict=True)
                },
                "ecdf": _ecdf(dist),
            }
    return out


def _ecdf(dist: dict[str, Any]) -> dict[str, list[float]]:
    """The share of units at or below each bin's upper edge.  Units at 0 count from the first
    positive bin on (a log axis has no 0): where the line starts is the share at or below 0."""
    total = dist["units"]
    xs: list[float] = []
    ys: list[float] = []
    seen, zeros = 0, dist["zeros"]
    for low, high, count in dist["bins"]:
        if low > 0 and zeros:
            seen, zeros = seen + zeros, 0
        seen += count
        xs.append(high)
        ys.append(seen / total)
    if zeros:  # no positive value: the units at 0 end the line
        xs.append(0.0)
        ys.append((seen + zeros) / total)
    return {"x": xs, "y": ys}


def distribution_figures(section: dict[str, Any] | None) -> list[tuple[str, go.Figure]]:
    """One ECDF chart per metric, an arm per line (x on a log axis when every value shown is
    positive: the bins are logarithmic)."""
    figures: list[tuple[str, go.Figure]] = []
    for series, per_arm in (section or {}).items():
        fig = go.Figure()
        positive = True
        for variant, d in sorted(per_arm.items()):
            xs = d["ecdf"]["x"]
            positive = positive and all(x > 0 for x in xs)
            label = f"{variant} ({d['zeros']} of {d['units']} units at 0)"
            fig.add_scatter(x=xs, y=d["ecdf"]["y"], mode="lines", line_shape="hv", name=label)
        fig.update_layout(
            title=f"{series}: share of units at or below each value (ECDF)",
            xaxis_title=series,
            yaxis={"range": [0, 1], "title": "share of units"},
        )
        if positive:
            fig.update_xaxes(type="log")
        figures.append((f"chart-distribution-{series}", fig))
    return figures
