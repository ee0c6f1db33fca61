"""The SQL source in the spec (what is refused, with what message) and the generated query in
every dialect: BigQuery and Snowflake, which abmesh does not connect to, are checked by
transpiling their text back to DuckDB and running it on the same data: it must answer what
DuckDB's own text answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from experiments.cli_warehouse import Dialect
from experiments.errors import SpecError
from experiments.warehouse.query import DIALECTS, EPOCH_SQL
from experiments.warehouse.read import query_for
from tests.warehouse_data import METRICS, PHASE, START, generate, load_duckdb, spec

GOOD = {"kind": "sql", "connection": "duckdb:///w.db", "exposures": "exposures",
        "events": "events"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"connection": "mysql://db/x"}, "one of the schemes"),
        ({"connection": "postgresql://u:secret@db/x"}, "carries a password"),
        ({"connection": "lower_case_var"}, "one of the schemes"),
        ({"exposures": "exposures; DROP TABLE x"}, "neither a table name"),
        ({"events": "SELECT 1; SELECT 2"}, "neither a table name"),
        ({"events": "my events"}, "neither a table name"),
        ({"columns": {"exposures": {"unit": "user id"}}}, "plain identifier"),
        ({"columns": {"exposures": {"segments": {"device": "d"}}}}, "not a declared segment"),
        ({"columns": {"exposures": {"covariates": {"nope": "c"}}}}, "not an event metric"),
        ({"min_interval": -1}, "greater than or equal"),
        ({"timeout": 0}, "greater than"),
        ({"kind": "http"}, "'sql'"),
    ],
)
def test_a_bad_source_is_refused_with_what_is_wrong(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(source={**GOOD, **change})


@pytest.mark.parametrize(
    "connection",
    ["duckdb:///w.db", "duckdb:///:memory:", "postgresql://db.internal:5432/analytics",
     "postgresql+psycopg://u@db/x", "chdb:///var/lib/ch", "clickhouse://ch:8123/default",
     "ABMESH_WAREHOUSE_URL"],
)  # fmt: skip
def test_urls_without_a_password_and_variable_names_are_accepted(connection: str) -> None:
    s = spec(source={**GOOD, "connection": connection})
    assert s.source is not None
    assert s.source.connection == connection


def test_a_ratio_and_its_part_from_two_sources_is_refused() -> None:
    body = spec().model_dump(mode="json", by_alias=True)
    body["metrics"]["secondary"][1]["source"] = GOOD  # the ratio revenue/click; revenue: store
    from experiments import load_spec

    with pytest.raises(SpecError, match="'revenue' is read from two sources"):
        load_spec(body)


def test_the_cli_knows_every_dialect() -> None:
    assert tuple(Dialect) == DIALECTS


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_query_parses_in_its_dialect_with_the_epoch_spelled_for_it(dialect: str) -> None:
    s = spec(source={**GOOD, "timestamps": "timestamp", "exposures": "analytics.exposures"})
    assert s.source is not None
    text, _, _ = query_for(s, s.source, METRICS, PHASE, START + 1, dialect)
    sqlglot.parse_one(text, read=dialect)  # raises on a syntax error
    assert EPOCH_SQL[dialect].format("")[:6] in text
    quote = "`" if dialect == "bigquery" else '"'
    assert f"FROM {quote}analytics{quote}.{quote}exposures{quote} AS src" in text


@pytest.mark.parametrize("dialect", ["bigquery", "snowflake", "postgres", "clickhouse"])
def test_the_transpiled_query_answers_what_duckdbs_does(dialect: str, tmp_path: Path) -> None:
    load_duckdb(str(tmp_path / "w.duckdb"), generate(units=300, events=2000, seed=5))
    s = spec(source={**GOOD, "columns": {"exposures": {"covariates": {"revenue": "pre_revenue"}}}})
    assert s.source is not None
    native, _, _ = query_for(s, s.source, METRICS, PHASE, PHASE.ended_at or 0.0, "duckdb")
    foreign, _, _ = query_for(s, s.source, METRICS, PHASE, PHASE.ended_at or 0.0, dialect)
    back = sqlglot.transpile(foreign, read=dialect, write="duckdb")[0]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        expected = sorted(con.execute(native).fetchall(), key=_cell)
        got = sorted(con.execute(back).fetchall(), key=_cell)
    assert len(expected) > 4
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row[:3] == want[:3]
        assert list(row[3:]) == pytest.approx(list(want[3:]), rel=1e-9, abs=1e-6)


def _cell(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(x) for x in row[:3])
