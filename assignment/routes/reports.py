"""`GET /v1/experiments/{name}/report` (JSON) and `/report.html` (a self-contained page), and
the index of every experiment's report, `GET /v1/reports` (JSON) and `/reports` (a page linking
to each `report.html`), behind the reader token.  Building a report, or the index's rows, reads
the store, so these are `@bounded` routes."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from assignment.deps import ReaderDeps, StateDep
from assignment.models import ErrorOut
from assignment.routes.bounded import bounded
from experiments.report import build_report
from experiments.report_html import render_html
from experiments.report_index import index_rows
from experiments.report_index_html import render_index
from experiments.store import Store

router = APIRouter(prefix="/v1/experiments", tags=["reports"], dependencies=ReaderDeps)
index_router = APIRouter(tags=["reports"], dependencies=ReaderDeps)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 503)
}
INDEX_ERRORS: dict[int | str, dict[str, Any]] = {code: ERRORS[code] for code in (401, 403, 503)}


@router.get("/{name}/report", responses=ERRORS)
@bounded
def report(name: str, state: StateDep) -> dict[str, Any]:
    """The decision, metrics per arm, effects over time, traffic, guardrails and audit log."""
    return build_report(state.store, name)


@router.get("/{name}/report.html", response_class=HTMLResponse, responses=ERRORS)
@bounded
def report_html(name: str, state: StateDep) -> HTMLResponse:
    return HTMLResponse(render_html(build_report(state.store, name)))


@index_router.get("/v1/reports", responses=INDEX_ERRORS)
@bounded
def report_index(state: StateDep) -> dict[str, Any]:
    """`{"built_at", "experiments": [row]}`: per experiment its state, outcome, phase, the
    decision, the primary metric's effect with its interval and lift, units per arm, when its
    record last changed, and `links` to its report (`error` instead, if its data cannot be
    read)."""
    return _index(state.store)


@index_router.get("/reports", response_class=HTMLResponse, responses=INDEX_ERRORS)
@bounded
def report_index_html(state: StateDep) -> HTMLResponse:
    """The index as a page, each experiment linked to its `report.html`."""
    index = _index(state.store)
    return HTMLResponse(render_index(index["experiments"], built_at=index["built_at"]))


def _index(store: Store) -> dict[str, Any]:
    rows = index_rows(store)
    for row in rows:
        if not row["error"]:
            path = f"{router.prefix}/{row['experiment']}/report"
            row["links"] = {"html": f"{path}.html", "json": path}
    return {"built_at": time.time(), "experiments": rows}
