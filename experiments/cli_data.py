"""`abmesh` commands for data: importing events, statistics, snapshots, exports, phases."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from assignment import collector
from experiments.cli_common import (
    Output,
    OutputOpt,
    PhaseOpt,
    StoreOpt,
    fail,
    out,
    print_data,
    store_for,
)
from experiments.folding import FoldPlan
from experiments.reporting import event_row, phase_report, stat_rows, take_snapshot
from experiments.store import Store

events_app = typer.Typer(help="Business-metric events.", no_args_is_help=True)
IMPORT_BATCH = 5000
csv.field_size_limit(1 << 20)  # a cell over 1 MiB is an error, not a memory hog
SHOWN_ERRORS = 10


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


def _rows(path: Path, fmt: FileFormat) -> Iterator[Any]:
    """The file's events as mappings (CSV cells stay strings until converted)."""
    if fmt is FileFormat.PARQUET:
        import pandas as pd

        frame = pd.read_parquet(path)
        for column in frame.columns:  # datetimes become unix seconds (naive ones taken as UTC)
            if pd.api.types.is_datetime64_any_dtype(frame[column]):
                times = frame[column]
                if times.dt.tz is None:
                    times = times.dt.tz_localize("UTC")
                frame[column] = times.map(lambda t: None if pd.isna(t) else t.timestamp())
        # A null cell is a value not given, like an empty CSV cell: a column holds every row.
        for record in frame.astype(object).where(frame.notna(), None).to_dict(orient="records"):
            yield {k: v for k, v in record.items() if v is not None}
    elif fmt is FileFormat.JSONL:
        with path.open(encoding="utf-8-sig") as handle:  # -sig: tolerate a byte-order mark
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {"__error__": f"line {number}: not JSON ({exc.msg})"}
    else:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            yield from (_from_csv(row) for row in csv.DictReader(handle))


def _from_csv(row: dict[str | None, Any]) -> dict[str, Any]:
    if None in row:  # DictReader's key for cells beyond the header
        return {"__error__": "the row has more cells than the header has columns"}
    item: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
    for key in ("value", "timestamp"):
        if key in item:
            # An ISO time stays text; anything else unreadable is rejected with its field named.
            with contextlib.suppress(ValueError):
                item[key] = float(item[key])
    if "pre_period" in item:
        flag = item["pre_period"].strip().lower()
        item["pre_period"] = {"true": True, "1": True, "false": False, "0": False}.get(flag, flag)
    return item


@events_app.command("import")
def import_events(
    file: Annotated[Path, typer.Argument(help="CSV (with a header), JSONL or Parquet file.")],
    fmt: Annotated[FileFormat | None, typer.Option("--format", help="Default: by suffix.")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="For rows that name no experiment.")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Backfill events from a file, idempotently (re-importing counts nothing twice).
    Rows that are not valid are reported with their row number and skipped; exit 1 if any."""
    fmt = fmt or _format_of(file)
    if not file.is_file():
        fail(f"{file} is not a readable file")
    with store_for(store) as st:
        experiments = {r.name: r for r in st.list_experiments()}
        plans = {name: FoldPlan.from_spec(r.spec) for name, r in experiments.items()}
        accepted = duplicates = rows = 0
        errors: list[str] = []
        try:
            batch: list[Any] = []
            for row in _rows(file, fmt):
                if experiment is not None and isinstance(row, dict):
                    row.setdefault("experiment", experiment)
                batch.append(row)
                if len(batch) == IMPORT_BATCH:
                    a, d = _import_batch(st, batch, rows, experiments, plans, errors)
                    accepted, duplicates, rows = accepted + a, duplicates + d, rows + len(batch)
                    batch = []
            a, d = _import_batch(st, batch, rows, experiments, plans, errors)
            accepted, duplicates, rows = accepted + a, duplicates + d, rows + len(batch)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            fail(f"cannot read {file} after row {rows}: {exc}")
    out.print(
        f"{rows} rows: {accepted} accepted, {duplicates} duplicates, {len(errors)} rejected",
        markup=False,
    )
    for line in errors[:SHOWN_ERRORS]:
        out.print(f"  {line}", markup=False)
    if len(errors) > SHOWN_ERRORS:
        out.print(f"  ... and {len(errors) - SHOWN_ERRORS} more", markup=False)
    if errors:
        raise typer.Exit(1)


def _import_batch(
    st: Store, batch: list[Any], offset: int, experiments: Any, plans: Any, errors: list[str]
) -> tuple[int, int]:
    def unreadable(row: Any) -> bool:
        return isinstance(row, dict) and "__error__" in row

    items = [0 if unreadable(row) else row for row in batch]  # 0: rejected as not an object
    parsed = collector.parse_events(items, experiments, plans)
    outcome = collector.ingest(st, parsed, experiments, plans)
    for index, rejection in outcome.rejected:
        detail = batch[index]["__error__"] if unreadable(batch[index]) else None
        message = detail or str(rejection).split(".", 1)[1]
        errors.append(f"row {offset + index + 1}: {message}")
    return outcome.accepted, outcome.duplicates


def _format_of(path: Path) -> FileFormat:
    suffix = path.suffix.lower().lstrip(".")
    for fmt in FileFormat:
        if suffix == fmt.value or (fmt is FileFormat.JSONL and suffix in ("json", "ndjson")):
            return fmt
    fail(f"cannot tell the format of {path.name}: use --format csv|jsonl|parquet")


def stats(
    experiment: str,
    phase: PhaseOpt = None,
    output: OutputOpt = Output.TEXT,
    store: StoreOpt = None,
) -> None:
    """Per-arm statistics of an experiment's phase (from its SQL source, if it names one)."""
    with store_for(store) as st:
        report = phase_report(st, st.get_experiment(experiment), phase)
    if output is not Output.TEXT:
        print_data(report, output)
        return
    rows = stat_rows(experiment, report["phase"], report["arms"])
    table = Table(
        "VARIANT",
        "METRIC",
        "UNITS",
        "SUM",
        "MEAN",
        box=None,
        title=f"{experiment}, phase {report['phase']}",
    )
    for row in rows:
        if row["sum"] is None:
            continue
        mean = row["sum"] / row["n"] if row["n"] else float("nan")
        table.add_row(
            row["variant"], row["metric"], str(row["n"]), f"{row['sum']:.6g}", f"{mean:.6g}"
        )
    out.print(table if rows else f"{experiment}: no exposures in phase {report['phase']}")


def snapshot(experiment: str, store: StoreOpt = None) -> None:
    """Keep the current statistics of an experiment, so reports can draw them over time."""
    with store_for(store) as st:
        snap = take_snapshot(st, st.get_experiment(experiment))
    when = datetime.fromtimestamp(snap.at, UTC).isoformat(timespec="seconds")
    units = sum(arm["exposures"] for arm in snap.stats.values())
    out.print(f"snapshot of {experiment}, phase {snap.phase}, at {when}: {units} exposed units")


def phase(experiment: str, new_phase: str, store: StoreOpt = None) -> None:
    """Start a new analysis phase: exposures and statistics start from zero in it."""
    from controlplane.lifecycle import start_phase

    with store_for(store) as st:
        record = start_phase(st, experiment, new_phase)
    out.print(f"experiment {experiment} is in phase {record.phase}")


class What(StrEnum):
    STATS = "stats"
    SNAPSHOTS = "snapshots"
    EVENTS = "events"


def export(
    experiment: str,
    what: Annotated[What, typer.Option(help="Per-arm stats, snapshots or raw events.")] = (
        What.STATS
    ),
    fmt: Annotated[FileFormat, typer.Option("--format")] = FileFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: standard output).")
    ] = None,
    phase: PhaseOpt = None,
    store: StoreOpt = None,
) -> None:
    """Export per-arm statistics, snapshots or raw events as a table for pandas."""
    import pandas as pd

    with store_for(store) as st:
        record = st.get_experiment(experiment)
        if what is What.STATS:
            report = phase_report(st, record, phase)
            rows = stat_rows(experiment, report["phase"], report["arms"])
        elif what is What.SNAPSHOTS:
            rows = [
                row
                for s in st.snapshots(experiment, phase)
                for row in stat_rows(experiment, s.phase, s.stats, at=s.at)
            ]
        else:
            rows = [{"experiment": experiment, **event_row(e)} for e in _all_events(st, experiment)]
    frame = pd.DataFrame(rows)
    if fmt is FileFormat.PARQUET:
        if output is None:
            fail("Parquet is binary: give a file with -o")
        frame.to_parquet(output, index=False)
    else:
        text = (
            frame.to_csv(index=False)
            if fmt is FileFormat.CSV
            else frame.to_json(orient="records", lines=True)
        )
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
    if output is not None:
        out.print(f"{len(frame)} rows written to {output}", markup=False)


def _all_events(st: Store, experiment: str, page: int = 50_000) -> Iterator[dict[str, Any]]:
    since, after = 0.0, None
    while True:
        events = st.raw_events(experiment, since=since, after=after, limit=page)
        yield from events
        if len(events) < page:
            return
        since, after = events[-1]["received_at"], events[-1]["event_id"]


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
    for command in (stats, snapshot, phase, export):
        app.command()(command)
