"""Strict input: a YAML key given twice, and HTTP requests the service must refuse with a 4xx
that names what is wrong (never a 500, never a silent default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.routing.routers import ManifestsRouter
from experiments import EXAMPLES_DIR, load_spec, strict_yaml
from experiments.errors import SpecError

EXAMPLE_TEXT = (EXAMPLES_DIR / "ranker-v2.yaml").read_text()


@pytest.mark.parametrize(
    ("extra", "key"),
    [("coverage: 0.05\ncoverage: 1\n", "coverage"), ("name: ranker-v3\n", "name")],
)
def test_a_key_given_twice_is_refused_with_its_lines(extra: str, key: str) -> None:
    text = EXAMPLE_TEXT + extra
    lines = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(f"{key}:")]
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    assert caught.value.problems == [
        f"duplicate key {key!r} on line {lines[1]} (first on line {lines[0]})"
    ]


def test_nested_and_flow_duplicates_are_refused_too() -> None:
    nested = EXAMPLE_TEXT.replace("  primary: {name: click,", "  primary: {name: click, name: buy,")
    with pytest.raises(SpecError, match="duplicate key 'name' on line"):
        load_spec(nested)
    with pytest.raises(SpecError, match="duplicate key 'a'"):
        load_spec('{"a": 1, "a": 2}')  # JSON text goes through the same loader


def test_a_merge_may_still_override_what_it_brings_in() -> None:
    data = strict_yaml.load("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 5\n")
    assert data["m"] == {"x": 5, "y": 2}


def test_the_cli_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "twice.yaml"
    spec.write_text(EXAMPLE_TEXT + "coverage: 0.05\ncoverage: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "validate", "-f", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = len(spec.read_text().splitlines())
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: invalid experiment spec: duplicate key 'coverage' on line {last}"
        f" (first on line {last - 1})"
    )


def test_the_manifests_router_reads_its_files_strictly(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("kind: VirtualService\nkind: HTTPRoute\n")
    with pytest.raises(strict_yaml.DuplicateKeyError, match="duplicate key 'kind' on line 2"):
        ManifestsRouter(path).get_routes()
