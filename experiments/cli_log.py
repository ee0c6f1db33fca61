"""`abmesh` commands for the event log: folding it apart from the service, and archiving its raw
events to Parquet before they leave the store."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from experiments.cli_common import StoreOpt, out, store_for
from experiments.reporting import event_row
from experiments.store import Store

ARCHIVE_PAGE = 50_000


def fold(
    store: StoreOpt = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between looks at the logs when idle.", min=0.01)
    ] = 0.2,
    once: Annotated[bool, typer.Option("--once", help="Fold what is there, then exit.")] = False,
) -> None:
    """Fold the event logs into statistics, every experiment's, until stopped (Ctrl-C, SIGTERM).

    The service folds what it appends itself unless started with ABMESH_FOLD=0: then run this
    beside it, as many as you like (each partition of a log is folded by one at a time)."""
    from experiments.folder import fold_logs

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with store_for(store) as st:
        total = fold_logs(st, stop, interval=interval, once=once)
    out.print(f"{total} log entries folded", markup=False)


def archive(
    directory: Annotated[Path, typer.Argument(help="Where the Parquet files go.")],
    older_than: Annotated[
        float, typer.Option(help="Archive events received more than this many hours ago.", min=0)
    ] = 1.0,
    store: StoreOpt = None,
) -> None:
    """Write folded raw events older than `--older-than` to Parquet, then drop them from the store.

    One file per experiment and run, `DIR/experiment=NAME/events-<until>.parquet` (the layout
    DuckDB and pandas read as one table); run it on a schedule shorter than
    ABMESH_EVENT_RETENTION_DAYS so no event leaves the store unarchived.  Events not folded yet
    stay, for a later run."""
    import pandas as pd

    if directory.exists() and not directory.is_dir():
        out.print(f"error: {directory} is not a directory", markup=False)
        raise typer.Exit(2)
    cut = time.time() - older_than * 3600
    with store_for(store) as st:
        for record in st.list_experiments():  # everything before the cut folded, if it can be
            state = st.settle(record.name)
            if state.oldest_pending is not None:
                cut = min(cut, state.oldest_pending)
        written = 0
        for record in st.list_experiments():
            rows = list(_received_before(st, record.name, cut))
            if not rows:
                continue
            folder = directory / f"experiment={record.name}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"events-{cut:.3f}.parquet"
            pd.DataFrame([event_row(r) for r in rows]).to_parquet(path, index=False)
            written += len(rows)
            out.print(f"{len(rows)} events of {record.name} written to {path}", markup=False)
        purged = st.purge_events(cut)
    out.print(f"{written} events archived, {purged} dropped from the store", markup=False)


def _received_before(st: Store, experiment: str, cut: float) -> Any:
    since, after = 0.0, None
    while True:
        page = st.raw_events(experiment, since=since, after=after, limit=ARCHIVE_PAGE)
        for event in page:
            if event["received_at"] >= cut:
                return
            yield event
        if len(page) < ARCHIVE_PAGE:
            return
        since, after = page[-1]["received_at"], page[-1]["event_id"]


def register(app: typer.Typer, events_app: typer.Typer) -> None:
    app.command()(fold)
    events_app.command()(archive)
