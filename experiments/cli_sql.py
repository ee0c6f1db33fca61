"""`abmesh sql`: the query a look at an experiment's SQL source runs, for reading, for running
by hand, or, with `--dialect`, for a warehouse abmesh does not connect to itself (BigQuery,
Snowflake): the same query, transpiled."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

import typer

from experiments.cli_common import PhaseOpt, StoreOpt, fail, out, store_for
from experiments.errors import AbmeshError
from experiments.warehouse.engines import DIALECT, engine_of, resolve
from experiments.warehouse.read import query_for, sql_sources


class Dialect(StrEnum):  # experiments.warehouse.query.DIALECTS
    DUCKDB = "duckdb"
    POSTGRES = "postgres"
    CLICKHOUSE = "clickhouse"
    BIGQUERY = "bigquery"
    SNOWFLAKE = "snowflake"


def sql(
    experiment: str,
    dialect: Annotated[
        Dialect | None,
        typer.Option(help="Default: the engine of the source's connection."),
    ] = None,
    phase: PhaseOpt = None,
    store: StoreOpt = None,
) -> None:
    """Print the SQL a look at the experiment's metrics runs now, one query per source."""
    with store_for(store) as st:
        record = st.get_experiment(experiment)
    wanted = phase or record.phase
    planned = record.status.phase_record(wanted)
    if planned is None:
        fail(f"experiment {experiment!r} has no phase {wanted!r}")
    sources = sql_sources(record.spec)
    if not sources:
        fail(f"experiment {experiment!r} reads its metrics from the store: it names no SQL source")
    for source, metrics in sources:
        try:
            chosen = str(dialect) if dialect else DIALECT[engine_of(resolve(source.connection))]
        except AbmeshError as exc:
            fail(f"{exc} (give --dialect to print the query anyway)")
        text, _, _ = query_for(record.spec, source, metrics, planned, time.time(), chosen)
        out.print(f"-- metrics {', '.join(sorted(metrics)) or '(exposures only)'}, {chosen}",
                  markup=False)  # fmt: skip
        out.print(text + ";", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(sql)
