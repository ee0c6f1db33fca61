"""`abmesh report --all -o DIR`: every experiment's report and the index of them, written into
one directory by one run, so every link of the index resolves to a file of the same run.

Files: `index.html` and `index.json` (the rows, experiments.report_index), and per experiment
`NAME.html` and `NAME.json` (experiments.report), except that an experiment named `index` gets
`_index.html` and `_index.json` (no experiment name starts with `_`).  Each file is written to
a temp file and renamed over the old one, and the index last: a run killed half-way leaves the
previous index whole, never half a page.  An experiment whose report cannot be built is listed
with the error and gets no files; an unreachable store stops the run (StoreError)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from controlplane.routing.routers import write_atomically
from experiments.errors import StoreError
from experiments.report_index import error_text, index_rows
from experiments.report_index_html import render_index
from experiments.store import Store


def file_stem(name: str) -> str:
    return "_index" if name == "index" else name


def write_site(store: Store, directory: Path) -> list[dict[str, Any]]:
    """Write the site into `directory` (which must exist); returns the index's rows."""
    from experiments.report import build_report
    from experiments.report_html import render_html

    rows = index_rows(store)
    for row in rows:
        if row["error"]:
            continue  # its statistics are unreadable: its report would fail on them too
        try:
            report = build_report(store, row["experiment"])
            data, page = json.dumps(report, indent=1, allow_nan=False), render_html(report)
        except StoreError:
            raise
        except Exception as exc:  # this experiment's report, not the site: listed with it
            row["error"] = "report: " + error_text(exc)
            continue
        stem = file_stem(row["experiment"])
        write_atomically(directory / f"{stem}.json", data)
        write_atomically(directory / f"{stem}.html", page)
        row["links"] = {"html": f"{stem}.html", "json": f"{stem}.json"}
    built_at = time.time()
    index = {"built_at": built_at, "experiments": rows}
    write_atomically(directory / "index.json", json.dumps(index, indent=1, allow_nan=False))
    write_atomically(directory / "index.html", render_index(rows, built_at=built_at))
    return rows
