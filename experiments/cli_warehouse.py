"""Warehouse commands: `abmesh sql`, the query a look at an experiment's SQL source runs (for
reading, for running by hand, or, with `--dialect`, for a warehouse abmesh does not connect to
itself: BigQuery, Snowflake); `abmesh export-warehouse`, abmesh's own exposures and events
written in the layout a SQL source reads (experiments.warehouse.export)."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

import typer

from experiments.cli_common import PhaseOpt, StoreOpt, fail, out, store_for
from experiments.errors import AbmeshError
from experiments.store.credentials import redact
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


def export_warehouse(
    experiment: str,
    to: Annotated[
        str, typer.Option("--to", help="A directory (Parquet files) or a postgresql:// URL.")
    ],
    phase: Annotated[str | None, typer.Option(help="Default: every phase.")] = None,
    schema: Annotated[str | None, typer.Option(help="PostgreSQL schema (created).")] = None,
    exposures_table: str = "exposures",
    events_table: str = "events",
    store: StoreOpt = None,
) -> None:
    """Write the experiment's exposures and events where a SQL source can read them."""
    from experiments.names import check_name
    from experiments.warehouse.export import export

    try:
        for name in (schema, exposures_table, events_table):
            if name is not None:
                check_name(name, "table or schema name")
    except ValueError as exc:
        fail(str(exc))
    with store_for(store) as st:
        record = st.get_experiment(experiment)
        exposures, events = export(st, record, to, phase=phase, schema=schema,
                                   tables=(exposures_table, events_table))  # fmt: skip
    out.print(f"{exposures} exposures and {events} events of {experiment} written to"
              f" {redact(to)}", markup=False)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(sql)
    app.command("export-warehouse")(export_warehouse)
