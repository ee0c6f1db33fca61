"""`GET /v1/experiments/{name}/report` (JSON) and `/report.html` (a self-contained page),
behind the reader token.  Building a report reads the store, so these are `@bounded` routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from assignment.deps import ReaderDeps, StateDep
from assignment.models import ErrorOut
from assignment.routes.bounded import bounded
from experiments.report import build_report
from experiments.report_html import render_html

router = APIRouter(prefix="/v1/experiments", tags=["reports"], dependencies=ReaderDeps)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 503)
}


@router.get("/{name}/report", responses=ERRORS)
@bounded
def report(name: str, state: StateDep) -> dict[str, Any]:
    """The decision, metrics per arm, effects over time, traffic, guardrails and audit log."""
    return build_report(state.store, name)


@router.get("/{name}/report.html", response_class=HTMLResponse, responses=ERRORS)
@bounded
def report_html(name: str, state: StateDep) -> HTMLResponse:
    return HTMLResponse(render_html(build_report(state.store, name)))
