"""The lifecycle on the command line: apply (unchanged during a canary), get with spec and
status, start, stop, delete with and without its history, history by uid, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from experiments.cli import app
from tests.controller_rig import Rig, spec_of


def abmesh(rig: Rig, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, [*args, "--store", rig.url])
    assert result.exit_code == code, result.output
    return result.output


def write(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_apply_of_an_unchanged_file_mid_canary_changes_nothing(rig: Rig, tmp_path: Path) -> None:
    file = write(tmp_path, spec_of())
    assert "experiment ranker created (generation 1)" in abmesh(rig, "apply", "-f", file)
    assert "experiment ranker is running" in abmesh(rig, "start", "ranker")
    rig.controller().tick()
    before = rig.store.get_experiment("ranker")
    for _ in range(3):  # what Argo CD or Flux do every few minutes
        assert "experiment ranker unchanged (generation 1)" in abmesh(rig, "apply", "-f", file)
    after = rig.store.get_experiment("ranker")
    assert after.status == before.status
    assert rig.share() == 10


def test_get_shows_spec_and_status(rig: Rig, tmp_path: Path) -> None:
    abmesh(rig, "apply", "-f", write(tmp_path, spec_of()))
    abmesh(rig, "start", "ranker")
    rig.controller().tick()
    shown = json.loads(abmesh(rig, "get", "experiment", "ranker", "-o", "json"))
    assert set(shown) == {"name", "generation", "created_at", "updated_at", "spec", "status"}
    status = shown["status"]
    assert (shown["generation"], status["observed_generation"]) == (1, 1)
    assert (status["state"], status["outcome"], status["phase"]) == ("running", None, "main")
    assert status["weights"] == {"stable": 90, "candidate": 10}
    assert status["position"]["kind"] == "canary"
    assert status["position"]["step"] == 1
    assert {c["type"] for c in status["conditions"]} >= {"RouteTargetReady", "Progressing"}
    assert shown["spec"]["variants"][1]["weight"] == 0  # the owner's, untouched
    assert yaml.safe_load(abmesh(rig, "get", "experiment", "ranker"))["status"]["uid"]
    listed = abmesh(rig, "get", "experiments")
    row = next(line for line in listed.splitlines() if line.split()[:1] == ["ranker"])
    assert row.split()[:5] == ["ranker", "running", "-", "main", "canary"]
    assert "candidate=10%" in row


def test_stop_concludes_and_a_concluded_experiment_cannot_start(rig: Rig, tmp_path: Path) -> None:
    abmesh(rig, "apply", "-f", write(tmp_path, spec_of()))
    abmesh(rig, "start", "ranker")
    assert "is concluded" in abmesh(rig, "stop", "ranker")
    out = abmesh(rig, "start", "ranker", code=1)
    assert "cannot start an experiment that is concluded (it is final)" in out
    assert "does not exist" in abmesh(rig, "stop", "nothing", code=1)


def test_delete_and_the_history_by_uid(rig: Rig, tmp_path: Path) -> None:
    file = write(tmp_path, spec_of())
    abmesh(rig, "apply", "-f", file)
    abmesh(rig, "start", "ranker")
    c = rig.controller()
    c.tick()
    abmesh(rig, "stop", "ranker")
    c.tick()  # rolled back
    uid = rig.store.get_experiment("ranker").uid
    out = abmesh(rig, "delete", "ranker", "--keep-history")
    assert f"uid {uid}" in out
    assert f"abmesh history --uid {uid}" in out
    history = abmesh(rig, "history", "--uid", uid)
    assert "canary step 1" in history
    assert "rolled back to stable: the experiment was stopped" in history
    abmesh(rig, "apply", "-f", file)  # the same name again: a new experiment
    assert "no rollout history" in abmesh(rig, "history", "ranker")
    assert "not both" in abmesh(rig, "history", "ranker", "--uid", uid, code=1)
    abmesh(rig, "delete", "ranker")
    assert "does not exist" in abmesh(rig, "delete", "ranker", code=1)


def test_a_rollout_in_progress_is_not_deleted_by_accident(rig: Rig, tmp_path: Path) -> None:
    abmesh(rig, "apply", "-f", write(tmp_path, spec_of()))
    abmesh(rig, "start", "ranker")
    rig.controller().tick()
    out = abmesh(rig, "delete", "ranker", code=1)
    assert "has a rollout in progress: stop it first" in out
    assert rig.store.get_experiment("ranker").status.rollout is not None  # nothing lost
    abmesh(rig, "stop", "ranker")
    abmesh(rig, "delete", "ranker")  # concluded: its routes were (or will be) rolled back
    abmesh(rig, "apply", "-f", write(tmp_path, spec_of()))
    abmesh(rig, "start", "ranker")
    rig.controller().tick()
    assert "deleted" in abmesh(rig, "delete", "ranker", "--force")
