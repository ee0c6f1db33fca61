"""AssignmentClient against a real server: remote calls, fallback, local-evaluation parity."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from assignment.auth import Role
from assignment.client import AssignmentClient
from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.folding import exposures_of
from experiments.store import open_store
from tests.servers import TOKENS, Service, free_port, start_service, wait_until

EXAMPLE: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
UNITS = [f"user-{i}" for i in range(3000)] + ["qa-1", "é-unit", "用户-9"]
READER = TOKENS[Role.READER]  # local evaluation reads the specs
WRITER = TOKENS[Role.WRITER]  # and reports the exposures


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    workdir = tmp_path_factory.mktemp("client")
    url = f"sqlite:///{workdir / 'abmesh.db'}"
    store = open_store(url)
    for changes in (
        {},
        {
            "name": "three",
            "coverage": 0.6,
            "layer": {"name": "l", "end": 70},
            "variants": [
                {**EXAMPLE["variants"][0], "weight": 20},
                {**EXAMPLE["variants"][1], "weight": 30},
                {
                    "key": "third",
                    "header_value": "group-c",
                    "weight": 50,
                    "destination": {"host": "model-v3"},
                },
            ],
        },
        {"name": "gb", "hash": "growthbook-v2"},
        {"name": "idle"},
        {"name": "segmented", "segments": ["country"]},
    ):
        spec = load_spec({**EXAMPLE, **changes})
        store.put_experiment(spec)
        if spec.name != "idle":
            change_state(store, spec.name, Action.START)
    store.close()
    svc = start_service(url, workdir, exposure_flush_interval=0.1)
    yield svc, url
    svc.stop()


@pytest.mark.parametrize("experiment", ["ranker-v2", "three", "gb", "idle"])
def test_local_evaluation_matches_the_server(served: tuple[Service, str], experiment: str) -> None:
    svc, _ = served
    with (
        AssignmentClient(svc.url, timeout=5) as remote,
        AssignmentClient(
            svc.url, timeout=5, local=True, token=READER, writer_token=WRITER
        ) as local,
    ):
        from_server = []
        for start in range(0, len(UNITS), 500):
            from_server += remote.assign_many(experiment, UNITS[start : start + 500])
        here = [local.assign(experiment, u) for u in UNITS]
    assert not any(a.fallback for a in from_server + here)
    assert [(a.variant, a.in_experiment, a.header_value, a.reason) for a in here] == [
        (a.variant, a.in_experiment, a.header_value, a.reason) for a in from_server
    ]


def test_remote_assign_with_forcing_header(served: tuple[Service, str]) -> None:
    svc, _ = served
    with AssignmentClient(svc.url) as client:
        a = client.assign("ranker-v2", "someone", headers={"x-user-group": "internal-testers"})
    assert (a.variant, a.reason, a.header_value, a.fallback) == (
        "treatment",
        "override-header",
        "group-b",
        False,
    )


def _exposed(url: str, experiment: str) -> int:
    store = open_store(url)
    try:
        return sum(exposures_of(store.phase_stats(experiment, "main")[0]).values())
    finally:
        store.close()


def test_local_mode_reports_exposures(served: tuple[Service, str]) -> None:
    svc, url = served
    units = [f"local-{i}" for i in range(120)]
    before = _exposed(url, "ranker-v2")
    with AssignmentClient(svc.url, local=True, token=READER, writer_token=WRITER) as client:
        exposed = sum(client.assign("ranker-v2", u).in_experiment for u in units)
    assert exposed == 120
    # These units are new to the service: the count grows by exactly what this client reported.
    wait_until(lambda: _exposed(url, "ranker-v2") == before + 120, "exposures")


@pytest.mark.parametrize("local", [True, False])
def test_segments_are_recorded_with_the_exposure(served: tuple[Service, str], local: bool) -> None:
    svc, url = served
    country = "local" if local else "remote"
    with AssignmentClient(svc.url, local=local, token=READER, writer_token=WRITER) as client:
        for i in range(10):
            assert client.assign("segmented", f"{country}-{i}",
                                 segments={"country": country}).in_experiment  # fmt: skip

    def counted() -> int:
        from experiments.reporting import phase_report

        store = open_store(url)
        try:
            cells = phase_report(store, store.get_experiment("segmented"))["segments"]
        finally:
            store.close()
        arms = cells.get("country", {}).get(country, {})
        return sum(a["exposures"] for a in arms.values())

    wait_until(lambda: counted() == 10, f"the {country} segment's exposures")


def test_local_mode_reports_after_the_interval_and_keeps_failed_reports(
    served: tuple[Service, str], tmp_path: Path
) -> None:
    _, url = served
    own = start_service(url, tmp_path)  # a replica of its own, to take down mid-test
    client = AssignmentClient(
        own.url, local=True, token=READER, writer_token=WRITER, exposure_interval=0.3
    )
    try:
        before = _exposed(url, "three")
        exposed = [
            u for u in (f"late-{i}" for i in range(30)) if client.assign("three", u).in_experiment
        ]
        assert exposed
        time.sleep(0.4)
        client.assign("three", "trigger-0")  # the interval has passed: this call reports
        wait_until(lambda: _exposed(url, "three") >= before + len(exposed), "the report")
        own.stop()  # now a report fails, and its units are kept for the next one
        more = [
            u for u in (f"kept-{i}" for i in range(30)) if client.assign("three", u).in_experiment
        ]
        client.flush()
        assert more
        assert set(more) <= {s.unit for s in client._exposed.get("three", [])}
    finally:
        client.close()
        own.stop()


def test_fallback_to_control_when_the_service_is_down() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with AssignmentClient(dead, timeout=0.2) as client:
        a = client.assign("ranker-v2", "user-1")
        many = client.assign_many("ranker-v2", ["a", "b"])
    assert (a.variant, a.in_experiment, a.fallback, a.header_name) == ("control", False, True, None)
    assert "ConnectError" in (a.error or "")
    assert [m.fallback for m in many] == [True, True]


def test_fallback_on_error_answers_uses_the_known_control(served: tuple[Service, str]) -> None:
    svc, _ = served
    with AssignmentClient(svc.url, local=True, token=READER) as client:
        client.refresh()
        bad = client.assign("ranker-v2", "")  # invalid unit, evaluated locally
        unknown = client.assign("ghost", "u1")  # unknown locally, then 404 from the server
    assert (bad.variant, bad.header_value, bad.fallback) == ("control", "group-a", True)
    assert "empty" in (bad.error or "")
    assert (unknown.variant, unknown.fallback) == ("control", True)
    assert unknown.error == "404: experiment 'ghost' does not exist"


def test_local_mode_keeps_its_configs_when_the_service_goes_away(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    store.put_experiment(load_spec(EXAMPLE))
    change_state(store, "ranker-v2", Action.START)
    store.close()
    svc = start_service(url, tmp_path)
    # A generous timeout: on a busy machine a 0.2 s one let the first refresh time out, and the
    # client then had no configs to keep.  A stopped service refuses at once anyway.
    client = AssignmentClient(svc.url, local=True, token=READER, refresh_interval=0, timeout=10)
    client.refresh()  # the configs it is to keep
    before = client.assign("ranker-v2", "user-5")
    svc.stop()
    after = client.assign("ranker-v2", "user-5")  # the refresh fails; the last configs serve
    client.close()
    assert (after.variant, after.fallback) == (before.variant, False)
