"""POST /v1/predictions against `abmesh serve` on SQLite: items validated one by one with
messages naming the field, the writer token required, retried batches harmless, and the pairs
in GET /v1/experiments/{name}/shadow."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from assignment.auth import Role
from experiments import EXAMPLES_DIR
from tests.servers import Service, auth, start_service

EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("predictions")
    svc = start_service(f"sqlite:///{workdir / 'abmesh.db'}", workdir, max_events=1000)
    with httpx.Client(base_url=svc.url, headers=auth(Role.ADMIN), timeout=30) as admin:
        for name, start in (("shadowed", True), ("second", True), ("idle", False)):
            assert admin.post("/v1/experiments", json={**EXAMPLE, "name": name}).status_code == 201
            if start:
                assert admin.post(f"/v1/experiments/{name}/start").status_code == 200
    yield svc
    svc.stop()


def post(svc: Service, body: object, role: Role | None = Role.WRITER) -> httpx.Response:
    headers = {"content-type": "application/json", **(auth(role) if role is not None else {})}
    return httpx.post(
        f"{svc.url}/v1/predictions", content=json.dumps(body), headers=headers, timeout=30
    )


def item(request_id: str, variant: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "variant": variant, **extra}


def test_pairs_are_recorded_and_a_retry_changes_nothing(served: Service) -> None:
    batch = {
        "experiment": "shadowed",
        "predictions": [
            item("a", "control", score=0.2, label="no", latency_ms=5),
            item("a", "treatment", score=0.3, label="yes", latency_ms=7),
            item("b", "control", score=0.9, label=1),
            item("b", "treatment", score=0.9, label="1"),  # 1 and "1": the same label
            item("c", "control", score=0.5),
        ],
    }
    first = post(served, batch)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 5, "duplicates": 0, "paired": 2, "rejected": []}
    again = post(served, batch)
    assert again.json() == {"accepted": 0, "duplicates": 5, "paired": 0, "rejected": []}
    shadow = httpx.get(f"{served.url}/v1/experiments/shadowed/shadow", headers=auth(Role.READER),
                       timeout=30)  # fmt: skip
    assert shadow.status_code == 200, shadow.text
    sums = shadow.json()["sums"]
    assert (sums["pairs"], sums["labelled"], sums["disagreements"], sums["pending"]) == (2, 2, 1, 1)
    assert sums["sum_d"] == pytest.approx(0.1)


def test_one_batch_for_two_experiments_pairs_each_apart(served: Service) -> None:
    """The same request ids in two experiments are two pairs, one in each."""
    items = [
        {**item(rid, variant, score=score), "experiment": name}
        for name, score in (("shadowed", 0.1), ("second", 0.7))
        for rid in ("m-1", "m-2")
        for variant in ("control", "treatment")
    ]
    r = post(served, {"predictions": items})
    assert r.json() == {"accepted": 8, "duplicates": 0, "paired": 4, "rejected": []}
    for name, score in (("shadowed", 0.1), ("second", 0.7)):
        sums = httpx.get(f"{served.url}/v1/experiments/{name}/shadow", headers=auth(Role.READER),
                         timeout=30).json()["sums"]  # fmt: skip
        shown = sums["traffic"]["stable"]
        assert shown[1 + int(score * 1000)] >= 2  # its own scores
        if name == "second":  # an experiment of its own: no score of the other's
            assert (sums["pairs"], shown[1 + int(0.1 * 1000)]) == (2, 0)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"variant": "control", "score": 0.1}, "predictions[0].request_id: required"),
        (item("x", "other", score=0.1), "predictions[0].variant: 'other' is neither the stable"),
        (item("x", "control"), "predictions[0].score or label: a prediction needs at least one"),
        (item("x", "control", score="0.1"), "predictions[0].score: must be a number, got str"),
        (item("x", "control", score=True), "predictions[0].score: must be a number, got bool"),
        (item("x", "control", label=0.5), "predictions[0].label: must be a string or an integer"),
        (item("x", "control", label=1, latency_ms=-1), "predictions[0].latency_ms: must be 0-"),
        (item("x\n", "control", score=0.1), "predictions[0].request_id: must be 1-128 characters"),
        (item("x", "control", score=0.1, model="m"), "predictions[0].model: unknown field"),
        ({**item("x", "control", score=0.1), "experiment": "nope"},
         "predictions[0].experiment: 'nope' does not exist"),
        ({**item("x", "control", score=0.1), "experiment": "idle"},
         "predictions[0].experiment: 'idle' is draft, not running"),
        ([1], "predictions[0].prediction: must be an object, got list"),
    ],
)  # fmt: skip
def test_a_bad_item_is_rejected_alone_naming_its_field(
    served: Service, bad: Any, error: str
) -> None:
    good = item(f"good-{uuid.uuid4()}", "control", score=0.4)
    r = post(served, {"experiment": "shadowed", "predictions": [bad, good]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["index"] == 0
    assert body["rejected"][0]["error"].startswith(error), body["rejected"][0]["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"predictions": "no"}, 422),
        ({}, 422),
        ({"experiment": "shadowed", "predictions": [item("n", "control", score=0.1)] * 1001}, 413),
    ],
)
def test_malformed_or_oversize_batches_are_refused(
    served: Service, body: object, status: int
) -> None:
    r = post(served, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_a_writer_token_is_required(served: Service) -> None:
    body = {"experiment": "shadowed", "predictions": [item("t", "control", score=0.1)]}
    assert post(served, body, role=None).status_code == 401
    assert post(served, body, role=Role.READER).status_code == 403


def test_repeated_keys_are_refused(served: Service) -> None:
    text = '{"experiment": "shadowed", "predictions": [{"request_id": "r", "request_id": "s",'
    text += ' "variant": "control", "score": 0.1}]}'
    r = httpx.post(f"{served.url}/v1/predictions", content=text, timeout=30,
                   headers={"content-type": "application/json", **auth(Role.WRITER)})  # fmt: skip
    assert r.status_code == 422
