"""The index of every experiment's report as one self-contained HTML page: a table of the rows
of experiments.report_index, each experiment linked to its report (`links`: {"html", "json"},
set by whoever wrote or serves the reports; without them, no link).  No plotly: a few lines of
script sort the table by a column (click its head) and filter it by text, and read `?q=TEXT`
and `?sort=COLUMN` (`-COLUMN` descending) from the address, so a filtered view can be linked.
Everything from a spec or the data is escaped: descriptions and reasons are free text."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from analysis.decision import fmt

# (key for ?sort=, heading, sorts as a number)
COLUMNS = (
    ("experiment", "experiment", False),
    ("state", "state", False),
    ("outcome", "outcome", False),
    ("phase", "phase", False),
    ("decision", "decision", False),
    ("primary", "primary metric", False),
    ("effect", "effect [interval]", False),
    ("lift", "lift", True),
    ("units", "units per arm", True),
    ("updated", "last updated (UTC)", True),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35em 0.6em; text-align: left;
         vertical-align: top; }
th { cursor: pointer; background: #f4f4f4; white-space: nowrap; }
th[data-order="asc"]::after { content: " ▲"; }
th[data-order="desc"]::after { content: " ▼"; }
.headline { font-weight: 600; font-size: 0.85em; }
.description { color: #666; font-size: 0.85em; max-width: 30em; }
.error { color: #b00020; }
.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
"""

SCRIPT = """
(() => {
  const table = document.getElementById("experiments");
  const body = table.tBodies[0];
  const filter = document.getElementById("filter");
  const heads = [...table.tHead.rows[0].cells];
  const applyFilter = () => {
    const text = filter.value.trim().toLowerCase();
    for (const row of body.rows) {
      row.hidden = text !== "" && !row.textContent.toLowerCase().includes(text);
    }
  };
  const sortBy = (head, order) => {
    const column = head.cellIndex;
    const numeric = head.dataset.numeric === "true";
    const key = (row) => {
      const cell = row.cells[column];
      const value = cell.dataset.sort ?? cell.textContent;
      return numeric ? (value === "" ? -Infinity : Number(value)) : value.toLowerCase();
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const c = numeric ? x - y : x.localeCompare(y);
      return order === "asc" ? c : -c;
    });
    for (const h of heads) delete h.dataset.order;
    head.dataset.order = order;
    body.append(...rows);
  };
  table.tHead.addEventListener("click", (event) => {
    const head = event.target.closest("th");
    if (head) sortBy(head, head.dataset.order === "asc" ? "desc" : "asc");
  });
  filter.addEventListener("input", applyFilter);
  const query = new URLSearchParams(location.search);
  filter.value = query.get("q") ?? "";
  applyFilter();
  const sort = query.get("sort");
  if (sort) {
    const head = heads.find((h) => h.dataset.key === sort.replace(/^-/, ""));
    if (head) sortBy(head, sort.startsWith("-") ? "desc" : "asc");
  }
})();
"""


def render_index(
    rows: Sequence[Mapping[str, Any]], *, built_at: float, title: str = "abmesh: experiments"
) -> str:
    heads = "".join(
        f'<th data-key="{key}" data-numeric="{str(numeric).lower()}">{head}</th>'
        for key, head, numeric in COLUMNS
    )
    body = "".join(_row(row) for row in rows) or (
        f'<tr><td colspan="{len(COLUMNS)}">no experiments in this store</td></tr>'
    )
    count = f"{len(rows)} experiment{'' if len(rows) == 1 else 's'}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{count}; built {_when(built_at)} UTC.
<input id="filter" type="search" placeholder="filter" aria-label="filter the experiments"></p>
<table id="experiments"><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>
<script>{SCRIPT}</script></body></html>
"""


def _row(row: Mapping[str, Any]) -> str:
    name = html.escape(row["experiment"])
    links = row.get("links") or {}
    label = f'<a href="{html.escape(links["html"])}">{name}</a>' if "html" in links else name
    if "json" in links:
        label += f' <a href="{html.escape(links["json"])}" class="json">json</a>'
    if row["headline"]:
        label += f'<div class="headline">{html.escape(row["headline"])}</div>'
    description = row["description"]
    if description:
        label += f'<div class="description">{html.escape(_short(description))}</div>'
    primary = row["primary"]
    comparisons = primary["comparisons"] if primary else []
    units = row["units"]
    cells = [
        f'<td data-sort="{name}">{label}</td>',
        _cell(row["state"]),
        _cell(row["outcome"] or ""),
        _cell(_phase(row), title=(row["position"] or {}).get("reason", "")),
        _decision(row),
        _cell(primary["metric"] if primary else ""),
        _cell("; ".join(_effect(c) for c in comparisons), "num"),
        _number(_lifts(comparisons), comparisons[0]["lift"] if comparisons else None),
        _number(_units(units), sum(units.values()) if units else None),
        _number(_when(row["updated_at"]), row["updated_at"]),
    ]
    return f'<tr id="row-{name}">{"".join(cells)}</tr>'


def _cell(text: str, css: str = "", title: str = "") -> str:
    attributes = (f' class="{css}"' if css else "") + (
        f' title="{html.escape(title)}"' if title else ""
    )
    return f"<td{attributes}>{html.escape(text)}</td>"


def _number(text: str, sort: float | None) -> str:
    """A cell that sorts by `sort` (empty: first, ascending) rather than by its text."""
    key = "" if sort is None else repr(sort)
    return f'<td class="num" data-sort="{key}">{html.escape(text)}</td>'


def _phase(row: Mapping[str, Any]) -> str:
    where, phase = row["position"], str(row["phase"])
    if where is None:
        return phase
    return (
        f"{phase} (rollout phase {where['phase']}/{where['of']} {where['kind']}, "
        f"step {where['step']}, {where['rollout']})"
    )


def _decision(row: Mapping[str, Any]) -> str:
    if row["error"]:
        return f'<td class="error">error: {html.escape(row["error"])}</td>'
    decision = row["decision"]
    winner = f": {decision['winner']}" if decision["winner"] else ""
    if decision["observational"]:
        winner += " (observed, not gated)"
    reasons = html.escape("\n".join(decision["reasons"]))
    return f'<td title="{reasons}">{html.escape(decision["status"] + winner)}</td>'


def _effect(c: Mapping[str, Any]) -> str:
    """`treatment +0.04 [0.02, 0.06]`; a lift in percent: `treatment +4.1% [1.2%, 7%]`."""
    if c["scale"] == "relative":
        effect, low, high = (_percent(c[k]) for k in ("effect", "low", "high"))
    else:
        effect = "n/a" if c["effect"] is None else f"{c['effect']:+.4g}"
        low, high = fmt(c["low"]), fmt(c["high"])
    return f"{c['variant']} {effect} [{low}, {high}]"


def _lifts(comparisons: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(f"{c['variant']} {_percent(c['lift'])}" for c in comparisons)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.3g}%"


def _units(units: Mapping[str, float] | None) -> str:
    return " · ".join(f"{v} {n:g}" for v, n in units.items()) if units else ""


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
