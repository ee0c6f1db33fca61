"""`abmesh export-warehouse`: abmesh's own exposures and events, from every store backend,
written as Parquet files and as PostgreSQL tables in the layout a SQL source reads — and read
back by a SQL source, they give the statistics the store folded itself (within 1e-9).  A rerun
replaces, never duplicates; a bad target is a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.store import Store
from experiments.warehouse.read import SourceAnswer
from tests.test_warehouse_equality import close
from tests.warehouse_data import POSTGRES, fold_in_store, generate, look

runner = CliRunner()
COLUMNS = {"exposures": {"experiment": "experiment"}, "events": {"experiment": "experiment"}}


@pytest.fixture
def filled(store: Store) -> dict[str, Any]:
    """The store holding an experiment's exposures (with segments) and events, folded; its
    own report."""
    return fold_in_store(store, generate(units=300, events=2500, seed=11))


def read_back(connection: str, exposures: str, events: str) -> SourceAnswer:
    return look(connection, exposures, events, COLUMNS)


def export(store_url: str, *args: str) -> Any:
    return runner.invoke(app, ["export-warehouse", "warehouse", *args, "--store", store_url])


def test_parquet_files_read_back_to_the_same_statistics(
    store_url: str, filled: dict[str, Any], tmp_path: Path
) -> None:
    for _ in range(2):  # a rerun replaces the files
        result = export(store_url, "--to", str(tmp_path / "wh"))
        assert result.exit_code == 0, result.output
    assert "exposures and" in result.output
    sql = read_back("duckdb:///:memory:",
                    f"SELECT * FROM read_parquet('{tmp_path}/wh/exposures.parquet')",
                    f"SELECT * FROM read_parquet('{tmp_path}/wh/events.parquet')")  # fmt: skip
    close(filled["arms"], sql.arms, "arms")
    close(filled["segments"], sql.segments, "segments")
    assert sorted(sql.arms) == ["control", "treatment"]


def test_postgres_tables_read_back_and_a_rerun_never_duplicates(
    store_url: str, filled: dict[str, Any], pg_schema: str
) -> None:
    for _ in range(2):
        result = export(store_url, "--to", POSTGRES, "--schema", pg_schema)
        assert result.exit_code == 0, result.output
    with psycopg.connect(POSTGRES) as con:
        counted = f'SELECT count(*), count(DISTINCT unit) FROM "{pg_schema}".exposures'
        exposed, units = con.execute(counted).fetchone() or (0, 0)
    assert exposed == units == sum(a["exposures"] for a in filled["arms"].values())
    sql = read_back(POSTGRES, f"{pg_schema}.exposures", f"{pg_schema}.events")
    close(filled["arms"], sql.arms, "arms")
    close(filled["segments"], sql.segments, "segments")


def test_a_bad_target_or_phase_is_a_clear_error(store_url: str, filled: dict[str, Any]) -> None:
    result = export(store_url, "--to", "mysql://db/x")
    assert result.exit_code != 0
    assert "postgresql:// URL" in result.output
    result = export(store_url, "--to", "postgresql://postgres@127.0.0.1:1/test")
    assert result.exit_code != 0
    assert "Connection refused" in result.output
    result = export(store_url, "--to", "/tmp/x", "--phase", "nope")
    assert result.exit_code != 0
    assert "has no phase 'nope'" in result.output
    result = export(store_url, "--to", POSTGRES, "--schema", "bad schema")
    assert result.exit_code != 0
    assert "table or schema name" in result.output
