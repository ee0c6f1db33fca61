"""The `abmesh` command line.

User mistakes (bad spec, unknown experiment, unreachable store, bad unit) print one line on
stderr and exit 1; usage errors exit 2 (typer's convention).  No tracebacks for either.
"""

from __future__ import annotations

import logging.config
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from assignment import assign_many
from controlplane import cli as cli_rollout
from controlplane.lifecycle import Action, apply_spec, change_state
from experiments import cli_analysis, cli_data, cli_log, cli_warehouse
from experiments.cli_common import (
    LogFormatOpt,
    LogLevelOpt,
    Output,
    OutputOpt,
    StoreOpt,
    fail,
    out,
    print_data,
    store_for,
)
from experiments.errors import AbmeshError
from experiments.loader import load_spec
from experiments.logs import LogLevel, logging_config, resolve_format
from experiments.reporting import position, record_data
from experiments.store import DEFAULT_PHASE, open_store

app = typer.Typer(
    help="abmesh: sticky A/B assignment, sequential analysis and safe rollouts of ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
get_app = typer.Typer(help="Show stored objects.", no_args_is_help=True)
app.add_typer(get_app, name="get")


@app.command()
def validate(
    file: Annotated[Path, typer.Option("--file", "-f", help="Spec file (YAML or JSON).")],
) -> None:
    """Check a spec file without storing it."""
    try:
        spec = load_spec(file)
    except AbmeshError as exc:
        fail(str(exc))
    out.print(f"{spec.name}: valid ({len(spec.variants)} variants, hash {spec.hash.value})")
    for warning in spec.analysis.warnings():
        out.print(f"warning: {warning}")


@app.command()
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="Spec file (YAML or JSON).")],
    store: StoreOpt = None,
) -> None:
    """Create an experiment, or store its changed spec as a new revision."""
    try:
        spec = load_spec(file)
    except AbmeshError as exc:
        fail(str(exc))
    with store_for(store) as st:
        result = apply_spec(st, spec)
    record = result.record
    verb = ("created" if record.revision == 1 else "configured") if result.changed else "unchanged"
    phase = f", phase {record.phase}" if record.phase != DEFAULT_PHASE else ""
    out.print(f"experiment {record.name} {verb} (generation {record.generation}{phase})")


@get_app.command("experiments")
def get_experiments(store: StoreOpt = None, output: OutputOpt = Output.TEXT) -> None:
    """List experiments: state, outcome, analysis phase, rollout position and weights."""
    with store_for(store) as st:
        records = st.list_experiments()
    if output is not Output.TEXT:
        print_data([record_data(r, defaults=False) for r in records], output)
        return
    table = Table("NAME", "STATE", "OUTCOME", "PHASE", "ROLLOUT", "WEIGHTS", "GEN", box=None)
    for r in records:
        split = " / ".join(f"{k}={w:g}%" for k, w in r.served_weights.items())
        where = position(r)
        rollout = f"{where['kind']} {where['phase']}/{where['of']}" if where else "-"
        outcome = r.status.outcome.value if r.status.outcome else "-"
        table.add_row(r.name, r.state.value, outcome, r.phase, rollout, split, str(r.generation))
    out.print(table if records else "no experiments")


@get_app.command("experiment")
def get_experiment(
    name: str,
    revision: Annotated[int | None, typer.Option(help="An older revision.", min=1)] = None,
    store: StoreOpt = None,
    output: OutputOpt = Output.YAML,
) -> None:
    """Show one experiment's spec and status."""
    with store_for(store) as st:
        record = st.get_experiment(name, revision)
    print_data(
        record_data(record, defaults=False), Output.JSON if output is Output.JSON else Output.YAML
    )


@get_app.command("history")
def get_history(name: str, store: StoreOpt = None) -> None:
    """List an experiment's revisions."""
    with store_for(store) as st:
        records = st.experiment_history(name)
    for r in records:
        split = " / ".join(f"{v.key}={v.weight:g}%" for v in r.spec.variants)
        out.print(f"generation {r.revision}  {r.updated_at:.0f}  {split}", markup=False)


@app.command()
def delete(
    name: str,
    keep_history: Annotated[
        bool, typer.Option(help="Keep the audit log, readable with `abmesh history --uid`.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Even with a rollout in progress (its routes stay as they are).")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Delete an experiment and everything kept for it (revisions, sticky records, statistics,
    rollout state); one created again under the name starts from nothing."""
    from controlplane.lifecycle import delete as delete_experiment

    with store_for(store) as st:
        uid = delete_experiment(st, name, keep_history=keep_history, force=force)
    kept = f"; its history stays readable: abmesh history --uid {uid}" if keep_history else ""
    out.print(f"experiment {name} (uid {uid}) deleted{kept}")


@app.command()
def start(name: str, store: StoreOpt = None) -> None:
    """Start an experiment (draft or paused → running); its rollout begins at the next tick."""
    _change(name, Action.START, store)


@app.command()
def stop(name: str, store: StoreOpt = None) -> None:
    """Stop an experiment for good (→ concluded, outcome stopped); a rollout is rolled back."""
    _change(name, Action.STOP, store)


def _change(name: str, action: Action, store: str | None) -> None:
    with store_for(store) as st:
        record = change_state(st, name, action)
    out.print(f"experiment {name} is {record.state.value}")


@app.command("assign")
def assign_cmd(
    experiment: str,
    units: Annotated[list[str], typer.Argument(help="One or more unit ids.")],
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="A request header, NAME=VALUE.")
    ] = None,
    store: StoreOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Show which variant each unit gets, and the header to route it on.

    Like the service, this records sticky assignments for specs with `sticky: true`."""
    headers = {}
    for item in header or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--header {item!r} must look like NAME=VALUE")
        headers[name] = value
    with store_for(store) as st:
        spec = st.get_experiment(experiment).effective_spec
        results = assign_many(spec, units, headers=headers, sticky=st)
    if output is not Output.TEXT:
        rows = [
            {
                "unit": u,
                "variant": a.variant,
                "in_experiment": a.in_experiment,
                "header": {"name": a.header_name, "value": a.header_value},
                "reason": a.reason.value,
            }
            for u, a in zip(units, results, strict=True)
        ]
        print_data(rows, output)
        return
    for unit, a in zip(units, results, strict=True):
        where = "in experiment" if a.in_experiment else "not in experiment"
        out.print(
            f"{unit}: {a.variant} ({where}, {a.reason.value})  {a.header_name}: {a.header_value}",
            markup=False,
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    store: StoreOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Open every route without a token, for local use only (or ABMESH_INSECURE=1).",
        ),
    ] = False,
) -> None:
    """Run the assignment service (HTTP API, ext_authz check, admin API, /metrics).

    Reading, writing events and the admin API need the tokens of their roles
    (ABMESH_READER_TOKEN, ABMESH_WRITER_TOKEN, ABMESH_ADMIN_TOKEN, or *_FILE)."""
    import uvicorn

    from assignment.config import Settings

    fmt = resolve_format(log_format, sys.stderr)
    log_config = logging_config(log_level, fmt)
    logging.config.dictConfig(log_config)  # this process; uvicorn applies it in each worker
    # The folder processes the workers start (assignment.folding) log the same way.
    os.environ["ABMESH_LOG_LEVEL"], os.environ["ABMESH_LOG_FORMAT"] = log_level.value, fmt.value
    if store:
        os.environ["ABMESH_STORE"] = store
    if insecure:
        os.environ["ABMESH_INSECURE"] = "1"
    try:
        settings = Settings.from_env()
        open_store(settings.store_url).close()
    except AbmeshError as exc:
        fail(str(exc))
    with tempfile.TemporaryDirectory(prefix="abmesh-metrics-") as metrics_dir:
        if workers > 1:  # each worker writes its metrics there; /metrics merges them
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            "assignment.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=log_config,
            log_level=log_level.value,
            timeout_graceful_shutdown=10,
        )


cli_data.register(app)
cli_log.register(app, cli_data.events_app)
cli_analysis.register(app)
cli_warehouse.register(app)
cli_rollout.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
