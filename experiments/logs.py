"""Log set-up for the long-running commands (`abmesh serve`, `abmesh controller`).

One JSON object per line — time, level, logger, message, and the experiment and request id
when known — is what a container's log collector can index; people at a terminal get plain
lines instead.  The default follows stderr: JSON unless it is a terminal.  `ABMESH_LOG_FORMAT`
(json | text) and `ABMESH_LOG_LEVEL` override it.  The configuration is a `logging.config`
dictionary so that uvicorn applies the same one in each of its worker processes.

Every line goes through `redact`: a store URL or a redis-py message in a log line never shows
a password, whoever logged it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from experiments.store.credentials import redact


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


# What the current request or experiment is, for every line logged while handling it.
request_id: ContextVar[str | None] = ContextVar("abmesh_request_id", default=None)
experiment: ContextVar[str | None] = ContextVar("abmesh_experiment", default=None)
# A request id comes from a client (or Envoy's x-request-id): only a short printable token is
# logged, so nobody can forge log lines or flood them through it.
REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")


@contextmanager
def log_context(*, experiment_name: str) -> Iterator[None]:
    """Every line logged inside names `experiment_name`."""
    token = experiment.set(experiment_name)
    try:
        yield
    finally:
        experiment.reset(token)


def _context(record: logging.LogRecord) -> dict[str, str]:
    """The experiment and request id: from `extra=` on the call, else from the context."""
    found = {
        "experiment": getattr(record, "experiment", None) or experiment.get(),
        "request_id": getattr(record, "request_id", None) or request_id.get(),
    }
    return {key: str(value) for key, value in found.items() if value}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        if context:
            first, newline, rest = text.partition("\n")  # the context before any traceback
            text = f"{first} [{context}]{newline}{rest}"
        return redact(text)


def resolve_format(given: LogFormat | None, stream: TextIO) -> LogFormat:
    """The format asked for, else JSON unless `stream` is a terminal."""
    if given is not None:
        return given
    return LogFormat.TEXT if stream.isatty() else LogFormat.JSON


def logging_config(level: LogLevel, fmt: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary: every logger (abmesh's, uvicorn's, the
    libraries') writes to stderr through one formatter."""
    formatter = JsonFormatter if fmt is LogFormat.JSON else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"abmesh": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "abmesh",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's own loggers go to the root's handler instead of their own.
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # httpx logs every request at info: the controller's Prometheus and Envoy calls
            # would drown what it decides.
            "httpx": {"level": "DEBUG" if level is LogLevel.DEBUG else "WARNING"},
        },
    }


def configure(level: LogLevel, fmt: LogFormat) -> None:
    logging.config.dictConfig(logging_config(level, fmt))
