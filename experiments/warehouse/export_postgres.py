"""The PostgreSQL side of the export (experiments.warehouse.export): the tables created if
missing (a segment column added if the table lacks it), the experiment's rows replaced by COPY,
all in one transaction, so a reader sees the old rows or the new ones and a rerun never
duplicates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from experiments.errors import SourceError
from experiments.store.credentials import redact
from experiments.warehouse.export import column_type


def copy_into(
    url: str,
    experiment: str,
    phase: str | None,
    schema: str | None,
    tables: tuple[str, str],
    columns: tuple[Sequence[str], Sequence[str]],
    pages: tuple[Iterator[list[tuple[Any, ...]]], Iterator[list[tuple[Any, ...]]]],
) -> tuple[int, int]:
    import psycopg
    from psycopg import sql

    def table(name: str) -> sql.Composable:
        return sql.Identifier(schema, name) if schema else sql.Identifier(name)

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    counts = []
    try:
        with psycopg.connect(dsn, connect_timeout=30) as con, con.transaction():
            if schema:
                con.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
            for name, cols, rows in zip(tables, columns, pages, strict=True):
                spec = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(column_type(c)))
                    for c in cols
                )
                con.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table(name), spec))
                for c in cols:
                    con.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        table(name), sql.Identifier(c), sql.SQL(column_type(c))))  # fmt: skip
                where = sql.SQL("experiment = %s") + (
                    sql.SQL(" AND phase = %s") if phase else sql.SQL("")
                )
                con.execute(sql.SQL("DELETE FROM {} WHERE ").format(table(name)) + where,
                            (experiment, phase) if phase else (experiment,))  # fmt: skip
                copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    table(name), sql.SQL(", ").join(map(sql.Identifier, cols)))  # fmt: skip
                count = 0
                with con.cursor().copy(copy) as out:
                    for page in rows:
                        for row in page:
                            out.write_row(row)
                        count += len(page)
                counts.append(count)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(redact(f"export to {url}: {first}", urlsplit(url).password)) from exc
    return counts[0], counts[1]
