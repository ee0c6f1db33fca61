"""POST /v1/exposures against `abmesh serve` on SQLite: the variant a client served is the arm
recorded, item by item, also when the split changed after the client assigned."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assignment.assign import assign
from assignment.auth import Role
from assignment.client import EXPOSURE_BATCH, AssignmentClient
from experiments import EXAMPLES_DIR
from experiments.loader import spec_from_mapping
from experiments.store import open_store
from tests.servers import TOKENS, Service, auth, start_service, wait_until

EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
MAX_EVENTS = EXPOSURE_BATCH  # the smallest limit the local client's batches fit in


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    workdir = tmp_path_factory.mktemp("exposures")
    db = workdir / "abmesh.db"
    svc = start_service(f"sqlite:///{db}", workdir, max_events=MAX_EVENTS)
    with httpx.Client(base_url=svc.url, headers=auth(Role.ADMIN), timeout=30) as admin:
        for name, start in (("counted", True), ("checked", True), ("idle", False)):
            assert admin.post("/v1/experiments", json={**EXAMPLE, "name": name}).status_code == 201
            if start:
                assert admin.post(f"/v1/experiments/{name}/start").status_code == 200
    yield svc, db
    svc.stop()


def post(svc: Service, body: object, role: Role | None = Role.WRITER) -> httpx.Response:
    """The body as JSON, NaN included (httpx's own encoding refuses it)."""
    headers = {"content-type": "application/json", **(auth(role) if role is not None else {})}
    return httpx.post(
        f"{svc.url}/v1/exposures", content=json.dumps(body), headers=headers, timeout=30
    )


def reported(svc: Service) -> float:
    """abmesh_exposures_reported_total of the accepted ones."""
    metrics = httpx.get(f"{svc.url}/metrics", timeout=30).text
    found = re.search(
        r'^abmesh_exposures_reported_total\{outcome="accepted",reason=""\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def arms(svc: Service, experiment: str) -> dict[str, int]:
    r = httpx.get(
        f"{svc.url}/v1/experiments/{experiment}/stats", headers=auth(Role.READER), timeout=30
    )
    r.raise_for_status()
    return {variant: arm["exposures"] for variant, arm in r.json()["arms"].items()}


def recorded(db: Path, experiment: str, units: Collection[str]) -> dict[str, dict[str, Any]]:
    """unit -> the first exposure the store logged (variant, time, generation)."""
    store = open_store(f"sqlite:///{db}")
    try:
        return store.unit_exposures(experiment, "main", list(units))
    finally:
        store.close()


def test_served_variants_are_counted_per_arm(served: tuple[Service, Path]) -> None:
    svc, db = served
    counted_before = reported(svc)
    sent = {f"u-{i}": "treatment" if i % 3 == 0 else "control" for i in range(40)}
    exposures = [
        {"experiment": "counted", "unit": unit, "variant": variant, "generation": 1}
        for unit, variant in sent.items()
    ]
    r = post(svc, {"exposures": exposures})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 40, "rejected": []}
    # The second report of a unit changes nothing: its first exposure counts.
    again = post(svc, {"exposures": [{**exposures[0], "variant": "treatment"}]})
    assert again.json() == {"accepted": 1, "rejected": []}
    wait_until(lambda: arms(svc, "counted") == dict(Counter(sent.values())), "exposures per arm")
    logged = recorded(db, "counted", sent)
    assert {u: x["variant"] for u, x in logged.items()} == sent
    assert {x["generation"] for x in logged.values()} == {1}
    assert reported(svc) == counted_before + 41


def test_each_bad_item_is_rejected_alone_naming_its_field(served: tuple[Service, Path]) -> None:
    svc, _ = served
    good = {"experiment": "checked", "unit": "ok-1", "variant": "control"}
    bad: list[tuple[object, str]] = [
        ("not an object", "exposure: must be an object, got str"),
        ({**good, "metric": "click"}, "metric: unknown field"),
        ({**good, "experiment": "ghost"}, "experiment: 'ghost' does not exist"),
        ({**good, "experiment": "idle"}, "experiment: 'idle' is draft, not running"),
        ({"experiment": "checked", "variant": "control"}, "unit: required"),
        ({**good, "unit": ""}, "unit: "),
        ({**good, "variant": "third"}, "variant: 'third' is not a variant of 'checked'"),
        ({**good, "variant": 1}, "variant: must be a string, got int"),
        ({**good, "generation": 0}, "generation: must be an integer of at least 1"),
        ({**good, "generation": "1"}, "generation: must be an integer of at least 1"),
        ({**good, "generation": True}, "generation: must be an integer of at least 1"),
        ({**good, "generation": 1.0}, "generation: must be an integer of at least 1"),
        ({**good, "generation": 2}, "generation: ahead of 'checked'"),
        ({**good, "timestamp": -1}, "timestamp: must not be before 1970"),
        ({**good, "timestamp": 1e12}, "timestamp: "),  # milliseconds as seconds
        ({**good, "timestamp": float("nan")}, "timestamp: must be finite"),
        ({**good, "timestamp": "soon"}, "timestamp: not unix seconds or an ISO 8601 time"),
    ]
    items = [good, *(item for item, _ in bad), {**good, "unit": "ok-2", "generation": 1}]
    r = post(svc, {"exposures": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == list(range(1, len(bad) + 1))
    for (_, expected), rejection in zip(bad, body["rejected"], strict=True):
        assert rejection["error"].startswith(f"exposures[{rejection['index']}].{expected}")
    assert "days ahead" in body["rejected"][14]["error"]


@pytest.mark.parametrize("body", [[], "exposures", {}, {"exposures": {}}, {"exposures": "x"}])
def test_a_body_of_another_shape_is_422(served: tuple[Service, Path], body: object) -> None:
    r = post(served[0], body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request: body")


def test_only_writers_report_exposures(served: tuple[Service, Path]) -> None:
    svc, _ = served
    body = {"exposures": [{"experiment": "checked", "unit": "auth-1", "variant": "control"}]}
    assert post(svc, body, None).status_code == 401
    assert post(svc, body, Role.READER).status_code == 403
    assert post(svc, body, Role.ADMIN).json() == {"accepted": 1, "rejected": []}


def test_a_batch_over_max_events_is_413(served: tuple[Service, Path]) -> None:
    item = {"experiment": "checked", "unit": "many", "variant": "control"}
    r = post(served[0], {"exposures": [item] * (MAX_EVENTS + 1)})
    assert r.status_code == 413
    limit = f"batch of {MAX_EVENTS + 1} exposures exceeds the limit of {MAX_EVENTS}"
    assert r.json()["error"] == limit


def test_local_client_records_what_it_served_across_a_split_change(
    served: tuple[Service, Path],
) -> None:
    svc, db = served
    spec = {**EXAMPLE, "name": "split"}
    with httpx.Client(base_url=svc.url, headers=auth(Role.ADMIN), timeout=30) as admin:
        assert admin.post("/v1/experiments", json=spec).status_code == 201
        assert admin.post("/v1/experiments/split/start").status_code == 200
        with AssignmentClient(
            svc.url,
            timeout=30,
            local=True,
            token=TOKENS[Role.READER],
            writer_token=TOKENS[Role.WRITER],
            refresh_interval=3600,  # refreshed below, when the test says
            exposure_interval=3600,  # reported by the flush below, all at once
        ) as client:
            before = [client.assign("split", f"s-{i}") for i in range(200)]
            variants = [dict(v, weight=w) for v, w in zip(spec["variants"], (90, 10), strict=True)]
            changed = {**spec, "variants": variants}
            # Nothing is stored for it yet, so the change keeps the phase (apply_spec): both
            # halves count in one.
            assert admin.put("/v1/experiments/split", json=changed).status_code == 200
            client.refresh()
            after = [client.assign("split", f"s-{i}") for i in range(200, 400)]
            pending = client._exposed["split"]
            assert [s.generation for s in pending] == [1] * 200 + [2] * 200
            client.flush()
    served_arms = {a.unit: a.variant for a in before + after if a.in_experiment}
    assert len(served_arms) == 400
    # The change matters: deriving the arm again now would record another one for some units.
    now = spec_from_mapping(changed)
    assert any(assign(now, a.unit).variant != a.variant for a in before)
    controls = [sum(a.variant == "control" for a in part) for part in (before, after)]
    assert controls[1] > controls[0]  # the client did assign with the new split
    wait_until(
        lambda: arms(svc, "split") == dict(Counter(served_arms.values())), "exposures per arm"
    )
    logged = recorded(db, "split", served_arms)
    assert {u: x["variant"] for u, x in logged.items()} == served_arms
    generation = {a.unit: 1 if i < 200 else 2 for i, a in enumerate(before + after)}
    assert {u: x["generation"] for u, x in logged.items()} == generation
