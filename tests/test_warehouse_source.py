"""An experiment whose metrics come from a SQL source, through everything that reads them:
`abmesh stats -o json` and `abmesh sql`, the look's history (query text and duration), the
minimum interval between queries (kept across processes through the store), the phase's
window, the experiment column, timestamp columns, metric-level sources beside the store, and
what a source that fails, hangs or holds nothing answers."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.errors import SourceError
from experiments.reporting import phase_report
from experiments.status import PhaseRecord
from experiments.store import Store, open_store
from experiments.warehouse import read
from tests.warehouse_data import START, Data, generate, load_duckdb, spec

DAY = 86_400.0
T0 = time.time() - 40 * DAY  # the phase's start: every generated row lies before now
runner = CliRunner()


def tables(con: duckdb.DuckDBPyConnection) -> None:
    """Empty exposures and events tables in the default layout, with the segment columns."""
    con.execute("CREATE TABLE exposures (unit TEXT, variant TEXT, timestamp DOUBLE,"
                " country TEXT, platform TEXT)")  # fmt: skip
    con.execute("CREATE TABLE events (event_id TEXT, unit TEXT, metric TEXT, value DOUBLE,"
                " timestamp DOUBLE)")  # fmt: skip


def shifted(data: Data, by: float) -> Data:
    for frame in (data.exposures, data.events, data.covariate_events):
        frame["timestamp"] += by
    return data


def source(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "sql", "connection": url, "exposures": "exposures", "events": "events",
            "min_interval": 0, **extra}  # fmt: skip


def start(store: Store, body: dict[str, Any] | None, name: str = "warehouse") -> None:
    """Put the experiment and move its phase's start back to T0."""
    store.put_experiment(spec(name, body))
    record = store.get_experiment(name)
    status = replace(record.status, phases=(PhaseRecord(record.phase, T0),))
    store.commit_status(name, status, expected_version=record.status.version)


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Data]:
    data = shifted(generate(units=400, events=3000, seed=3), T0 + DAY - START)
    load_duckdb(str(tmp_path / "w.duckdb"), data)
    return f"duckdb:///{tmp_path}/w.duckdb", data


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path}/store.db")


@pytest.fixture
def started(db: tuple[str, Data], tmp_path: Path) -> str:
    """The URL of a store holding the experiment, reading `db`."""
    url = f"sqlite:///{tmp_path}/store.db"
    start(open_store(url), source(db[0]))
    return url


def test_stats_answers_from_the_source_in_the_usual_shape(
    db: tuple[str, Data], started: str
) -> None:
    _, data = db
    store_url = started
    result = runner.invoke(app, ["stats", "warehouse", "-o", "json", "--store", store_url])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    exposed = data.exposures.groupby("variant").size().to_dict()
    assert {v: a["exposures"] for v, a in report["arms"].items()} == exposed
    assert set(report["arms"]["control"]["metrics"]) == {
        "purchase", "revenue", "click", "revenue_per_click"}  # fmt: skip
    assert set(report["segments"]) == {"country", "platform"}
    (ran,) = report["sources"]
    assert ran["engine"] == "duckdb"
    assert ran["window"]["start"] == T0
    assert ran["query"].startswith("WITH ")


def test_a_decide_look_records_the_query_and_its_duration(started: str) -> None:
    store_url, st = started, open_store(started)
    result = runner.invoke(app, ["decide", "warehouse", "-o", "json", "--store", store_url])
    assert result.exit_code == 0, result.output
    (look,) = st.looks(st.get_experiment("warehouse").uid)
    (ran,) = look["sources"]
    assert ran["duration_s"] > 0
    assert "ROW_NUMBER() OVER (PARTITION BY event_id" in ran["query"]
    assert look["arms"]["treatment"]["exposures"] > 0


def test_looks_sooner_than_the_minimum_interval_share_one_query(
    db: tuple[str, Data], store: Store
) -> None:
    url, _ = db
    start(store, source(url, min_interval=3600))
    record = store.get_experiment("warehouse")
    first = phase_report(store, record)
    with duckdb.connect(url.removeprefix("duckdb:///")) as con:  # more data arrives
        con.execute("DELETE FROM exposures WHERE variant = 'control'")
    again = phase_report(store, record)
    assert again["sources"][0]["reused"] is True
    assert again["arms"] == first["arms"]
    read._cache.clear()  # another process (a `decide`, a replica): the store holds the answer
    other = phase_report(store, record)
    assert other["sources"][0]["reused"] is True
    assert other["arms"] == first["arms"]


def test_with_no_minimum_interval_every_look_queries(db: tuple[str, Data], store: Store) -> None:
    url, _ = db
    start(store, source(url))
    record = store.get_experiment("warehouse")
    phase_report(store, record)
    with duckdb.connect(url.removeprefix("duckdb:///")) as con:
        con.execute("DELETE FROM exposures WHERE variant = 'control'")
    after = phase_report(store, record)
    assert after["sources"][0]["reused"] is False
    assert set(after["arms"]) == {"treatment"}


def test_the_window_is_the_phase_and_the_experiment_column_filters(
    tmp_path: Path, store: Store
) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE exposures (exp TEXT, unit TEXT, variant TEXT, timestamp DOUBLE,"
                    " country TEXT, platform TEXT)")  # fmt: skip
        con.execute("CREATE TABLE events (exp TEXT, event_id TEXT, unit TEXT, metric TEXT,"
                    " value DOUBLE, timestamp DOUBLE)")  # fmt: skip
        insert = "INSERT INTO exposures (exp, unit, variant, timestamp) VALUES (?, ?, ?, ?)"
        con.executemany(insert, [
            ("warehouse", "a", "control", T0 + 10),
            ("warehouse", "b", "treatment", T0 + 20),
            ("warehouse", "old", "treatment", T0 - 10),  # exposed before the phase began
            ("other", "c", "treatment", T0 + 30),  # another experiment's
            ("warehouse", "future", "control", time.time() + DAY),  # after the look
        ])  # fmt: skip
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", [
            ("warehouse", "e1", "a", "revenue", 5.0, T0 + 100),
            ("warehouse", "e2", "b", "revenue", 7.0, T0 + 100),
            ("other", "e3", "b", "revenue", 1000.0, T0 + 100),  # another experiment's event
            ("warehouse", "e4", "a", "revenue", 50.0, time.time() + DAY),  # after the look
        ])  # fmt: skip
    columns = {"exposures": {"experiment": "exp"}, "events": {"experiment": "exp"}}
    start(store, source(f"duckdb:///{path}", columns=columns))
    report = phase_report(store, store.get_experiment("warehouse"))
    arms = report["arms"]
    assert {v: a["exposures"] for v, a in arms.items()} == {"control": 1, "treatment": 1}
    assert arms["control"]["metrics"]["revenue"]["sum"] == 5.0
    assert arms["treatment"]["metrics"]["revenue"]["sum"] == 7.0


def test_timestamp_columns_read_as_epoch_ones(db: tuple[str, Data], tmp_path: Path) -> None:
    url, _ = db
    typed = tmp_path / "typed.duckdb"
    with duckdb.connect(str(typed)) as con:
        con.execute(f"ATTACH '{url.removeprefix('duckdb:///')}' AS src (READ_ONLY)")
        for table in ("exposures", "events"):
            con.execute(f"CREATE TABLE {table} AS SELECT * REPLACE"
                        f" (to_timestamp(timestamp) AS timestamp) FROM src.{table}")  # fmt: skip
    st = open_store(f"sqlite:///{tmp_path}/a.db")
    start(st, source(url))
    epoch = phase_report(st, st.get_experiment("warehouse"))
    st2 = open_store(f"sqlite:///{tmp_path}/b.db")
    start(st2, source(f"duckdb:///{typed}", timestamps="timestamp"))
    stamped = phase_report(st2, st2.get_experiment("warehouse"))
    assert "epoch(" in stamped["sources"][0]["query"]
    for variant, arm in epoch["arms"].items():
        assert stamped["arms"][variant]["exposures"] == arm["exposures"]
        for metric, values in arm["metrics"].items():
            assert stamped["arms"][variant]["metrics"][metric]["n"] == values["n"]
            assert stamped["arms"][variant]["metrics"][metric].get("sum") == pytest.approx(
                values.get("sum"), rel=1e-12)  # fmt: skip


def test_segment_values_beyond_the_cap_and_invalid_ones_count_as_other(
    tmp_path: Path, store: Store
) -> None:
    path = tmp_path / "w.duckdb"
    rows = [(f"u{i}", "control", T0 + 1, "US" if i < 5 else "DE" if i < 8 else "FR",
             "a|b" if i == 9 else "x" * 65 if i == 8 else "web") for i in range(10)]  # fmt: skip
    with duckdb.connect(str(path)) as con:
        tables(con)
        con.executemany("INSERT INTO exposures VALUES (?, ?, ?, ?, ?)", rows)
    body = spec("warehouse", source(f"duckdb:///{path}")).model_dump(mode="json", by_alias=True)
    body["segments"] = [{"name": "country", "max_values": 2}, "platform"]
    from experiments import load_spec

    store.put_experiment(load_spec(body))
    record = store.get_experiment("warehouse")
    status = replace(record.status, phases=(PhaseRecord(record.phase, T0),))
    store.commit_status("warehouse", status, expected_version=record.status.version)
    cells = phase_report(store, store.get_experiment("warehouse"))["segments"]
    # The two values with most units keep their own segment; the third is (other).
    count = {value: arms["control"]["exposures"] for value, arms in cells["country"].items()}
    assert count == {"US": 5, "DE": 3, "(other)": 2}
    count = {value: arms["control"]["exposures"] for value, arms in cells["platform"].items()}
    assert count == {"web": 8, "(other)": 2}


def test_a_metric_with_its_own_source_beside_the_store(db: tuple[str, Data], store: Store) -> None:
    url, data = db
    body = spec("warehouse").model_dump(mode="json", by_alias=True)
    for metric in body["metrics"]["secondary"]:  # revenue and its ratio from SQL, purchase not
        metric["source"] = source(url)
    from experiments import load_spec

    store.put_experiment(load_spec(body))
    report = phase_report(store, store.get_experiment("warehouse"), settle=5)
    assert report["arms"] == {}  # the store has no exposures: nothing counted from SQL either
    record = store.get_experiment("warehouse")
    status = replace(record.status, phases=(PhaseRecord(record.phase, T0),))
    store.commit_status("warehouse", status, expected_version=record.status.version)
    report = phase_report(store, store.get_experiment("warehouse"), settle=5)
    (ran,) = report["sources"]
    assert ran["metrics"] == ["click", "revenue"]
    revenue = data.events[data.events.metric == "revenue"]
    assert report["arms"]["control"]["metrics"]["revenue"]["sum"] > 0
    assert "purchase" not in report["arms"]["control"]["metrics"]
    assert len(revenue) > 0


def test_a_missing_table_fails_the_look_with_the_engines_message(
    tmp_path: Path, store: Store
) -> None:
    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    start(store, source(f"duckdb:///{tmp_path}/empty.duckdb"))
    with pytest.raises(SourceError, match="exposures"):
        phase_report(store, store.get_experiment("warehouse"))


def test_an_unset_environment_variable_is_named(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ABMESH_TEST_WAREHOUSE", raising=False)
    start(store, source("ABMESH_TEST_WAREHOUSE"))
    with pytest.raises(SourceError, match="ABMESH_TEST_WAREHOUSE is not set"):
        phase_report(store, store.get_experiment("warehouse"))


def test_a_connection_from_the_environment(
    db: tuple[str, Data], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, data = db
    monkeypatch.setenv("ABMESH_TEST_WAREHOUSE", url)
    start(store, source("ABMESH_TEST_WAREHOUSE"))
    arms = phase_report(store, store.get_experiment("warehouse"))["arms"]
    assert sum(a["exposures"] for a in arms.values()) == len(data.exposures)


def test_a_refusing_postgres_fails_at_once(store: Store) -> None:
    start(store, source("postgresql://postgres@127.0.0.1:1/test"))
    with pytest.raises(SourceError, match=r"127\.0\.0\.1.*Connection refused"):
        phase_report(store, store.get_experiment("warehouse"))


def test_a_query_past_its_timeout_is_cancelled(tmp_path: Path, store: Store) -> None:
    rows = "FROM range(1000000000000) AS r(i)"
    endless = (f"SELECT 'u' || (i % 1000) AS unit, 'control' AS variant, {T0} + i % 1000 AS"
               f" timestamp, NULL AS country, NULL AS platform {rows}")  # fmt: skip
    events = (f"SELECT 'e' || i AS event_id, 'u' || (i % 1000) AS unit, 'click' AS metric,"
              f" 1.0 AS value, {T0} + i % 1000 AS timestamp {rows}")  # fmt: skip
    start(store, {**source("duckdb:///:memory:"), "exposures": endless, "events": events,
                  "timeout": 1})  # fmt: skip
    with pytest.raises(SourceError, match=r"ran past 1 s"):
        phase_report(store, store.get_experiment("warehouse"))


def test_an_empty_source_is_no_data_not_an_error(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "w.duckdb"
    load_duckdb(str(path), generate(units=0, events=0))
    start(store, source(f"duckdb:///{path}"))
    report = phase_report(store, store.get_experiment("warehouse"))
    assert report["arms"] == {}
    result = runner.invoke(
        app, ["decide", "warehouse", "--store", f"sqlite:///{tmp_path}/store.db"]
    )
    assert result.exit_code == 0, result.output


def test_sql_prints_the_query_in_any_dialect(started: str) -> None:
    store_url = started
    result = runner.invoke(app, ["sql", "warehouse", "--store", store_url])
    assert result.exit_code == 0, result.output
    assert "-- metrics click, purchase, revenue, duckdb" in result.output
    result = runner.invoke(app, ["sql", "warehouse", "--dialect", "bigquery", "--store", store_url])
    assert result.exit_code == 0, result.output
    assert "UNIX_MICROS" not in result.output  # epoch columns: no conversion
    assert "`unit`" in result.output


def test_the_report_of_an_experiment_read_from_sql(started: str, tmp_path: Path) -> None:
    store_url = started
    assert runner.invoke(app, ["decide", "warehouse", "--store", store_url]).exit_code == 0
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "warehouse", "-o", str(out), "--store", store_url])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "revenue_per_click" in page
    assert "country" in page  # the segments section, from the source's cells


def test_variants_by_key_or_header_value_and_no_others(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        tables(con)
        con.executemany("INSERT INTO exposures (unit, variant, timestamp) VALUES (?, ?, ?)", [
            ("a", "control", T0 + 1), ("b", "group-treatment", T0 + 1),  # a header value
            ("c", "holdout", T0 + 1),  # not an arm of the spec: not read
            ("d", "holdout", T0 + 1), ("d", "treatment", T0 + 2),  # its first arm of the spec
        ])  # fmt: skip
    start(store, source(f"duckdb:///{path}"))
    arms = phase_report(store, store.get_experiment("warehouse"))["arms"]
    assert {v: a["exposures"] for v, a in arms.items()} == {"control": 1, "treatment": 2}


def test_a_query_that_would_write_to_postgres_is_refused(store: Store) -> None:
    import uuid

    import psycopg

    from tests.warehouse_data import POSTGRES, drop_postgres

    schema = f"abmesh_ro_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        con.execute(f'CREATE SEQUENCE "{schema}".ids')
    try:
        # nextval writes (the sequence moves); a read-only transaction refuses it.
        writes = (f"SELECT 'u' AS unit, 'control' AS variant, {T0 + 1} AS timestamp,"
                  " NULL AS country, NULL AS platform"
                  f" FROM (SELECT nextval('{schema}.ids')) AS w")  # fmt: skip
        events = ("SELECT 'e' AS event_id, 'u' AS unit, 'click' AS metric, 1.0 AS value,"
                  " 0.0 AS timestamp")  # fmt: skip
        start(store, {**source(POSTGRES), "exposures": writes, "events": events})
        with pytest.raises(SourceError, match=r"read-only transaction"):
            phase_report(store, store.get_experiment("warehouse"))
    finally:
        drop_postgres(schema)


def test_rows_without_a_unit_or_an_id_are_not_read_and_a_missing_value_is_zero(
    tmp_path: Path, store: Store
) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        tables(con)
        insert = "INSERT INTO exposures (unit, variant, timestamp) VALUES (?, ?, ?)"
        con.executemany(insert, [("a", "control", T0 + 1), (None, "control", T0 + 1)])
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [
            ("e1", "a", "revenue", 4.0, T0 + 2), ("e2", "a", "revenue", None, T0 + 2),
            (None, "a", "revenue", 100.0, T0 + 2), ("e3", "a", "purchase", None, T0 + 2),
        ])  # fmt: skip
    start(store, source(f"duckdb:///{path}"))
    arm = phase_report(store, store.get_experiment("warehouse"))["arms"]["control"]
    assert arm["exposures"] == 1
    assert arm["metrics"]["revenue"]["sum"] == 4.0
    assert arm["metrics"]["purchase"]["sum"] == 1.0  # a conversion's value is not read
