"""Structured logs: the real service and controller processes write one JSON object per line
(time, level, logger, message; experiment and request id when known) when stderr is not a
terminal, and plain lines when asked."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.logs import JsonFormatter, LogFormat, TextFormatter, log_context, resolve_format
from experiments.store import open_store
from tests.servers import free_port, start_redis, start_service

FIELDS = {"time", "level", "logger", "message"}


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_service_logs_json_lines_with_experiment_and_request_id(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{server.port}/0"
    store = open_store(url)
    spec = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
    store.put_experiment(load_spec({**spec, "sticky": True}))  # assigning reads the store
    change_state(store, "ranker-v2", Action.START)
    store.close()
    service = start_service(url, tmp_path, log_format="json", log_level="info")
    try:
        server.stop()  # sticky records unavailable: assigned by hash, with a warning
        r = httpx.get(f"{service.url}/v1/assign/ranker-v2", params={"unit": "u-1"},
                      headers={"x-request-id": "req-42"}, timeout=10)  # fmt: skip
        assert r.status_code == 200
    finally:
        service.stop()
        server.stop()
    lines = _lines(service.output())  # every line parses
    assert all(line.keys() >= FIELDS for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    sticky = [line for line in lines if line["message"].startswith("sticky records unavailable")]
    assert sticky
    assert sticky[0]["level"] == "WARNING"
    assert sticky[0]["logger"] == "abmesh.service"
    assert (sticky[0]["experiment"], sticky[0]["request_id"]) == ("ranker-v2", "req-42")


def test_the_controller_logs_json_when_stderr_is_not_a_terminal() -> None:
    store = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "controller", "--once", "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("ABMESH_")},
    )
    lines = _lines(proc.stderr)
    skipped = [line for line in lines if line["message"].startswith("tick skipped")]
    assert skipped, proc.stderr
    assert (skipped[0]["level"], skipped[0]["logger"]) == ("WARNING", "abmesh.controller")
    assert "redis://:***@127.0.0.1:" in skipped[0]["message"]
    assert "hunter2" not in proc.stderr


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("abmesh.test", logging.ERROR, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_text_lines_carry_the_context_and_hide_passwords() -> None:
    with log_context(experiment_name="ranker-v2"):
        text = TextFormatter().format(_record("store redis://:s3cret@h:1/0 down"))
    assert text.endswith("ERROR abmesh.test: store redis://:***@h:1/0 down [experiment=ranker-v2]")


def test_json_lines_carry_the_exception() -> None:
    try:
        raise ValueError("redis://:s3cret@h:1/0")
    except ValueError:
        record = _record("failed", request_id="r-1")
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["request_id"]) == ("failed", "r-1")
    assert "experiment" not in line
    assert line["exception"].endswith("ValueError: redis://:***@h:1/0")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_default_format_follows_stderr() -> None:
    assert resolve_format(None, io.StringIO()) is LogFormat.JSON
    assert resolve_format(None, _Terminal()) is LogFormat.TEXT
    assert resolve_format(LogFormat.JSON, _Terminal()) is LogFormat.JSON
