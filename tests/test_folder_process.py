"""The service's folder as a child process (ABMESH_FOLD=process, the default): it folds, it is
restarted when it dies, it stops with the service, and it leaves on its own when the service
is killed; ABMESH_FOLD=thread and off still work, and a bad value is refused by name."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from assignment.config import Settings, SettingsError
from tests.servers import start_service, wait_until
from tests.test_event_log import post_events
from tests.test_events import make_events, prepare, stats_of


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    return [int(p) for p in out.split()]


def folders(pid: int) -> list[int]:
    """The folder processes among `pid`'s children (by their command line)."""
    found = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"experiments.folder" in command:
            found.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here; /proc says which it is.
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
    return "State:\tZ" not in status


def test_the_folder_process_folds_restarts_and_stops_with_the_service(
    sqlite_store_url: str, tmp_path: Path
) -> None:
    prepare(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path)
    try:
        wait_until(lambda: len(folders(svc.proc.pid)) == 1, "the folder process", timeout=60)
        first = folders(svc.proc.pid)[0]
        post_events(svc.url, make_events(500, seed=41))
        assert stats_of(svc.url)["fold"]["pending"] == 0
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: folders(svc.proc.pid) not in ([], [first]), "a new folder", 60)
        post_events(svc.url, make_events(500, seed=42))
        assert stats_of(svc.url)["fold"]["pending"] == 0
        second = folders(svc.proc.pid)[0]
    finally:
        svc.stop()
    wait_until(lambda: not alive(second), "the folder stopped with the service", timeout=60)


def test_a_killed_service_leaves_no_folder_behind(sqlite_store_url: str, tmp_path: Path) -> None:
    prepare(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path)
    try:
        wait_until(lambda: len(folders(svc.proc.pid)) == 1, "the folder process", timeout=60)
        folder = folders(svc.proc.pid)[0]
        svc.proc.kill()
        svc.proc.wait()
        wait_until(lambda: not alive(folder), "the orphaned folder to leave", timeout=60)
    finally:
        svc.stop()


@pytest.mark.parametrize("mode", ["thread", "off"])
def test_thread_and_off_modes_start_no_folder_process(
    sqlite_store_url: str, tmp_path: Path, mode: str
) -> None:
    prepare(sqlite_store_url)
    svc = start_service(sqlite_store_url, tmp_path, fold=mode)
    try:
        post_events(svc.url, make_events(300, seed=43))
        assert stats_of(svc.url)["fold"]["pending"] == 0  # a read folds what it needs anyway
        assert folders(svc.proc.pid) == []
    finally:
        svc.stop()


@pytest.mark.parametrize(("value", "mode"), [
    (None, "process"), ("process", "process"), ("1", "process"), ("true", "process"),
    ("thread", "thread"), ("off", "off"), ("0", "off"), ("false", "off"),
])  # fmt: skip
def test_abmesh_fold_values(tmp_path: Path, value: str | None, mode: str) -> None:
    env = {"ABMESH_STORE": f"sqlite:///{tmp_path / 'a.db'}"}
    if value is not None:
        env["ABMESH_FOLD"] = value
    assert Settings.from_env(env).fold == mode


def test_a_bad_abmesh_fold_is_refused_by_name(tmp_path: Path) -> None:
    env = {"ABMESH_STORE": f"sqlite:///{tmp_path / 'a.db'}", "ABMESH_FOLD": "sometimes"}
    with pytest.raises(SettingsError, match="ABMESH_FOLD='sometimes' must be process, thread"):
        Settings.from_env(env)
