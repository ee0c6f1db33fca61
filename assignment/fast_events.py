"""The fast path of `POST /v1/events`: a whole batch decoded by msgspec into typed structs, then
checked in a few operations per event.

It answers only for a batch whose events are all valid and usual.  For anything else (a decode
error, a repeated key, an escaped character, an invalid event, an unusual one such as a long id
or a non-printable character) it answers None, and the route runs the per-item path on the same
body (`strict_json.loads_unique`, `collector.parse_events`), which alone words the errors.  The
two paths therefore cannot disagree on a rejection; the fast one has only to accept nothing the
slow one rejects, and to build the same events (tests/test_ingest_fast.py checks both on random
batches).  Per event it costs about a tenth of the slow path: no dict per item, no Python-level
check of each field's type, and the batch-wide checks (printable ids, known experiments and
metrics) are C-level calls over the whole batch.

Repeated keys.  msgspec, like json.loads, keeps the last of repeated keys without a word, where
`loads_unique` refuses them (422).  In a body without a backslash no quote is escaped, so every
string (key or value) holds exactly two `"`.  Re-encoding the decoded batch writes each key and
string value that decoding kept exactly once, and leaves out the fields the body did not give
(UNSET, hence no defaults here).  A repeated key is in the body more often than in the
re-encoding, and each key is a string: the body has more `"` than its re-encoding exactly when
a key was repeated.  A body with a backslash (an escape, which clients rarely need) goes the slow
way.  Comparing counts of keys rather than of quotes would not be sound: `:` and `"x":` also
occur inside string values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from assignment.collector import (
    MAX_ABS_VALUE,
    MAX_FUTURE_S,
    MAX_ID_CHARS,
    Parsed,
    RejectedEventError,
    parse_segments,
    parse_timestamp,
)
from experiments.folding import PRE, Event, FoldPlan
from experiments.names import MAX_UNIT_BYTES
from experiments.status import State
from experiments.store import ExperimentRecord

# A printable id of at most this many characters passes `names.unit_problem` without its UTF-8
# size being measured, and is within MAX_ID_CHARS: longer ones take the slow path.
SHORT_ID = min(MAX_ID_CHARS, MAX_UNIT_BYTES // 4)
_Id = Annotated[str, Meta(min_length=1, max_length=SHORT_ID)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event with the fields of `collector.FIELDS`, typed as the slow path accepts them; a
    field the body left out is UNSET.  No null anywhere: the slow path words those."""

    event_id: _Id
    experiment: str
    unit: _Id
    metric: str
    value: Annotated[float, Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)] | UnsetType = UNSET
    timestamp: Annotated[float, Meta(ge=0)] | str | UnsetType = UNSET  # unix s or ISO 8601
    pre_period: bool | UnsetType = UNSET
    segments: dict[str, str | int] | UnsetType = UNSET


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[EventIn]


_DECODE = msgspec.json.Decoder(_Batch).decode
_ENCODE = msgspec.json.Encoder().encode


def decode(body: bytes) -> list[EventIn] | None:
    """The events of a body `{"events": [...]}`, or None when it needs the slow path."""
    if b"\\" in body:
        return None
    try:
        batch = _DECODE(body)
    except (msgspec.DecodeError, ValueError):  # ValueError: not UTF-8
        return None
    if body.count(b'"') != _ENCODE(batch).count(b'"'):
        return None  # a repeated key (see the module's docstring)
    return batch.events


def parse_events(
    events: Sequence[EventIn],
    experiments: Mapping[str, ExperimentRecord],
    plans: Mapping[str, FoldPlan],
    *,
    now: float | None = None,
) -> Parsed | None:
    """What `collector.parse_events` gives for these events when it rejects none of them, or
    None: then some are invalid or unusual, and only the slow path words why."""
    at = time.time() if now is None else now
    # Printable: no control character (C0, DEL, C1), no lone surrogate.  The lengths were
    # checked by decoding.
    if not "".join([e.event_id for e in events]).isprintable():
        return None
    if not "".join([e.unit for e in events]).isprintable():
        return None
    for name, metric in {(e.experiment, e.metric) for e in events}:
        record = experiments.get(name)
        if record is None or record.state is State.CONCLUDED or not plans[name].accepts(metric):
            return None
    latest = at + MAX_FUTURE_S
    parsed = Parsed()
    groups = parsed.by_experiment
    for i, e in enumerate(events):
        stamp, value = e.timestamp, e.value
        if stamp is UNSET:
            stamp = at
        elif isinstance(stamp, str):
            try:
                stamp = parse_timestamp({"timestamp": stamp}, at)
            except RejectedEventError:
                return None
        elif stamp > latest:
            return None
        segments: tuple[tuple[str, str], ...] = ()
        if e.segments is not UNSET:
            try:
                segments = parse_segments(e.segments, experiments[e.experiment].spec)
            except RejectedEventError:
                return None
        event = Event(
            e.event_id,
            e.unit,
            e.metric + PRE if e.pre_period is True else e.metric,
            1.0 if value is UNSET else value,
            stamp,
            segments,
        )
        groups.setdefault(e.experiment, []).append((i, event))
    return parsed
