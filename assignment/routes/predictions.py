"""Predictions of the stable model and the candidate (the shadow phase): models post them in
batches; the store pairs them by request id (Envoy's `x-request-id` reaches the primary and
the mirror alike) and folds the pairs (experiments.predictions)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from assignment.deps import ReaderDeps, StateDep, WriterDeps
from assignment.models import ErrorOut, RejectedOut
from assignment.predictions_in import ParsedPredictions, parse_predictions
from assignment.routes.bounded import bounded
from assignment.routes.strict_json import StrictJSONRoute
from experiments.predictions import shadow_of
from experiments.store import ExperimentRecord, Store
from experiments.store.protocol import check_phase

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422, 503)
}


class PredictionsIn(BaseModel):
    experiment: str | None = Field(
        default=None, description="The experiment of every item that names none."
    )
    predictions: list[Any] = Field(
        description="Predictions {request_id, variant, score (number), label (string or"
        " integer), latency_ms, experiment}: a score or a label at least; each is validated on"
        " its own."
    )


class PredictionsOut(BaseModel):
    accepted: int
    duplicates: int = Field(description="Sent before (a retried batch): nothing changed.")
    paired: int = Field(description="Pairs completed by this batch.")
    rejected: list[RejectedOut]


@router.post(
    "/predictions",
    response_model=PredictionsOut,
    responses=ERRORS,
    tags=["events"],
    dependencies=WriterDeps,
)
async def post_predictions(body: PredictionsIn, state: StateDep) -> dict[str, Any]:
    """Record a batch of predictions; a bad item is rejected alone.  503 with Retry-After when
    the store is down or slow: resend the batch, what was recorded comes back as duplicates."""
    limit = state.settings.max_events
    if len(body.predictions) > limit:
        raise HTTPException(
            413, f"batch of {len(body.predictions)} predictions exceeds the limit of {limit}"
        )
    until = time.monotonic() + state.settings.events_timeout
    now = time.time()
    experiments = state.cache.current().experiments
    parsed = parse_predictions(body.predictions, experiments, body.experiment, now)
    if any(r.reason in ("experiment", "state") for _, r in parsed.rejected):
        await state.lookups.call(state.cache.refresh, deadline=until - time.monotonic())
        experiments = state.cache.configs.experiments
        parsed = parse_predictions(body.predictions, experiments, body.experiment, now)
    totals = await state.write(
        _record, state.store, parsed, experiments, now, deadline=until - time.monotonic()
    )
    return {
        **totals,
        "rejected": [
            {"index": i, "error": str(r)} for i, r in sorted(parsed.rejected, key=lambda x: x[0])
        ],
    }


def _record(
    store: Store,
    parsed: ParsedPredictions,
    experiments: dict[str, ExperimentRecord],
    now: float,
) -> dict[str, int]:
    totals = {"accepted": 0, "duplicates": 0, "paired": 0}
    for name, indexed in parsed.by_experiment.items():
        record = experiments[name]
        shadow = shadow_of(record.spec)
        result = store.add_predictions(
            name,
            record.phase,
            [p for _, p in indexed],
            score_range=shadow.score_range,
            window_s=shadow.pair_window_s,
            now=now,
        )
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
        totals["paired"] += result.paired
    return totals


@router.get(
    "/experiments/{name}/shadow", tags=["stats"], responses=ERRORS, dependencies=ReaderDeps
)
@bounded
def get_shadow(name: str, state: StateDep, phase: str | None = None) -> dict[str, Any]:
    """The shadow comparison of a phase (default: the current one): the paired predictions'
    sums and the verdict the controller would take on them now."""
    from analysis.shadow import judge_shadow  # scipy: loaded on first use

    record = state.store.get_experiment(name)
    shadow, which = shadow_of(record.spec), check_phase(phase or record.phase)
    sums = state.store.shadow_sums(name, which, score_range=shadow.score_range,
                                   window_s=shadow.pair_window_s)  # fmt: skip
    return {
        "experiment": name,
        "phase": which,
        "sums": sums.to_dict(),
        "verdict": judge_shadow(sums, shadow).to_dict(),
    }
