"""Segment values through the service on SQLite: with the assignment (`segment.<attribute>`
query parameters), with reported exposures and with events; an undeclared attribute or a bad
value is refused naming it, and nothing else of the batch is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from assignment.auth import Role
from experiments import EXAMPLES_DIR
from tests.servers import Service, auth, start_service

EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
SPEC = {**EXAMPLE, "name": "segmented",
        "segments": [{"name": "country", "values": ["US", "DE"]}, "platform"]}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("segments")
    svc = start_service(f"sqlite:///{workdir / 'abmesh.db'}", workdir)
    with httpx.Client(base_url=svc.url, headers=auth(Role.ADMIN), timeout=30) as admin:
        assert admin.post("/v1/experiments", json=SPEC).status_code == 201
        assert admin.post("/v1/experiments/segmented/start").status_code == 200
    yield svc
    svc.stop()


def client(svc: Service, role: Role) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers=auth(role), timeout=30)


def stats(svc: Service, want: int) -> dict[str, Any]:
    """The stats once `want` units are counted in segment cells (exposures buffer first)."""
    deadline = time.monotonic() + 60
    with client(svc, Role.READER) as reader:
        while True:
            body: dict[str, Any] = reader.get("/v1/experiments/segmented/stats").json()
            cells = body.get("segments", {}).get("country", {})
            counted = sum(a["exposures"] for arms in cells.values() for a in arms.values())
            if counted >= want or time.monotonic() > deadline:
                return body
            time.sleep(0.2)


def test_segments_arrive_with_assignments_exposures_and_events(served: Service) -> None:
    with client(served, Role.WRITER) as writer:
        for i, country in enumerate(("US", "DE", "BR")):
            r = writer.get("/v1/assign/segmented",
                           params={"unit": f"a{i}", "segment.country": country})  # fmt: skip
            assert r.status_code == 200, r.text
        r = writer.post("/v1/exposures", json={"exposures": [
            {"experiment": "segmented", "unit": "x1", "variant": "control",
             "segments": {"country": "US", "platform": "ios"}},
        ]})  # fmt: skip
        assert r.json() == {"accepted": 1, "rejected": []}
        r = writer.post("/v1/events", json={"events": [
            {"event_id": "s1", "experiment": "segmented", "unit": "x1", "metric": "click",
             "segments": {"country": "DE"}},  # x1 said US first: it stays US
            {"event_id": "s2", "experiment": "segmented", "unit": "a0", "metric": "click",
             "segments": {"platform": 7}},  # a number is its text
        ]})  # fmt: skip
        assert r.json() == {"accepted": 2, "duplicates": 0, "rejected": []}, r.text
    body = stats(served, 4)
    country = body["segments"]["country"]
    assert sorted(country) == ["(other)", "DE", "US"]  # BR is not declared
    assert sum(a["exposures"] for a in country["US"].values()) == 2  # a0 and x1
    assert sum(a["metrics"]["click"]["sum"] for a in country["US"].values()) == 2
    platform = body["segments"]["platform"]
    assert sorted(platform) == ["7", "ios"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"segment.colour": "red"}, "query.segment.colour: not a segment of 'segmented'"),
        ({"segment.country": "a|b"}, "query.segment.country: must be printable"),
        ({"segment.country": "x" * 65}, "query.segment.country: must be 1-64 characters"),
    ],
)
def test_assignment_refuses_a_bad_segment(
    served: Service, params: dict[str, str], error: str
) -> None:
    with client(served, Role.WRITER) as writer:
        r = writer.get("/v1/assign/segmented", params={"unit": "bad", **params})
    assert r.status_code == 422
    assert error in r.json()["error"]


def test_a_bad_segment_rejects_its_item_alone(served: Service) -> None:
    events = [
        {"event_id": "b1", "experiment": "segmented", "unit": "u", "metric": "click",
         "segments": {"colour": "red"}},
        {"event_id": "b2", "experiment": "segmented", "unit": "u", "metric": "click",
         "segments": {"country": ["US"]}},
        {"event_id": "b3", "experiment": "segmented", "unit": "u", "metric": "click",
         "segments": "US"},
        {"event_id": "b4", "experiment": "segmented", "unit": "u", "metric": "click",
         "segments": {"country": "(other)"}},
        {"event_id": "b5", "experiment": "segmented", "unit": "u", "metric": "click"},
    ]  # fmt: skip
    with client(served, Role.WRITER) as writer:
        r = writer.post("/v1/events", json={"events": events})
        exposures = writer.post("/v1/exposures", json={"exposures": [
            {"experiment": "segmented", "unit": "u", "variant": "control",
             "segments": {"colour": "red"}}]})  # fmt: skip
    body = r.json()
    assert body["accepted"] == 1
    errors = [x["error"] for x in body["rejected"]]
    assert errors == [
        "events[0].segments.colour: not a segment of 'segmented' (declared: country, platform)",
        "events[1].segments.country: must be a string, got list",
        "events[2].segments: must be an object of attribute: value, got str",
        "events[3].segments.country: '(other)' is reserved for the values beyond the cap",
    ]
    assert exposures.json()["rejected"] == [{"index": 0, "error": (
        "exposures[0].segments.colour: not a segment of 'segmented' (declared: country,"
        " platform)")}]  # fmt: skip


def test_the_segments_endpoint_needs_the_reader_token_and_shows_every_segment(
    served: Service,
) -> None:
    assert httpx.get(f"{served.url}/v1/experiments/segmented/segments").status_code == 401
    stats(served, 4)
    with client(served, Role.READER) as reader:
        r = reader.get("/v1/experiments/segmented/segments")
        missing = reader.get("/v1/experiments/nope/segments")
    assert r.status_code == 200, r.text
    body = r.json()
    shown = {(s["attribute"], s["value"]) for s in body["segments"]}
    assert {("country", "US"), ("country", "DE"), ("platform", "ios")} <= shown
    # A handful of units: shown with a note, not tested, nothing flagged.
    assert not any(s["tested"] for s in body["segments"])
    assert body["flagged"] == []
    assert body["harm_for_rollout"]["harm"] is False
    assert missing.status_code == 404
