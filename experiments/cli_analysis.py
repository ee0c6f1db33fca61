"""`abmesh decide`: one look at an experiment's current statistics, as the promotion loop takes
it, with the reasons and the numbers.  `--state FILE` keeps the always-valid state (running
minimum p, running interval, group-sequential looks) between calls, as the controller does.
The look is recorded in the experiment's history (experiments.looks_log, by "decide")."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from experiments.cli_common import (
    Output,
    OutputOpt,
    PhaseOpt,
    StoreOpt,
    err,
    fail,
    out,
    print_data,
    store_for,
)
from experiments.looks_log import look_of, record_look
from experiments.reporting import analysed_spec, phase_report

if TYPE_CHECKING:
    from analysis import DecisionState, Threshold

# analysis (scipy, statsmodels) is imported by the command that uses it, not at start-up:
# it would add about a second to every other `abmesh` command.

GuardrailOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--guardrail",
        "-g",
        help="An operational reading NAME=VALUE:LIMIT (must not exceed LIMIT), or "
        "NAME=VALUE:LIMIT:min (must not fall below); VALUE 'none' for no data. Repeatable.",
    ),
]


def parse_guardrail(text: str) -> Threshold:
    """`p99_latency_ms=162:150` → Threshold("p99_latency_ms", 162, 150)."""
    from analysis import Threshold

    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not name or len(parts) not in (2, 3) or parts[2:] not in ([], ["min"], ["max"]):
        raise ValueError(f"guardrail {text!r} is not NAME=VALUE:LIMIT[:min|max]")
    try:
        value = None if parts[0] == "none" else float(parts[0])
        limit = float(parts[1])
    except ValueError:
        raise ValueError(f"guardrail {text!r}: VALUE and LIMIT must be numbers") from None
    if not math.isfinite(limit) or (value is not None and not math.isfinite(value)):
        raise ValueError(f"guardrail {text!r}: VALUE and LIMIT must be finite")
    return Threshold(name, value, limit, bound="min" if parts[2:] == ["min"] else "max")


def _load_state(path: Path | None) -> DecisionState | None:
    from analysis import DecisionState

    if path is None or not path.exists():
        return None
    try:
        return DecisionState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError) as exc:
        fail(f"--state {path}: not a decision state ({exc})")


def decide_command(
    experiment: str,
    guardrail: GuardrailOpt = None,
    state: Annotated[
        Path | None, typer.Option(help="JSON file keeping the state between looks.")
    ] = None,
    phase: PhaseOpt = None,
    output: OutputOpt = Output.TEXT,
    store: StoreOpt = None,
) -> None:
    """Decide: continue, winner, winner_pending_guardrails, harm, no_difference or invalid,
    with the reasons."""
    from analysis import ExperimentStats, decide
    from analysis.decision import fmt

    try:
        thresholds = [parse_guardrail(g) for g in guardrail or []]
    except ValueError as exc:
        fail(str(exc))
    previous = _load_state(state)
    with store_for(store) as st:
        record = st.get_experiment(experiment)
        report = phase_report(st, record, phase)
        spec = analysed_spec(record, report["phase"])  # SRM against the phase's planned split
        decision = decide(spec, ExperimentStats.from_report(report["arms"]), thresholds, previous)
        look = look_of(decision, report["arms"], record=record, phase=report["phase"],
                       at=time.time(), by="decide", sources=report.get("sources"))  # fmt: skip
        record_look(st, record.uid, look)
    if state is not None:
        tmp = state.with_suffix(state.suffix + ".tmp")
        tmp.write_text(json.dumps(decision.state.to_dict()))
        tmp.replace(state)
    if output is not Output.TEXT:
        print_data(decision.to_dict(), output)
        return
    out.print(decision.summary(), markup=False)
    table = Table("METRIC", "VARIANT", "VERDICT", "EFFECT", "LOW", "HIGH", "P", box=None)
    for c in decision.comparisons:
        table.add_row(
            c.metric,
            c.variant,
            c.verdict,
            *(fmt(x) for x in (c.estimate, c.ci_low, c.ci_high, c.pvalue)),
        )
    if decision.comparisons:
        out.print(table)


def report_command(
    experiment: Annotated[
        str | None, typer.Argument(help="The experiment; or --all for every one.")
    ] = None,
    every: Annotated[
        bool,
        typer.Option(
            "--all", help="Every experiment: its report and an index.html linking them, in -o DIR."
        ),
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="report.html, or .json for the data; with --all a directory (default: site).",
        ),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Write the experiment's report: a self-contained HTML page (or its JSON); with --all,
    every experiment's report and an index of them into a directory."""
    from experiments.report import build_report
    from experiments.report_html import render_html

    if every and experiment is not None:
        fail(f"give an experiment or --all, not both (got {experiment!r} and --all)")
    if every:
        _report_all(out_file or Path("site"), store)
        return
    if experiment is None:
        fail("name an experiment (abmesh report NAME), or --all for every one")
    with store_for(store) as st:
        report = build_report(st, experiment)
    path = out_file or Path(f"{experiment}-report.html")
    if path.suffix == ".json":
        path.write_text(json.dumps(report, indent=1, allow_nan=False))
    else:
        path.write_text(render_html(report))
    out.print(f"{experiment}: {report['decision']['status']}; report written to {path}")


def _report_all(directory: Path, store: str | None) -> None:
    from experiments.report_site import write_site

    if directory.exists() and not directory.is_dir():
        fail(f"-o {directory}: not a directory (--all writes index.html and a report per"
             " experiment into a directory)")  # fmt: skip
    if not directory.exists() and directory.suffix in (".html", ".json"):
        fail(f"-o {directory}: --all writes a directory, not one {directory.suffix} file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with store_for(store) as st:
            rows = write_site(st, directory)
    except OSError as exc:
        fail(f"-o {directory}: cannot write the site: {exc}")
    failed = [row for row in rows if row["error"]]
    out.print(f"{len(rows) - len(failed)} of {len(rows)} experiments' reports written;"
              f" index: {directory / 'index.html'}", markup=False)  # fmt: skip
    for row in failed:
        err.print(f"warning: {row['experiment']}: {row['error']}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("decide")(decide_command)
    app.command("report")(report_command)
