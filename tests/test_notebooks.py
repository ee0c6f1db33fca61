"""The notebooks run top to bottom (nbclient, a real kernel) against an experiment this test
creates, so they cannot rot; a few of their outputs are checked."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.test_report import seeded

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(name: str, env: dict[str, str], workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(notebook, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()  # fmt: skip
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebook


def text(notebook: nbformat.NotebookNode) -> str:
    out = []
    for cell in notebook.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.timeout(300)
def test_the_walkthrough_reads_the_experiment_and_explains_the_decision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    seeded(url, looks=True).close()
    root = str(Path(__file__).resolve().parent.parent)
    env = {"ABMESH_STORE": url, "EXPERIMENT": "ranker-v2", "PYTHONPATH": root}
    nb = run("experiment_walkthrough.ipynb", env, tmp_path)
    out = text(nb)
    assert "ranker-v2: winner (winner treatment)" in out
    assert "SRM chi-square" in out
    assert "confidence sequence (proportion)" in out
    assert "5 looks recorded" in out  # one `decide` look per batch: the history
    assert "segments: 0 flagged" in out  # ~670 units per arm and country: too few to flag


@pytest.mark.timeout(300)
def test_the_planning_notebook_sizes_a_test(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    out = text(run("plan_an_experiment.ipynb", {"PYTHONPATH": root}, tmp_path))
    assert "users per arm" in out
    assert "obf spending, alpha 0.05, 2-sided" in out
    assert "expected users per arm at stopping" in out
