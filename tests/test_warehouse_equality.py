"""Issue 18's oracle: the per-arm (and per-segment) statistics a SQL source computes in each
engine equal abmesh's own folding of the same exposures and events, within 1e-9 relative —
on generated data with redelivered events, events before the exposure, a covariate column,
a ratio metric, segments and units never exposed (tests/warehouse_data.py).  The reference
is the built-in store: the same rows appended to a SQLite store, folded, and exported."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.store import Store, open_store
from experiments.warehouse.read import SourceAnswer
from tests.warehouse_data import (
    POSTGRES,
    Data,
    fold_in_store,
    generate,
    load_chdb,
    load_duckdb,
    load_postgres,
    look,
)

REL = 1e-9
COLUMNS = {"exposures": {"covariates": {"revenue": "pre_revenue"}}}


@pytest.fixture(scope="module")
def data() -> Data:
    return generate(units=3000, events=20_000, seed=18)


@pytest.fixture(scope="module")
def own(data: Data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """abmesh's own folding of the data, in a SQLite store."""
    store: Store = open_store(f"sqlite:///{tmp_path_factory.mktemp('own')}/store.db")
    try:
        return fold_in_store(store, data)
    finally:
        store.close()


def answer(url: str, exposures: str, events: str) -> SourceAnswer:
    return look(url, exposures, events, COLUMNS)


def close(a: Any, b: Any, where: str, scale: float = 0.0) -> None:
    """Equal: numbers within REL of the larger (or of `scale`, for a co-moment that may be
    near 0 while its parts are large), everything else exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: {b!r} is not a mapping"
        assert sorted(a) == sorted(b), f"{where}: keys differ"
        for key in a:
            inner = scale
            if key in ("c_xy", "comoment", "c_num_den") and isinstance(a.get("m2"), float):
                inner = math.sqrt(abs(a["m2"] * a.get("m2_x", a["m2"])))
            if key == "sum_xy":  # Σxy = c_xy + ΣxΣy/n: 0 exactly, or a rounding of it
                inner = math.sqrt(abs(a["sum_sq"] * a["sum_x2"]))
            close(a[key], b[key], f"{where}.{key}", inner)
        return
    if isinstance(a, float) or isinstance(b, float):
        tol = REL * max(abs(a), abs(b), scale)
        assert abs(a - b) <= tol, f"{where}: {a!r} != {b!r}"
        return
    assert a == b, f"{where}: {a!r} != {b!r}"


def check(own: dict[str, Any], sql: SourceAnswer) -> None:
    close(own["arms"], sql.arms, "arms")
    close(own["segments"], sql.segments, "segments")
    # The value distributions' bins (experiments.distributions), counted exactly.
    assert sql.distributions == own["distributions"]
    assert sorted(sql.distributions) == ["click", "revenue"]
    assert len(sql.distributions["revenue"]["control"]["bins"]) > 20
    # The comparison is not empty: every arm, metric and segment was there to compare.
    assert sorted(sql.arms) == ["control", "treatment"]
    assert sorted(sql.arms["control"]["metrics"]) == [
        "click", "purchase", "revenue", "revenue_per_click"]  # fmt: skip
    assert sorted(sql.segments["country"]) == ["(other)", "DE", "FR", "US"]
    assert sorted(sql.segments["platform"]) == ["android", "ios", "web"]


def test_duckdb_equals_the_built_in_folding(
    own: dict[str, Any], data: Data, tmp_path: Path
) -> None:
    load_duckdb(str(tmp_path / "w.duckdb"), data)
    sql = answer(f"duckdb:///{tmp_path}/w.duckdb", "exposures", "events")
    check(own, sql)
    assert sql.ran["engine"] == "duckdb"
    assert "ROW_NUMBER" in sql.ran["query"]


def test_duckdb_over_parquet_files_equals_it_too(
    own: dict[str, Any], data: Data, tmp_path: Path
) -> None:
    data.exposures.to_parquet(tmp_path / "exposures.parquet")
    data.events.to_parquet(tmp_path / "events.parquet")
    sql = answer("duckdb:///:memory:",
                 f"SELECT * FROM read_parquet('{tmp_path}/exposures.parquet')",
                 f"SELECT * FROM read_parquet('{tmp_path}/events.parquet')")  # fmt: skip
    check(own, sql)


def test_postgres_equals_the_built_in_folding(
    own: dict[str, Any], data: Data, pg_schema: str
) -> None:
    load_postgres(pg_schema, data)
    sql = answer(POSTGRES, f"{pg_schema}.exposures", f"{pg_schema}.events")
    check(own, sql)
    assert sql.ran["engine"] == "postgres"


def test_chdb_equals_the_built_in_folding(own: dict[str, Any], data: Data, tmp_path: Path) -> None:
    load_chdb(str(tmp_path), data)
    sql = answer(f"chdb://{tmp_path}", "exposures", "events")
    check(own, sql)
    assert sql.ran["engine"] == "chdb"


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[str]:
    """A ClickHouse HTTP server on a loopback port of its own (tests/clickhouse_http.py)."""
    import subprocess
    import sys

    import httpx

    from experiments.localstack import free_port, wait_until

    port, log = free_port(), (tmp_path / "clickhouse.log").open("wb")
    (tmp_path / "ch").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.clickhouse_http", str(port), str(tmp_path / "ch")],
        stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.post(url, content=b"SELECT 1").status_code == 200,
                   "the ClickHouse stub")  # fmt: skip
        yield f"clickhouse://127.0.0.1:{port}/default"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_clickhouse_server_equals_the_built_in_folding(
    own: dict[str, Any], data: Data, clickhouse: str, tmp_path: Path
) -> None:
    """Through clickhouse-connect, over ClickHouse's HTTP interface."""
    import clickhouse_connect

    port = int(clickhouse.split(":")[2].split("/")[0])
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
    for name, frame in (("exposures", data.exposures), ("events", data.events)):
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
        client.command(f"CREATE TABLE {name} ENGINE = MergeTree ORDER BY tuple()"
                       f" AS SELECT * FROM file('{tmp_path}/{name}.parquet', Parquet)")  # fmt: skip
    client.close()
    sql = answer(clickhouse, "exposures", "events")
    check(own, sql)
    assert sql.ran["engine"] == "clickhouse"
    assert sql.distributions == own["distributions"]
