"""What clients report: events, validated each on its own and then folded per experiment, and
the exposures of local evaluation (the variant a client served), validated the same way.

A bad item is rejected alone, with a message naming its position and field; the rest of the
batch is applied.  Validation is hand-written rather than a pydantic model per item: a batch of
500 events is validated in about a millisecond, and each item gets its own error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from experiments.folding import PRE, Event, FoldPlan
from experiments.names import unit_problem
from experiments.spec import ExperimentSpec
from experiments.spec_segments import value_problem
from experiments.status import State
from experiments.store import ExperimentRecord, StatsStore

MAX_ID_CHARS = 128
MAX_ABS_VALUE = 1e15  # sums of squares of such values stay far from float overflow
# A timestamp this far ahead of the server's clock is a mistake, not clock skew: most often
# milliseconds sent as seconds.  A day still lets through a client whose clock is wrong by a
# time zone.
MAX_FUTURE_S = 86_400.0
FIELDS = frozenset(
    {"event_id", "experiment", "unit", "metric", "value", "timestamp", "pre_period", "segments"}
)
EXPOSURE_FIELDS = frozenset({"experiment", "unit", "variant", "generation", "timestamp",
                             "segments"})  # fmt: skip
T = TypeVar("T")


class RejectedEventError(ValueError):
    """Why one item (an event, an exposure) is not acceptable; `reason` is a short label for
    metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Parsed:
    """A batch split into valid events per experiment and rejections by position."""

    by_experiment: dict[str, list[tuple[int, Event]]] = field(default_factory=dict)
    rejected: list[tuple[int, RejectedEventError]] = field(default_factory=list)


def parse_events(
    items: Sequence[Any],
    experiments: Mapping[str, ExperimentRecord],
    plans: Mapping[str, FoldPlan],
    *,
    now: float | None = None,
) -> Parsed:
    at = time.time() if now is None else now
    valid, rejected = _each(items, "events", lambda item: _parse(item, experiments, plans, at))
    parsed = Parsed(rejected=rejected)
    for i, (name, event) in valid:
        parsed.by_experiment.setdefault(name, []).append((i, event))
    return parsed


def _each(
    items: Sequence[Any], key: str, parse: Callable[[Any], T]
) -> tuple[list[tuple[int, T]], list[tuple[int, RejectedEventError]]]:
    """Parse each item alone: the valid ones, and the rejections named `key[i].field`."""
    valid, rejected = [], []
    for i, item in enumerate(items):
        try:
            valid.append((i, parse(item)))
        except RejectedEventError as exc:
            rejected.append((i, RejectedEventError(exc.reason, f"{key}[{i}].{exc}")))
    return valid, rejected


def _parse(
    item: Any,
    experiments: Mapping[str, ExperimentRecord],
    plans: Mapping[str, FoldPlan],
    now: float,
) -> tuple[str, Event]:
    if isinstance(item, Mapping) and item.get("value", 0) is None:
        # Counting it as the default 1 would turn a missing revenue into one cent.
        raise RejectedEventError("value", "value: null; send a number, or leave it out to count 1")
    item = _known(item, FIELDS, "event")
    event_id = _text(item, "event_id")
    if len(event_id) > MAX_ID_CHARS or unit_problem(event_id) is not None:
        raise RejectedEventError(
            "event_id", f"event_id: must be 1-{MAX_ID_CHARS} characters without control characters"
        )
    record = _record(item, experiments)
    name = record.name
    if record.state is State.CONCLUDED:
        # Its analysis is final: a later event would change the verdict it ended with.
        outcome = record.status.outcome.value if record.status.outcome else "concluded"
        raise RejectedEventError(
            "concluded",
            f"experiment: {name!r} concluded ({outcome}); its events are no longer counted",
        )
    unit = _unit(item)
    metric = _text(item, "metric")
    plan = plans[name]
    if not plan.accepts(metric):
        raise RejectedEventError("metric", f"metric: {_metric_problem(metric, plan, name)}")
    pre = item.get("pre_period", False)
    if not isinstance(pre, bool):
        raise RejectedEventError("pre_period", "pre_period: must be true or false")
    value = _number(item, "value", default=1.0)
    if abs(value) > MAX_ABS_VALUE:
        raise RejectedEventError("value", f"value: must be at most {MAX_ABS_VALUE:g} in size")
    segments = parse_segments(item.get("segments"), record.spec)
    return name, Event(
        event_id, unit, metric + PRE if pre else metric, value, parse_timestamp(item, now),
        segments,
    )  # fmt: skip


def parse_segments(raw: Any, spec: ExperimentSpec) -> tuple[tuple[str, str], ...]:
    """An item's `segments` ({attribute: value} of the spec's declared attributes) as sorted
    pairs; () if absent.  A number is taken as its text (a bucket index)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise RejectedEventError(
            "segments", f"segments: must be an object of attribute: value, got {type(raw).__name__}"
        )
    declared = [s.name for s in spec.segments]
    pairs = []
    for attribute, value in raw.items():
        if attribute not in declared:
            listed = f"declared: {', '.join(declared)}" if declared else "it declares none"
            raise RejectedEventError(
                "segments",
                f"segments.{str(attribute)[:64]}: not a segment of {spec.name!r} ({listed})",
            )
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise RejectedEventError(
                "segments",
                f"segments.{attribute}: must be a string, got {type(value).__name__}",
            )
        problem = value_problem(value)
        if problem is not None:
            raise RejectedEventError("segments", f"segments.{attribute}: {problem}")
        pairs.append((attribute, value))
    return tuple(sorted(pairs))


def _known(item: Any, fields: frozenset[str], what: str) -> Mapping[str, Any]:
    """The item's fields without nulls (null: absent, the default), all of them known."""
    if not isinstance(item, Mapping):
        raise RejectedEventError("type", f"{what}: must be an object, got {type(item).__name__}")
    given: Mapping[str, Any] = item
    if None in given.values():
        given = {k: v for k, v in given.items() if v is not None}
    if not given.keys() <= fields:
        unknown = given.keys() - fields
        raise RejectedEventError(
            "field", f"{sorted(unknown)[0]}: unknown field (known: {', '.join(sorted(fields))})"
        )
    return given


def _record(
    item: Mapping[str, Any], experiments: Mapping[str, ExperimentRecord]
) -> ExperimentRecord:
    name = _text(item, "experiment")
    if name not in experiments:
        raise RejectedEventError("experiment", f"experiment: {name[:100]!r} does not exist")
    return experiments[name]


def _unit(item: Mapping[str, Any]) -> str:
    unit = _text(item, "unit")
    problem = unit_problem(unit)
    if problem is not None:
        raise RejectedEventError("unit", f"unit: {problem}")
    return unit


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        raise RejectedEventError(key, f"{key}: required")
    if not isinstance(value, str):
        raise RejectedEventError(key, f"{key}: must be a string, got {type(value).__name__}")
    return value


def _number(item: Mapping[str, Any], key: str, default: float) -> float:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RejectedEventError(key, f"{key}: must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        raise RejectedEventError(key, f"{key}: too large") from None
    if not math.isfinite(value):
        raise RejectedEventError(key, f"{key}: must be finite, got {value}")
    return value


def parse_timestamp(item: Mapping[str, Any], now: float) -> float:
    """The item's `timestamp` in unix seconds (`now` if absent), within the accepted bounds."""
    raw = item.get("timestamp")
    if raw is None:
        return now
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw[:64])
        except ValueError:
            raise RejectedEventError(
                "timestamp", "timestamp: not unix seconds or an ISO 8601 time"
            ) from None
        if parsed.tzinfo is None:
            raise RejectedEventError("timestamp", "timestamp: an ISO 8601 time needs a UTC offset")
        value = parsed.timestamp()
    else:
        value = _number(item, "timestamp", now)
    if value < 0:
        raise RejectedEventError("timestamp", "timestamp: must not be before 1970")
    if value > now + MAX_FUTURE_S:
        ahead = f"{(value - now) / 86_400:.3g} days ahead of the server's clock"
        hint = "" if isinstance(raw, str) else "; milliseconds instead of seconds?"
        raise RejectedEventError(
            "timestamp", f"timestamp: {ahead} (at most {MAX_FUTURE_S / 86_400:g}){hint}"
        )
    return value


def _metric_problem(metric: str, plan: FoldPlan, experiment: str) -> str:
    if metric in plan.ratios:
        num, den = plan.ratios[metric]
        return f"{metric!r} is a ratio: send its numerator {num!r} and denominator {den!r}"
    known = sorted(s for s in plan.series if not s.endswith(PRE))
    return (
        f"{metric[:100]!r} is not a metric of {experiment!r} (known: {', '.join(known) or 'none'})"
    )


@dataclass
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, RejectedEventError]] = field(default_factory=list)


def ingest(
    store: StatsStore,
    parsed: Parsed,
    experiments: Mapping[str, ExperimentRecord],
    plans: Mapping[str, FoldPlan],
) -> Outcome:
    """Append each experiment's events to the store's log (blocking: run it in a thread); they
    are folded behind.  A StoreError leaves the experiments before it appended and the rest
    not: a retry of the whole batch is safe, the appended events are then duplicates."""
    outcome = Outcome(rejected=list(parsed.rejected))
    for name, indexed in parsed.by_experiment.items():
        record = experiments[name]
        result = store.append_events(name, record.phase, plans[name], [e for _, e in indexed])
        outcome.accepted += result.accepted
        outcome.duplicates += len(result.duplicates)
    return outcome


@dataclass(frozen=True, slots=True)
class Exposure:
    """A variant a client served (local evaluation), recorded as it is: the server does not
    derive it again, since the split may have changed since."""

    record: ExperimentRecord  # the experiment as this replica knows it
    unit: str
    variant: str
    at: float
    generation: int  # of the spec the client assigned with; 0: not given
    segments: tuple[tuple[str, str], ...] = ()


def parse_exposures(
    items: Sequence[Any],
    experiments: Mapping[str, ExperimentRecord],
    *,
    now: float | None = None,
) -> tuple[list[tuple[int, Exposure]], list[tuple[int, RejectedEventError]]]:
    """The valid exposures and the rejections, each by position."""
    at = time.time() if now is None else now
    return _each(items, "exposures", lambda item: _parse_exposure(item, experiments, at))


def _parse_exposure(item: Any, experiments: Mapping[str, ExperimentRecord], now: float) -> Exposure:
    item = _known(item, EXPOSURE_FIELDS, "exposure")
    record = _record(item, experiments)
    if record.state is not State.RUNNING:
        # As on the assign path: only a running experiment exposes anyone.
        raise RejectedEventError(
            "state", f"experiment: {record.name!r} is {record.state.value}, not running"
        )
    unit = _unit(item)
    variant = _text(item, "variant")
    keys = [v.key for v in record.spec.variants]
    if variant not in keys:
        raise RejectedEventError(
            "variant",
            f"variant: {variant[:100]!r} is not a variant of {record.name!r}"
            f" (known: {', '.join(keys)})",
        )
    generation = item.get("generation", 0)
    if "generation" in item:
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise RejectedEventError("generation", "generation: must be an integer of at least 1")
        if generation > record.generation:
            raise RejectedEventError(
                "generation",
                f"generation: ahead of {record.name!r}, whose spec is at generation"
                f" {record.generation}",
            )
    segments = parse_segments(item.get("segments"), record.spec)
    return Exposure(record, unit, variant, parse_timestamp(item, now), generation, segments)
