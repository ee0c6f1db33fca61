"""abmesh's own exposures and events written to a warehouse in the layout a SQL source reads
(experiments.spec_source defaults), so a team can move from the built-in store to its
warehouse without changing the spec's analysis: Parquet files (for DuckDB) or PostgreSQL
tables (by COPY).

- exposures: experiment, phase, unit, variant, timestamp (unix s), generation, and one column
  per declared segment holding the unit's value (NULL if none);
- events: experiment, phase, event_id, unit, metric, value, timestamp, received_at.

Pages are streamed from the store, never held whole.  Running it twice leaves the same rows:
Parquet files are written beside and renamed over the old ones; in PostgreSQL the
experiment's rows (of the phase, if one is given) are deleted and copied in one transaction."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from experiments.errors import InvalidInputError, SourceError
from experiments.store import ExperimentRecord, Store

PAGE = 50_000
EXPOSURES = ("experiment", "phase", "unit", "variant", "timestamp", "generation")
EVENTS = ("experiment", "phase", "event_id", "unit", "metric", "value", "timestamp", "received_at")
# Column -> its SQL type (every other column is TEXT); the Parquet types follow from it.
_TYPES = {
    "generation": "BIGINT",
    "value": "DOUBLE PRECISION",
    "timestamp": "DOUBLE PRECISION",
    "received_at": "DOUBLE PRECISION",
}


def exposure_pages(
    store: Store, record: ExperimentRecord, phases: Sequence[str]
) -> Iterator[list[tuple[Any, ...]]]:
    attributes = [s.name for s in record.spec.segments]
    for phase in phases:
        after = ""
        while page := store.raw_exposures(record.name, phase, after=after, limit=PAGE):
            yield [
                (record.name, phase, x["unit"], x["variant"], x["at"], x["generation"],
                 *(x["segments"].get(a) for a in attributes))
                for x in page
            ]  # fmt: skip
            after = page[-1]["unit"]


def event_pages(
    store: Store, record: ExperimentRecord, phases: Sequence[str]
) -> Iterator[list[tuple[Any, ...]]]:
    since, after, wanted = 0.0, None, set(phases)
    while page := store.raw_events(record.name, since=since, after=after, limit=PAGE):
        yield [
            (record.name, e["phase"], e["event_id"], e["unit"], e["metric"], e["value"],
             e["timestamp"], e["received_at"])
            for e in page
            if e["phase"] in wanted
        ]  # fmt: skip
        since, after = page[-1]["received_at"], page[-1]["event_id"]


def export(
    store: Store,
    record: ExperimentRecord,
    target: str,
    *,
    phase: str | None = None,
    schema: str | None = None,
    tables: tuple[str, str] = ("exposures", "events"),
) -> tuple[int, int]:
    """Write the experiment's exposures and events (of `phase`, or of every phase) to
    `target`: a directory (`parquet:///dir` or a path) or a `postgresql://` URL; returns
    how many exposures and events were written."""
    phases = [phase] if phase else [p.name for p in record.status.phases]
    if phase and record.status.phase_record(phase) is None:
        raise InvalidInputError(f"experiment {record.name!r} has no phase {phase!r}")
    columns = (EXPOSURES + tuple(s.name for s in record.spec.segments), EVENTS)
    pages = (exposure_pages(store, record, phases), event_pages(store, record, phases))
    scheme = urlsplit(target).scheme
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        from experiments.warehouse.export_postgres import copy_into

        return copy_into(target, record.name, phase, schema, tables, columns, pages)
    if scheme not in ("", "parquet", "file"):
        raise InvalidInputError(
            f"--to {target[:80]!r}: a directory (or parquet:///dir) or a postgresql:// URL"
        )
    directory = Path(unquote(urlsplit(target).path) if scheme else target)
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        _parquet(directory / f"{name}.parquet", cols, rows)
        for name, cols, rows in zip(tables, columns, pages, strict=True)
    ]
    return written[0], written[1]


def _parquet(path: Path, columns: Sequence[str], pages: Iterator[list[tuple[Any, ...]]]) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    arrow = {"BIGINT": pa.int64(), "DOUBLE PRECISION": pa.float64(), "TEXT": pa.string()}
    schema = pa.schema([(c, arrow[column_type(c)]) for c in columns])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for page in pages:
                if page:
                    writer.write_table(
                        pa.Table.from_pylist(
                            [dict(zip(columns, row, strict=True)) for row in page], schema=schema
                        )
                    )
                    count += len(page)  # fmt: skip
        tmp.replace(path)
    except OSError as exc:
        raise SourceError(f"cannot write {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return count


def column_type(column: str) -> str:
    return _TYPES.get(column, "TEXT")
