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

from experiments.cli_common import Output, OutputOpt, StoreOpt, fail, out, print_data, store_for
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
    phase: Annotated[str | None, typer.Option(help="Default: the current phase.")] = None,
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
                       at=time.time(), by="decide")  # fmt: skip
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
    experiment: str,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="report.html, or .json for the data.")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Write the experiment's report: a self-contained HTML page (or its JSON)."""
    from experiments.report import build_report
    from experiments.report_html import render_html

    with store_for(store) as st:
        report = build_report(st, experiment)
    path = out_file or Path(f"{experiment}-report.html")
    if path.suffix == ".json":
        path.write_text(json.dumps(report, indent=1, allow_nan=False))
    else:
        path.write_text(render_html(report))
    out.print(f"{experiment}: {report['decision']['status']}; report written to {path}")


def register(app: typer.Typer) -> None:
    app.command("decide")(decide_command)
    app.command("report")(report_command)
