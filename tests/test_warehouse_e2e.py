"""Issue 18, end to end from PostgreSQL: an A/B phase whose exposures and conversions live only
in a PostgreSQL table (the server on this machine) is judged by the controller, look after
look as rows arrive, to a promotion; `abmesh decide` reads the same table to the same verdict;
and each look's history holds the query that read it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from controlplane.lifecycle import apply_spec
from experiments.cli import app
from experiments.loader import load_spec
from experiments.status import Outcome
from tests.controller_rig import Rig, spec_of
from tests.warehouse_data import POSTGRES, drop_postgres


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"abmesh_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{name}"')
        con.execute(f'CREATE TABLE "{name}".exposures (unit TEXT, variant TEXT,'
                    ' "timestamp" DOUBLE PRECISION)')  # fmt: skip
        con.execute(f'CREATE TABLE "{name}".events (event_id TEXT, unit TEXT, metric TEXT,'
                    ' value DOUBLE PRECISION, "timestamp" DOUBLE PRECISION)')  # fmt: skip
    try:
        yield name
    finally:
        drop_postgres(name)


def doc_for(schema: str) -> dict[str, Any]:
    doc = spec_of()
    doc["rollout"]["phases"] = [{"kind": "ab", "split": 50}, {"kind": "promote"}]
    doc["source"] = {"kind": "sql", "connection": POSTGRES, "exposures": f"{schema}.exposures",
                     "events": f"{schema}.events", "min_interval": 0}  # fmt: skip
    return doc


def arrive(schema: str, batch: int, at: float, rates: dict[str, float], units: int = 300) -> None:
    """`units` more units exposed at `at`, alternately per arm, each converting (a click when
    exposed) with its arm's rate; a redelivered click for good measure."""
    rng = random.Random(batch)
    exposures, events = [], []
    for i in range(units):
        unit, arm = f"b{batch}-u{i}", "stable" if i % 2 else "candidate"
        exposures.append((unit, arm, at))
        if rng.random() < rates[arm]:
            events.append((f"e-{unit}", unit, "click", 1.0, at))
    events += events[:1]
    with psycopg.connect(POSTGRES, autocommit=True) as con, con.cursor() as cur:
        cur.executemany(f'INSERT INTO "{schema}".exposures VALUES (%s, %s, %s)', exposures)
        cur.executemany(f'INSERT INTO "{schema}".events VALUES (%s, %s, %s, %s, %s)', events)


def test_the_controller_promotes_on_metrics_read_from_postgres(rig: Rig, schema: str) -> None:
    spec = rig.start(doc_for(schema))
    controller = rig.controller()
    controller.tick()
    record = rig.store.get_experiment(spec.name)
    assert record.phase == "ab-1"
    started = record.status.phase_record("ab-1")
    assert started is not None
    # Rows from before the phase began are not its sample: a losing candidate, earlier.
    arrive(schema, 999, started.started_at - 100, {"stable": 0.9, "candidate": 0.0})
    for batch in range(40):
        arrive(schema, batch, started.started_at + 1 + batch, {"stable": 0.10, "candidate": 0.30})
        rig.clock.now += 10
        controller.tick()
        if rig.store.get_experiment(spec.name).status.outcome:
            break
    record = rig.store.get_experiment(spec.name)
    assert record.status.outcome is Outcome.PROMOTED
    assert rig.router().weights == {"candidate": 100}
    looks = rig.store.looks(record.uid, "ab-1")
    assert looks
    assert looks[-1]["status"] == "winner"
    (ran,) = looks[-1]["sources"]
    assert ran["engine"] == "postgres"
    assert f'"{schema}"."exposures" AS src' in ran["query"]
    # The store itself holds no exposures: everything came from PostgreSQL.
    stats, _ = rig.store.phase_stats(spec.name, "ab-1")
    assert not stats
    result = CliRunner().invoke(app, ["decide", spec.name, "--store", rig.url, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert '"status": "winner"' in result.output
    assert '"winner": "candidate"' in result.output


def test_decide_reads_postgres_and_a_down_server_is_a_clear_error(rig: Rig, schema: str) -> None:
    doc = doc_for(schema)
    del doc["rollout"]
    for variant in doc["variants"]:  # an A/B test of its own, without a rollout
        variant["weight"] = 50
    spec = rig.start(doc)
    started = rig.store.get_experiment(spec.name).status.phase_record()
    assert started is not None
    for batch in range(12):
        arrive(schema, batch, started.started_at, {"stable": 0.10, "candidate": 0.30})
    result = CliRunner().invoke(app, ["decide", spec.name, "--store", rig.url, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert '"winner": "candidate"' in result.output
    doc["source"]["connection"] = "postgresql://postgres@127.0.0.1:1/test"
    apply_spec(rig.store, load_spec(doc))
    result = CliRunner().invoke(app, ["decide", spec.name, "--store", rig.url])
    assert result.exit_code != 0
    assert "SQL source postgresql://" in result.output
    assert "127.0.0.1:1/test" in result.output
    assert "Connection refused" in result.output


def test_a_warehouse_that_is_down_holds_the_ab_phase_until_it_answers(
    rig: Rig, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = doc_for(schema)
    doc["source"]["connection"] = "ABMESH_E2E_WAREHOUSE"
    monkeypatch.setenv("ABMESH_E2E_WAREHOUSE", "postgresql://postgres@127.0.0.1:1/test")
    spec = rig.start(doc)
    controller = rig.controller()
    controller.tick()
    started = rig.store.get_experiment(spec.name).status.phase_record("ab-1")
    assert started is not None
    for batch in range(12):
        arrive(schema, batch, started.started_at + 1, {"stable": 0.10, "candidate": 0.30})
    for _ in range(3):
        rig.clock.now += 10
        controller.tick()
    record = rig.store.get_experiment(spec.name)
    assert record.status.outcome is None
    held = record.status.condition("Progressing")
    assert held is not None
    assert held.reason == "MetricsUnreadable"
    assert "Connection refused" in held.message
    assert rig.actions(spec.name).count("hold") == 1  # said once, not every tick
    monkeypatch.setenv("ABMESH_E2E_WAREHOUSE", POSTGRES)  # back
    for _ in range(3):
        rig.clock.now += 10
        controller.tick()
    assert rig.store.get_experiment(spec.name).status.outcome is Outcome.PROMOTED


def test_a_guardrail_rolls_a_canary_back_while_the_warehouse_is_down(rig: Rig, schema: str) -> None:
    doc = doc_for(schema)
    doc["rollout"]["phases"] = [{"kind": "canary", "steps": [10, 50], "checks": 1},
                                {"kind": "ab", "split": 50}, {"kind": "promote"}]  # fmt: skip
    doc["source"]["connection"] = "postgresql://postgres@127.0.0.1:1/test"
    spec = rig.start(doc)
    controller = rig.controller()
    controller.tick()
    rig.provider.values["error_ratio"] = 0.5
    for _ in range(3):
        rig.clock.now += 10
        controller.tick()
    record = rig.store.get_experiment(spec.name)
    assert record.status.outcome is Outcome.ROLLED_BACK
    assert "rollback" in rig.actions(spec.name)
