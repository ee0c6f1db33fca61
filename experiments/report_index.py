"""The index of every experiment's report, as data: one row per experiment with its state,
outcome, phase, the decision, the primary metric's effect per treatment and the units per arm.

A row is what the experiment's report headlines, without building the report: the record, the
analysed phase's per-arm statistics and the report's own look with `decide` (the same phase,
the spec as that phase was planned, the controller's saved state, no guardrail readings), so a
row and its report agree.  Snapshots, the audit log, route plans and charts, which make most of
a report's cost, are not read, and the looks of every experiment are taken in one vectorised
`decide_many` pass.  An experiment whose data cannot be read is listed with the error; an
unreachable store fails the whole index (StoreError), since every row would say so."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from experiments.errors import StoreError
from experiments.report import _relative
from experiments.reporting import analysed_spec, phase_report, position
from experiments.store import ExperimentRecord, Store

if TYPE_CHECKING:
    from analysis import Decision, ExperimentStats
    from analysis.decide import Request


def index_rows(store: Store) -> list[dict[str, Any]]:
    """Every experiment's row, by name: see `row_head` and `_judged` for the fields; `error`
    is None, or why the experiment's statistics could not be judged."""
    rows: list[dict[str, Any]] = []
    judged: list[tuple[dict[str, Any], ExperimentRecord, Request]] = []
    for record in sorted(store.list_experiments(), key=lambda r: r.name):
        row = row_head(record)
        rows.append(row)
        try:
            row["position"] = position(record)
            judged.append((row, record, look_request(store, record)))
        except StoreError:
            raise
        except Exception as exc:  # this experiment's data, not the index: list it as it is
            row["error"] = error_text(exc)
    decisions = decide_each([request for _, _, request in judged])
    for (row, record, request), decision in zip(judged, decisions, strict=True):
        if isinstance(decision, Exception):
            row["error"] = error_text(decision)
        else:
            row |= _judged(record, request[1], decision)
    return rows


def row_head(record: ExperimentRecord) -> dict[str, Any]:
    """What the record says for sure; the rollout's position and the statistics' fields are
    None until read."""
    outcome = record.status.outcome
    return {
        "experiment": record.name,
        "description": record.spec.description,
        "state": record.state.value,
        "outcome": outcome.value if outcome else None,
        "phase": record.phase,
        "position": None,
        "updated_at": record.updated_at,
        "decision": None,
        "primary": None,
        "units": None,
        "error": None,
    }


def look_request(store: Store, record: ExperimentRecord) -> Request:
    """The report's look at `record`, as a `decide` request."""
    from analysis import DecisionState, ExperimentStats

    stats = ExperimentStats.from_report(phase_report(store, record, record.phase)["arms"])
    saved = (record.status.rollout or {}).get("decision")
    previous = DecisionState.from_dict(saved) if saved else None
    return analysed_spec(record, record.phase), stats, (), previous


def decide_each(requests: Sequence[Request]) -> list[Decision | Exception]:
    """`decide_many`, or where one request breaks the shared pass, each alone so that only
    that one fails (its exception in its place)."""
    from analysis import decide_many

    try:
        return list(decide_many(requests))
    except Exception:
        return [_decide_alone(request) for request in requests]


def _decide_alone(request: Request) -> Decision | Exception:
    from analysis import decide

    try:
        return decide(*request)
    except Exception as exc:
        return exc


def _judged(record: ExperimentRecord, stats: ExperimentStats, decision: Decision) -> dict[str, Any]:
    """`decision` {status, winner, reasons}; `primary` {metric, comparisons: [{variant,
    verdict, effect, low, high, scale, lift}]} where `scale` says whether effect and interval
    are the difference (absolute) or the lift (b − a)/|a| (relative), and `lift` is the point
    lift where the control mean is not zero; `units` per arm."""
    spec = record.spec
    primary = None
    if spec.metrics is not None:
        name = spec.metrics.primary.name
        per_arm = stats.metrics.get(name, {})
        control = spec.control_variant.key
        primary = {
            "metric": name,
            "comparisons": [
                {"variant": c.variant, "verdict": c.verdict, "effect": c.estimate,
                 "low": c.ci_low, "high": c.ci_high,
                 "scale": "relative" if c.relative else "absolute",
                 "lift": c.estimate if c.relative else _relative(per_arm, control, c.variant)}
                for c in decision.comparisons if c.metric == name
            ],
        }  # fmt: skip
    return {
        "decision": {"status": decision.status.value, "winner": decision.winner,
                     "reasons": list(decision.reasons)},
        "primary": primary,
        "units": dict(stats.units),
    }  # fmt: skip


def error_text(exc: Exception) -> str:
    """An error as a row shows it: its kind and message."""
    return f"{type(exc).__name__}: {exc}"
