"""What models report in a shadow phase: predictions {request_id, variant, score?, label?,
latency_ms?}, each validated on its own like events (assignment.collector), then grouped per
experiment with the arm (stable or candidate) its variant plays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assignment.collector import (
    MAX_ABS_VALUE,
    MAX_ID_CHARS,
    RejectedEventError,
    _each,
    _known,
    _number,
    _record,
    _text,
)
from experiments.names import unit_problem
from experiments.predictions import Prediction
from experiments.status import State
from experiments.store import ExperimentRecord

FIELDS = frozenset({"experiment", "request_id", "variant", "score", "label", "latency_ms"})
MAX_LATENCY_MS = 3_600_000.0


@dataclass
class ParsedPredictions:
    by_experiment: dict[str, list[tuple[int, Prediction]]] = field(default_factory=dict)
    rejected: list[tuple[int, RejectedEventError]] = field(default_factory=list)


def parse_predictions(
    items: Sequence[Any],
    experiments: Mapping[str, ExperimentRecord],
    default_experiment: str | None,
    now: float,
) -> ParsedPredictions:
    valid, rejected = _each(
        items, "predictions", lambda item: _parse(item, experiments, default_experiment, now)
    )
    out = ParsedPredictions(rejected=rejected)
    for i, (name, prediction) in valid:
        out.by_experiment.setdefault(name, []).append((i, prediction))
    return out


def _parse(
    item: Any,
    experiments: Mapping[str, ExperimentRecord],
    default_experiment: str | None,
    now: float,
) -> tuple[str, Prediction]:
    item = _known(item, FIELDS, "prediction")
    if "experiment" not in item and default_experiment is not None:
        item = {**item, "experiment": default_experiment}
    record = _record(item, experiments)
    if record.state is not State.RUNNING:
        raise RejectedEventError(
            "state", f"experiment: {record.name!r} is {record.state.value}, not running"
        )
    request_id = _text(item, "request_id")
    if len(request_id) > MAX_ID_CHARS or unit_problem(request_id) is not None:
        raise RejectedEventError(
            "request_id",
            f"request_id: must be 1-{MAX_ID_CHARS} characters without control characters",
        )
    variant = _text(item, "variant")
    spec = record.spec
    roles = {spec.control_variant.key: "stable", spec.candidate_variant.key: "candidate"}
    if variant not in roles:
        raise RejectedEventError(
            "variant",
            f"variant: {variant[:100]!r} is neither the stable ({spec.control_variant.key!r})"
            f" nor the candidate ({spec.candidate_variant.key!r}) of {record.name!r}",
        )
    score = _number(item, "score", 0.0) if "score" in item else None
    if score is not None and abs(score) > MAX_ABS_VALUE:
        raise RejectedEventError("score", f"score: must be at most {MAX_ABS_VALUE:g} in size")
    latency = _number(item, "latency_ms", 0.0) if "latency_ms" in item else None
    if latency is not None and not 0 <= latency <= MAX_LATENCY_MS:
        raise RejectedEventError("latency_ms", f"latency_ms: must be 0-{MAX_LATENCY_MS:g}")
    if score is None and "label" not in item:
        raise RejectedEventError("score", "score or label: a prediction needs at least one")
    label = _label(item.get("label"))
    return record.name, Prediction(request_id, roles[variant], now, score, label, latency)


def _label(value: Any) -> str | None:
    """A class label: text or an integer (kept as its text, so 1 and "1" agree)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RejectedEventError(
            "label", f"label: must be a string or an integer, got {type(value).__name__}"
        )
    text = str(value)
    if not 0 < len(text) <= MAX_ID_CHARS or unit_problem(text) is not None:
        raise RejectedEventError(
            "label", f"label: must be 1-{MAX_ID_CHARS} characters without control characters"
        )
    return text
