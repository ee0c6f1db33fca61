"""The `abmesh` command: real processes against both store backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import EXAMPLES_DIR

EXAMPLE = EXAMPLES_DIR / "ranker-v2.yaml"


def abmesh(
    *args: str, cwd: Path | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_spec(path: Path, treatment_weight: float, sticky: bool = True) -> Path:
    text = EXAMPLE.read_text().replace(
        "weight: 50, destination: {host: model-inference-v1",
        f"weight: {100 - treatment_weight}, destination: {{host: model-inference-v1",
    )
    text = text.replace(
        "weight: 50, destination: {host: model-inference-v2",
        f"weight: {treatment_weight}, destination: {{host: model-inference-v2",
    )
    path.write_text(text + (f"sticky: {str(sticky).lower()}\n"))
    return path


def test_help_lists_the_commands() -> None:
    out = abmesh("--help").stdout
    for command in ("apply", "get", "assign", "validate", "delete", "start", "stop", "history"):
        assert command in out


def test_apply_get_assign_on_the_default_sqlite_store(tmp_path: Path) -> None:
    assert "created (generation 1)" in abmesh("apply", "-f", str(EXAMPLE), cwd=tmp_path).stdout
    assert (tmp_path / "abmesh.db").exists()  # the embedded default: a file in the working dir
    assert "unchanged (generation 1)" in abmesh("apply", "-f", str(EXAMPLE), cwd=tmp_path).stdout
    listing = abmesh("get", "experiments", cwd=tmp_path).stdout
    assert listing.split()[:7] == ["NAME", "STATE", "OUTCOME", "PHASE", "ROLLOUT", "WEIGHTS", "GEN"]
    assert "ranker-v2" in listing
    assert "control=100% / treatment=0%" in listing  # a draft: everyone gets control
    abmesh("start", "ranker-v2", cwd=tmp_path)
    assert "control=50% / treatment=50%" in abmesh("get", "experiments", cwd=tmp_path).stdout
    out = abmesh("assign", "ranker-v2", "qa-1", cwd=tmp_path).stdout
    assert "qa-1: treatment (not in experiment, override-unit)  x-user-group: group-b" in out
    forced = abmesh(
        "assign", "ranker-v2", "someone", "--header", "X-User-Group=internal-testers", cwd=tmp_path
    ).stdout
    assert "treatment (not in experiment, override-header)" in forced
    rows = json.loads(abmesh("assign", "ranker-v2", "u1", "u2", "-o", "json", cwd=tmp_path).stdout)
    assert [r["unit"] for r in rows] == ["u1", "u2"]
    assert rows[0]["header"]["name"] == "x-user-group"
    assert rows[0]["header"]["value"] in {"group-a", "group-b"}
    shown = json.loads(abmesh("get", "experiment", "ranker-v2", "-o", "json", cwd=tmp_path).stdout)
    assert (shown["generation"], shown["spec"]["name"]) == (1, "ranker-v2")
    assert (shown["status"]["state"], shown["status"]["phase"]) == ("running", "main")


def test_stickiness_across_process_restarts(tmp_path: Path, store_url: str) -> None:
    units = [f"user-{i}" for i in range(200)]
    abmesh("apply", "-f", str(write_spec(tmp_path / "a.yaml", 50)), "--store", store_url)
    before = json.loads(
        abmesh("assign", "ranker-v2", *units, "-o", "json", "--store", store_url).stdout
    )
    abmesh("apply", "-f", str(write_spec(tmp_path / "b.yaml", 10)), "--store", store_url)
    after = json.loads(
        abmesh("assign", "ranker-v2", *units, "-o", "json", "--store", store_url).stdout
    )
    assert [r["variant"] for r in after] == [r["variant"] for r in before]
    assert {r["reason"] for r in after} == {"sticky"}
    assert "generation 2" in abmesh("get", "history", "ranker-v2", "--store", store_url).stdout


def test_start_stop_delete_and_the_history_by_uid(tmp_path: Path) -> None:
    abmesh("apply", "-f", str(EXAMPLE), cwd=tmp_path)
    assert "experiment ranker-v2 is running" in abmesh("start", "ranker-v2", cwd=tmp_path).stdout
    assert "experiment ranker-v2 is concluded" in abmesh("stop", "ranker-v2", cwd=tmp_path).stdout
    row = abmesh("get", "experiments", cwd=tmp_path).stdout.splitlines()[1]
    assert row.split()[:4] == ["ranker-v2", "concluded", "stopped", "main"]
    refused = abmesh("start", "ranker-v2", cwd=tmp_path, ok=False)
    assert (refused.returncode, refused.stderr.count("\n")) == (1, 1)
    assert "cannot start an experiment that is concluded" in refused.stderr
    shown = json.loads(abmesh("get", "experiment", "ranker-v2", "-o", "json", cwd=tmp_path).stdout)
    uid = shown["status"]["uid"]
    deleted = abmesh("delete", "ranker-v2", "--keep-history", cwd=tmp_path).stdout
    assert f"(uid {uid}) deleted" in deleted
    kept = json.loads(abmesh("history", "--uid", uid, "-o", "json", cwd=tmp_path).stdout)
    assert [e["state"] for e in kept] == ["running", "concluded"]
    abmesh("apply", "-f", str(EXAMPLE), cwd=tmp_path)  # the same name again: a new experiment
    again = json.loads(abmesh("get", "experiment", "ranker-v2", "-o", "json", cwd=tmp_path).stdout)
    assert again["status"]["uid"] != uid
    assert (again["generation"], again["status"]["state"]) == (1, "draft")
    assert "no rollout history" in abmesh("history", "ranker-v2", cwd=tmp_path).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["assign", "missing", "u1"], "experiment 'missing' does not exist"),
        (["assign", "ranker-v2", ""], "unit must not be empty"),
        (["assign", "ranker-v2", "u", "--header", "novalue"], "must look like NAME=VALUE"),
        (["apply", "-f", "/nonexistent/spec.yaml"], "does not exist"),
        (["get", "experiments", "--store", "ftp://x"], "unknown scheme"),
        (["get", "experiments", "--store", "redis://127.0.0.1:9/0"], "Redis store"),
        (["delete", "missing"], "does not exist"),
        (["apply", "-f", "."], "is not a regular file"),
        (["validate", "-f", "/dev/zero"], "is not a regular file"),
        (["get", "experiments", "--store", "redis://[::1"], "not a valid Redis URL"),
        (["get", "experiments", "--store", "redis://127.0.0.1:x/0"], "not a valid Redis URL"),
        (["get", "experiments", "--store", "redis://127.0.0.1:6379/abc"], "must be a number"),
        (["get", "experiments", "--store", "redis://127.0.0.1/0?prefix="], "prefix"),
        (["get", "experiments", "--store", "sqlite:///:memory:"], "keeps nothing"),
        (["get", "experiments", "--store", "sqlite:////no/such/dir/a.db"], "does not exist"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_1(
    tmp_path: Path, args: list[str], message: str
) -> None:
    abmesh("apply", "-f", str(EXAMPLE), cwd=tmp_path)
    proc = abmesh(*args, cwd=tmp_path, ok=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_invalid_spec_names_the_field_and_stores_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("header_value: group-b", "header_value: 'group b'"))
    proc = abmesh("apply", "-f", str(bad), cwd=tmp_path, ok=False)
    assert proc.returncode == 1
    assert "variants.1.header_value" in proc.stderr
    assert "no experiments" in abmesh("get", "experiments", cwd=tmp_path).stdout
    assert abmesh("validate", "-f", str(bad), ok=False).returncode == 1
    assert "valid" in abmesh("validate", "-f", str(EXAMPLE)).stdout


def test_usage_errors_exit_2() -> None:
    assert abmesh("assign", ok=False).returncode == 2
