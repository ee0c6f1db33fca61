"""What the `abmesh` commands share: consoles, the store option, one-line errors, output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, NoReturn

import typer
import yaml
from rich.console import Console

from experiments.errors import AbmeshError
from experiments.logs import LogFormat, LogLevel
from experiments.store import Store, open_store, redact

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="ABMESH_STORE",
        show_envvar=True,
        help="sqlite:///path.db or redis://host:port/db (default: ./abmesh.db)",
    ),
]
PhaseOpt = Annotated[str | None, typer.Option(help="Default: the current phase.")]


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]
LogLevelOpt = Annotated[
    LogLevel,
    typer.Option(envvar="ABMESH_LOG_LEVEL", show_envvar=True, case_sensitive=False,
                 help="Lowest level logged."),
]  # fmt: skip
LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option(envvar="ABMESH_LOG_FORMAT", show_envvar=True, case_sensitive=False,
                 help="Log lines as json or text (default: json unless stderr is a terminal)."),
]  # fmt: skip


def fail(message: str) -> NoReturn:
    err.print("error: " + " ".join(redact(message).split()), markup=False)
    raise typer.Exit(1)


@contextmanager
def store_for(url: str | None) -> Iterator[Store]:
    try:
        store = open_store(url)
    except AbmeshError as exc:
        fail(str(exc))
    try:
        yield store
    except AbmeshError as exc:
        fail(str(exc))
    finally:
        store.close()


def print_data(data: object, output: Output) -> None:
    if output is Output.YAML:
        out.print(yaml.safe_dump(data, sort_keys=False).rstrip(), markup=False)
    else:
        out.print(json.dumps(data, indent=2), markup=False)
