"""The fast path of event ingest (assignment.fast_events) against the per-item path.

The route falls back to the per-item path whenever the fast one declines, so the outcome is the
same exactly when: whatever the fast decoding accepts, `loads_unique` and `EventsIn` accept too
(nothing it lets through would be a 422), and whatever batch the fast checks accept, the
per-item path accepts whole, into the same events.  Random batches mix valid events with every
kind of fault the per-item path words; then the same over HTTP.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assignment import collector, fast_events
from assignment.auth import Role
from assignment.models import EventsIn
from assignment.routes.strict_json import loads_unique
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.folding import Event, FoldPlan
from experiments.status import Outcome, State, Status
from experiments.store import ExperimentRecord, open_store
from tests.servers import auth, start_service

SPEC: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
SPEC["segments"] = [{"name": "country", "values": ["US", "DE"]}, "bucket"]
SPEC["metrics"]["secondary"] = [
    {"name": "revenue", "kind": "sum"},
    {"name": "score", "kind": "mean"},
    {"name": "revenue_per_score", "kind": "ratio", "numerator": "revenue", "denominator": "score"},
]
NOW = 1_790_000_000.0


def _record(name: str, state: State, outcome: Outcome | None = None) -> ExperimentRecord:
    spec = load_spec({**SPEC, "name": name})
    return ExperimentRecord(spec, 1, Status(uid=name, state=state, outcome=outcome), 0.0, 0.0)


EXPERIMENTS = {
    "ranker-v2": _record("ranker-v2", State.RUNNING),
    "paused": _record("paused", State.PAUSED),
    "done": _record("done", State.CONCLUDED, Outcome.PROMOTED),
}
PLANS = {name: FoldPlan.from_spec(r.spec) for name, r in EXPERIMENTS.items()}

ID_TEXT = ["e-1", "u-1", "", "x" * 64, "x" * 65, "x" * 129, "a\x00b", "a\x7fb", "a\x85b", "é",
           "日本", "a\u2028b", "a b", "\ud800", '"q"', "a\\b", "events", "value"]  # fmt: skip
WRONG = [None, True, 1, 2.5, [], {}, {"a": 1}, ["x"]]
NUMBERS = [0, -0.0, 1, -7, 2.5, 1e15, -1e15, 10**15, 10**15 + 1, 1e15 + 0.5, 1e16, 10**400,
           math.nan, math.inf, -math.inf, 9_007_199_254_740_993, 1e-300]  # fmt: skip
STAMPS = [NOW, NOW - 1e6, NOW + 3600, NOW + 86_400, NOW + 86_401, NOW * 1000, -1, 0, 1.5,
          "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
          "2999-01-01T00:00:00+00:00", "1969-12-31T23:59:59+00:00", "yesterday", "",
          "2026-01-01T00:00:00.123456+05:30"]  # fmt: skip
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.sampled_from(ID_TEXT) | st.text(max_size=70),
    "unit": st.sampled_from(ID_TEXT) | st.text(max_size=70),
    "experiment": st.sampled_from(["ranker-v2", "paused", "done", "nope", "", *WRONG]),
    "metric": st.sampled_from(
        ["click", "revenue", "score", "revenue_per_score", "click~pre", "nope", *WRONG]
    ),
    "value": st.sampled_from(NUMBERS + WRONG + ["1", "NaN", "inf"])
    | st.floats()
    | st.integers(-(10**17), 10**17),
    "timestamp": st.sampled_from(STAMPS + WRONG) | st.floats(-10.0, NOW + 200_000),
    "pre_period": st.sampled_from([True, False, None, 0, 1, "true"]),
    "segments": st.sampled_from([None, 1, "US", [], {"colour": "red"}, {"country": None},
                                 {"country": "a|b"}, {"bucket": 2.5}, {"bucket": True},
                                 {"country": "(other)"}, {"country": "x" * 65}]),
}


USUAL_VALUES = {
    "value": st.floats(-1e6, 1e6) | st.integers(-5, 5),
    "timestamp": st.sampled_from([NOW, NOW - 5.5, int(NOW), "2026-01-01T00:00:00+00:00"]),
    "pre_period": st.booleans(),
    "segments": st.sampled_from([{}, {"country": "US"}, {"country": "FR", "bucket": 3},
                                 {"bucket": "b-1"}]),
}


@st.composite
def items(draw: st.DrawFn) -> Any:
    """An event as (key, value) pairs, so a key may come twice; or something else entirely."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([None, 1, "event", [], [{"event_id": "e"}]]))
    pairs: list[tuple[str, Any]] = [
        ("event_id", f"e-{draw(st.integers(0, 9))}"),
        ("experiment", "ranker-v2"),
        ("unit", f"u-{draw(st.integers(0, 9))}"),
        ("metric", draw(st.sampled_from(["click", "revenue", "score"]))),
    ]
    for key, usual in USUAL_VALUES.items():
        if draw(st.booleans()):
            pairs.append((key, draw(usual)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # mostly valid, as in real batches
        fault = draw(st.sampled_from(["set", "set", "drop", "repeat", "unknown"]))
        key = draw(st.sampled_from(sorted(FIELD_VALUES)))
        if fault == "set":
            pairs = [(k, v) for k, v in pairs if k != key] + [(key, draw(FIELD_VALUES[key]))]
        elif fault == "drop":
            pairs = [(k, v) for k, v in pairs if k != key]
        elif fault == "repeat":
            pairs.append((key, draw(FIELD_VALUES[key])))
        else:
            pairs.append((draw(st.sampled_from(["extra", "Unit", "values", ""])), 1))
    return draw(st.permutations(pairs))


def _encode(doc: Any, ascii_only: bool, spaced: bool) -> str:
    """JSON text of `doc`, whose objects are lists of pairs (repeated keys survive)."""
    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(doc, list) and doc and all(isinstance(p, tuple) for p in doc):
        return "{" + comma.join(
            json.dumps(k, ensure_ascii=ascii_only) + colon + _encode(v, ascii_only, spaced)
            for k, v in doc
        ) + "}"  # fmt: skip
    if isinstance(doc, list):
        return "[" + comma.join(_encode(v, ascii_only, spaced) for v in doc) + "]"
    return json.dumps(doc, ensure_ascii=ascii_only)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    events = draw(st.lists(items(), max_size=8))
    top: list[tuple[str, Any]] = [("events", events)]
    if draw(st.integers(0, 14)) == 0:
        top.append(draw(st.sampled_from([("events", []), ("extra", 1)])))
    ascii_only = draw(st.integers(0, 2)) == 0  # escapes non-ASCII characters: the slow path
    text = _encode(top, ascii_only, spaced=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")  # json.loads takes lone surrogates this way


def _slow(body: bytes) -> list[Any] | None:
    """The items as the per-item path decodes them, or None where it answers 422."""
    try:
        return EventsIn.model_validate(loads_unique(body)).events
    except ValueError:  # a JSONDecodeError, UnicodeDecodeError or pydantic ValidationError
        return None


def _events(parsed: collector.Parsed) -> dict[str, list[tuple[Any, ...]]]:
    """Comparable events: floats by repr, so that -0.0 differs from 0.0."""
    return {
        name: [
            (i, e.event_id, e.unit, e.series, repr(e.value), repr(e.timestamp), e.segments)
            for i, e in xs
        ]
        for name, xs in parsed.by_experiment.items()
    }


def _check(body: bytes) -> bool:
    """The fast path agrees with the per-item path on `body`; True when it answered whole."""
    typed = fast_events.decode(body)
    slow_items = _slow(body)
    if typed is None:
        return False  # the route runs the per-item path itself
    assert slow_items is not None, "the fast decoding let through what is a 422"
    assert len(typed) == len(slow_items)  # the same 413, and FastAPI validates the typed list
    EventsIn.model_validate({"events": typed})
    fast = fast_events.parse_events(typed, EXPERIMENTS, PLANS, now=NOW)
    if fast is None:
        return False  # the route runs the per-item path on loads_unique's items
    slow = collector.parse_events(slow_items, EXPERIMENTS, PLANS, now=NOW)
    assert slow.rejected == []
    assert _events(fast) == _events(slow)
    return True


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
@example(b'{"events": [{"event_id": "a", "experiment": "ranker-v2", "unit": "u", "metric": '
         b'"click", "value": 1, "value": 2}]}')  # fmt: skip
@example(b'{"events": [], "events": []}')
@example(b'{"events": [{"event_id": "a", "event_id": "a", "experiment": "ranker-v2", "unit": "u", '
         b'"metric": "click"}]}')  # fmt: skip
def test_the_fast_path_agrees_with_the_per_item_path(body: bytes) -> None:
    _check(body)


def _usual(i: int, **fields: Any) -> dict[str, Any]:
    event = {"event_id": f"ev-{i}", "experiment": "ranker-v2", "unit": f"user-{i % 7}"}
    return event | {"metric": ("click", "revenue", "score")[i % 3]} | fields


USUAL = [
    _usual(0),
    _usual(1, value=12.5, timestamp=NOW - 10),
    _usual(2, value=-3, timestamp=int(NOW), pre_period=True),
    _usual(3, pre_period=False, timestamp="2026-05-01T12:00:00+02:00"),
    _usual(4, unit="ünït-ø", value=1e15, timestamp=0, segments={"country": "US", "bucket": 7}),
    {**_usual(5, value=0.1), "experiment": "paused"},
]


@pytest.mark.parametrize(("ascii_only", "indent"), [(False, None), (False, 2)])
def test_usual_batches_take_the_fast_path(ascii_only: bool, indent: int | None) -> None:
    body = json.dumps({"events": USUAL}, ensure_ascii=ascii_only, indent=indent).encode()
    assert _check(body)


@pytest.mark.parametrize(
    "body",
    [
        # Escapes (here the ASCII-only encoding of "ü") and a null go the per-item way.
        json.dumps({"events": USUAL}).encode(),
        json.dumps({"events": [*USUAL, _usual(9, timestamp=None)]}).encode(),
        # Each of these holds one key twice: the per-item path answers 422.
        b'{"events": [{"event_id": "a", "experiment": "ranker-v2", "unit": "u", "metric": '
        b'"click", "pre_period": true, "pre_period": true}]}',
        b'{"events": [{"event_id": "a", "experiment": "ranker-v2", "unit": "u",'
        b' "metric": "click", "unit" : "v"}]}',
        b'{"events": [{"event_id": "a", "experiment": "ranker-v2", "unit": "u", "metric": '
        b'"click", "timestamp": 5, "timestamp": "2026-01-01T00:00:00+00:00"}]}',
    ],
)
def test_escapes_nulls_and_repeated_keys_take_the_per_item_path(body: bytes) -> None:
    assert fast_events.decode(body) is None


def test_the_fast_path_knows_the_per_item_fields() -> None:
    assert set(fast_events.EventIn.__struct_fields__) == collector.FIELDS
    decoded = fast_events.decode(b'{"events": [{"event_id": "a", "experiment": "e", '
                                 b'"unit": "u", "metric": "m"}]}')  # fmt: skip
    assert decoded is not None
    assert msgspec.to_builtins(decoded) == [
        {"event_id": "a", "experiment": "e", "unit": "u", "metric": "m"}
    ]


# Over HTTP: one service on SQLite for the tests below.


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    workdir: Path = tmp_path_factory.mktemp("fast-ingest")
    store_url = f"sqlite:///{workdir / 'abmesh.db'}"
    store = open_store(store_url)
    store.put_experiment(load_spec(SPEC))
    change_state(store, "ranker-v2", Action.START)
    store.close()
    service = start_service(store_url, workdir)
    with httpx.Client(base_url=service.url, headers=auth(Role.WRITER), timeout=30) as client:
        yield client
    service.stop()


def _post(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("/v1/events", content=body, headers={"content-type": "application/json"})


def test_both_paths_store_the_same_events(http: httpx.Client) -> None:
    now = time.time()
    events = [_usual(i, value=i * 1.5, timestamp=now - i) for i in range(40)]
    events[3] |= {"unit": "ünit", "pre_period": True, "timestamp": "2026-01-01T00:00:00+00:00"}
    fast = json.dumps({"events": events}, ensure_ascii=False).encode()
    assert _post(http, fast).json() == {"accepted": 40, "duplicates": 0, "rejected": []}
    # The same events with an escaped "ü" take the per-item path: all of them are known.
    slow = json.dumps({"events": events}).encode()
    assert fast_events.decode(slow) is None
    assert _post(http, slow).json() == {"accepted": 0, "duplicates": 40, "rejected": []}
    reader = {"Authorization": auth(Role.READER)["Authorization"]}
    stored = http.get("/v1/experiments/ranker-v2/events", headers=reader).json()["events"]
    assert {e["event_id"]: (e["unit"], e["metric"], e["value"]) for e in stored} == {
        e["event_id"]: (e["unit"], e["metric"] + ("~pre" if e.get("pre_period") else ""),
                        e["value"]) for e in events
    }  # fmt: skip


def test_one_bad_event_is_rejected_alone_with_the_per_item_message(http: httpx.Client) -> None:
    events = [_usual(100 + i) for i in range(5)]
    events[2]["metric"] = "revenue_per_score"
    events[4]["unit"] = "tab\there"
    r = _post(http, json.dumps({"events": events}, ensure_ascii=False).encode())
    assert r.status_code == 200
    assert r.json() == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": [
            {
                "index": 2,
                "error": "events[2].metric: 'revenue_per_score' is a ratio: send its numerator"
                " 'revenue' and denominator 'score'",
            },
            {"index": 4, "error": "events[4].unit: unit must not contain control characters"},
        ],
    }


def test_a_key_repeated_in_the_last_event_is_422(http: httpx.Client) -> None:
    good = json.dumps([_usual(200 + i) for i in range(20)])[1:-1]
    body = f'{{"events": [{good}, {{"event_id": "x", "unit": "u", "unit": "v"}}]}}'
    r = _post(http, body.encode())
    assert r.status_code == 422
    where = body.rfind('"unit"')
    assert r.json()["problems"] == [
        f"body: not valid JSON at character {where}: duplicate key 'unit'"
    ]


def test_a_batch_over_the_limit_is_413_either_way(http: httpx.Client) -> None:
    events = [_usual(i, unit="ü") for i in range(5001)]  # over the default max_events
    for ascii_only in (True, False):
        r = _post(http, json.dumps({"events": events}, ensure_ascii=ascii_only).encode())
        assert r.status_code == 413


@pytest.mark.redis
def test_an_append_after_redis_forgot_its_scripts_loads_them_again(redis_store_url: str) -> None:
    store = open_store(redis_store_url)
    store.put_experiment(load_spec(SPEC))
    plan = PLANS["ranker-v2"]
    events = [Event(f"e-{i}", f"u-{i}", "click", 1.0, NOW) for i in range(40)]
    try:
        assert store.append_events("ranker-v2", "main", plan, events[:30]).accepted == 30
        with redis.Redis.from_url(redis_store_url.partition("?")[0]) as server:
            server.script_flush()  # as a restart of the server would
        result = store.append_events("ranker-v2", "main", plan, events)
        assert (result.accepted, result.duplicates) == (10, list(range(30)))
    finally:
        store.close()
