"""Pairing the stable model's and the candidate's predictions for the same request, as the
stores do it: pure functions over what a partition holds, so SQLite and Redis pair alike.

A prediction waits (`pending`) until its partner, the other arm's prediction with the same
request id, arrives; the pair is then folded into the partition's ShadowSums and its request
id remembered (`done`) for twice the pairing window, so a retried batch changes nothing.  A
prediction still alone after `window_s` expires and counts as unpaired for its arm.
Partitions are by request id (experiments.store.logfold.partition_of), so partners always meet
in the same one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from experiments.shadow_sums import BINS, ShadowSums
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import Shadow

ROLES = ("stable", "candidate")
_SCALARS = ("pairs", "labelled", "disagreements", "scored", "sum_d", "sum_d2", "sum_stable",
            "outside", "unequal")


@dataclass(frozen=True, slots=True)
class Prediction:
    request_id: str
    role: str  # stable or candidate
    at: float
    score: float | None = None
    label: str | None = None
    latency_ms: float | None = None

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Prediction:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a store did with a batch of predictions."""

    accepted: int
    duplicates: int
    paired: int


@dataclass
class Pairing:
    """What one batch does to a partition."""

    sums: ShadowSums  # the increments
    wait: dict[str, Prediction] = field(default_factory=dict)  # new pending predictions
    paired: list[str] = field(default_factory=list)  # request ids to drop from pending, done
    duplicates: int = 0


def pair(
    batch: Iterable[Prediction],
    pending: Mapping[str, Prediction],
    done: Iterable[str],
    low: float,
    high: float,
) -> Pairing:
    """Pair `batch` with the partition's `pending` predictions (those of the batch's request
    ids) and each other; `done` holds the batch's request ids already paired."""
    out = Pairing(ShadowSums(low, high))
    finished = set(done)
    waiting = dict(pending)
    for p in batch:
        partner = waiting.get(p.request_id)
        if p.request_id in finished or (partner is not None and partner.role == p.role):
            out.duplicates += 1  # paired already, or the same prediction again
            continue
        if p.score is not None:
            out.sums.add_score(p.role, p.score)
        if partner is None:
            waiting[p.request_id] = out.wait[p.request_id] = p
            continue
        stable, candidate = (partner, p) if partner.role == "stable" else (p, partner)
        out.sums.add_pair(_side(stable), _side(candidate))
        del waiting[p.request_id]
        out.wait.pop(p.request_id, None)
        out.paired.append(p.request_id)
        finished.add(p.request_id)
    return out


def shadow_of(spec: ExperimentSpec) -> Shadow:
    """The experiment's shadow phase (its score range and pairing window), or the defaults."""
    return (spec.rollout.shadow if spec.rollout else None) or Shadow()


def _side(p: Prediction) -> dict[str, Any]:
    return {"score": p.score, "label": p.label, "latency_ms": p.latency_ms}


def expired(predictions: Iterable[Prediction]) -> ShadowSums:
    """The increments of predictions that waited too long: unpaired, per arm."""
    sums = ShadowSums()
    for p in predictions:
        sums.unpaired[p.role] = sums.unpaired.get(p.role, 0) + 1
    return sums


def to_fields(sums: ShadowSums) -> dict[str, float]:
    """The sums as flat counters (non-zero ones), to be added to a partition's."""
    fields: dict[str, float] = {name: getattr(sums, name) for name in _SCALARS}
    for role, counts in sums.hist.items():
        fields.update({f"h:{role}:{i}": c for i, c in enumerate(counts)})
    for role, counts in sums.traffic.items():
        fields.update({f"t:{role}:{i}": c for i, c in enumerate(counts)})
    for role, moments in sums.latency.items():
        fields.update({f"l:{role}:{i}": m for i, m in enumerate(moments)})
    fields.update({f"u:{role}": n for role, n in sums.unpaired.items()})
    return {k: v for k, v in fields.items() if v}


def from_fields(fields: Mapping[str, float], low: float, high: float) -> ShadowSums:
    """A partition's counters (all of them) back as sums."""
    sums = ShadowSums(low, high)
    for key, value in fields.items():
        kind, _, rest = key.partition(":")
        if key in _SCALARS:
            cast = float if key.startswith("sum_") else int
            setattr(sums, key, cast(value))
        elif kind == "h":
            role, _, index = rest.partition(":")
            sums.hist.setdefault(role, [0] * (BINS + 2))[int(index)] = int(value)
        elif kind == "t":
            role, _, index = rest.partition(":")
            sums.traffic.setdefault(role, [0] * (BINS + 2))[int(index)] = int(value)
        elif kind == "l":
            role, _, index = rest.partition(":")
            sums.latency.setdefault(role, [0.0] * 3)[int(index)] = float(value)
        elif kind == "u":
            sums.unpaired[rest] = int(value)
    return sums
