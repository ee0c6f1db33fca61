"""The index of every experiment's report, as data: one row per experiment with its headline,
state, outcome, phase, the decision, the primary metric's effect per treatment and the units
per arm.

A row is told from the look its report is told from (experiments.report_history.basis_look):
for a concluded experiment the look that concluded it, read alone (`last_look`); for any other
one look taken now with `decide` on the current statistics.  So a row and its report agree,
while the index reads none of what makes a report costly: the look history, snapshots, the
audit log, segments, route plans and charts.  An experiment whose data cannot be read is listed
with the error; an unreachable store fails the whole index (StoreError), since every row would
say so."""

from __future__ import annotations

from typing import Any

from experiments.errors import StoreError
from experiments.report import point_lift
from experiments.report_history import basis_look, headline
from experiments.reporting import position
from experiments.store import ExperimentRecord, Store


def index_rows(store: Store) -> list[dict[str, Any]]:
    """Every experiment's row, by name (see `row_head` and `_told`); `error` is None, or why
    the experiment's row could not be told."""
    rows = []
    for record in sorted(store.list_experiments(), key=lambda r: r.name):
        row = row_head(record)
        try:
            row |= _told(store, record)
        except StoreError:
            raise
        except Exception as exc:  # this experiment's data, not the index: list it as it is
            row["error"] = error_text(exc)
        rows.append(row)
    return rows


def row_head(record: ExperimentRecord) -> dict[str, Any]:
    """What the record says for sure; the rest is None until told from the data."""
    outcome = record.status.outcome
    return {
        "experiment": record.name,
        "description": record.spec.description,
        "state": record.state.value,
        "outcome": outcome.value if outcome else None,
        "phase": record.phase,
        "updated_at": record.updated_at,
        "headline": None,
        "position": None,
        "decision": None,
        "primary": None,
        "units": None,
        "error": None,
    }


def _told(store: Store, record: ExperimentRecord) -> dict[str, Any]:
    """`headline` as the report's; `position` of the rollout; `decision` {status, winner,
    reasons, at, by, observational} of the look; `primary` {metric, comparisons: [{variant,
    verdict, effect, low, high, scale, lift}]}, where `scale` says whether effect and interval
    are the difference (absolute) or the lift (b − a)/|a| (relative), and `lift` is the point
    lift where the control mean is not zero; `units` per arm."""
    from analysis import ExperimentStats

    last = store.last_look(record.uid, record.phase)
    look = basis_look(store, record, [last] if last else [])
    arms = look["arms"]
    spec, primary = record.spec, None
    if spec.metrics is not None:
        name, control = spec.metrics.primary.name, spec.control_variant.key
        per_arm = ExperimentStats.from_report(arms).metrics.get(name, {})
        primary = {
            "metric": name,
            "comparisons": [
                {"variant": c["variant"], "verdict": c["verdict"], "effect": c["effect"],
                 "low": c["low"], "high": c["high"],
                 "scale": "relative" if c.get("relative") else "absolute",
                 "lift": c["effect"] if c.get("relative")
                 else point_lift(per_arm, control, c["variant"])}
                for c in look["comparisons"] if c["metric"] == name
            ],
        }  # fmt: skip
    return {
        "headline": headline(record, look),
        "position": position(record),
        "decision": {key: look[key] for key in
                     ("status", "winner", "reasons", "at", "by", "observational")},
        "primary": primary,
        "units": {variant: arm["exposures"] for variant, arm in arms.items()},
    }  # fmt: skip


def error_text(exc: Exception) -> str:
    """An error as a row shows it: its kind and message."""
    return f"{type(exc).__name__}: {exc}"
