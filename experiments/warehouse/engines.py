"""Running the generated query on an engine: DuckDB (embedded, files or a database file),
PostgreSQL (psycopg), ClickHouse embedded (chdb) or as a server (clickhouse-connect).  Each
answers rows of plain values, or raises `SourceError` naming the source and what failed; a
query that runs past the source's timeout is cancelled, so a look never hangs on a warehouse
that does not answer."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from experiments.errors import SourceError
from experiments.spec_source import ENV_VAR, SCHEMES
from experiments.store.credentials import redact

Rows = list[Sequence[Any]]
# The SQL dialect each engine speaks (experiments.warehouse.query).
DIALECT = {
    "duckdb": "duckdb",
    "postgres": "postgres",
    "chdb": "clickhouse",
    "clickhouse": "clickhouse",
}
_CHDB_LOCK = threading.Lock()  # chdb holds one session per process: its queries take turns
_chdb: list[tuple[str, Any]] = []  # the open session and its path


def resolve(connection: str) -> str:
    """The URL a connection names: itself, or the environment variable's value."""
    if not ENV_VAR.fullmatch(connection):
        return connection
    url = os.environ.get(connection)
    if not url:
        raise SourceError(f"SQL source: environment variable {connection} is not set")
    if urlsplit(url).scheme not in SCHEMES:
        raise SourceError(
            f"SQL source: ${connection} is not a URL with one of the schemes {sorted(SCHEMES)}"
        )
    return url


def engine_of(url: str) -> str:
    return SCHEMES[urlsplit(url).scheme]


def run(url: str, sql: str, timeout: float) -> Rows:
    runner = _RUNNERS[engine_of(url)]
    try:
        return runner(url, sql, timeout)
    except SourceError:
        raise
    except Exception as exc:  # every driver has its own error tree; all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(redact(f"SQL source {url}: {first}", urlsplit(url).password)) from exc


def _duckdb(url: str, sql: str, timeout: float) -> Rows:
    import duckdb

    path = unquote(urlsplit(url).path) or ":memory:"
    if path.startswith("/:memory:"):
        path = ":memory:"
    # Read-only when it is a file: a look never writes the warehouse, and several readers
    # (the controller, `decide`) may open it at once.
    con = duckdb.connect(path, read_only=path != ":memory:")
    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    except duckdb.InterruptException:
        raise SourceError(f"SQL source {url}: the query ran past {timeout:g} s") from None
    finally:
        timer.cancel()
        con.close()


def _postgres(url: str, sql: str, timeout: float) -> Rows:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    # connect_timeout: a server that does not answer (a black hole) is not waited on forever.
    with psycopg.connect(dsn, connect_timeout=max(int(timeout), 1), autocommit=True) as con:
        con.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        # A look only reads: a source's query that would write (a data-modifying CTE) fails.
        con.execute("SET default_transaction_read_only = on")
        try:
            return [tuple(r) for r in con.execute(sql).fetchall()]
        except psycopg.errors.QueryCanceled:
            raise SourceError(
                f"SQL source {redact(url)}: the query ran past {timeout:g} s"
            ) from None


def _chdb_run(url: str, sql: str, timeout: float) -> Rows:
    from chdb import session

    path = unquote(urlsplit(url).path)
    with _CHDB_LOCK:
        if not _chdb or _chdb[0][0] != path:
            if _chdb:
                _chdb.pop()[1].close()
            opened = session.Session(path or None)  # type: ignore[no-untyped-call]
            _chdb.append((path, opened))
        _chdb[0][1].query(f"SET max_execution_time = {timeout:g}")
        table = _chdb[0][1].query(sql, "ArrowTable")
    return [tuple(row.values()) for row in table.to_pylist()]


def _clickhouse(url: str, sql: str, timeout: float) -> Rows:
    import clickhouse_connect

    parts = urlsplit(url)
    # The URL's query holds ClickHouse settings (`?max_threads=4`).
    settings: dict[str, Any] = dict(parse_qsl(parts.query))
    client = clickhouse_connect.get_client(
        host=parts.hostname or "localhost",
        port=parts.port or 8123,
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or "default",
        secure=parts.scheme == "clickhouse+https",
        connect_timeout=timeout,
        send_receive_timeout=timeout,
    )
    try:
        result = client.query(sql, settings={**settings, "max_execution_time": timeout})
        return [tuple(r) for r in result.result_rows]
    finally:
        client.close()


_RUNNERS: dict[str, Callable[[str, str, float], Rows]] = {
    "duckdb": _duckdb,
    "postgres": _postgres,
    "chdb": _chdb_run,
    "clickhouse": _clickhouse,
}
