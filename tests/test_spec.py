"""Experiment specs: the documented example loads; every invalid field is named in the error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments import EXAMPLES_DIR, ExperimentSpec, SpecError, dump_spec, load_spec, parse_spec

EXAMPLE = EXAMPLES_DIR / "ranker-v2.yaml"
ISSUE_EXAMPLE = """\
name: ranker-v2
unit: user_id
header: x-user-group
variants:
  - {key: control,   header_value: group-a, weight: 50, destination: {host: model-inference-v1, subset: v1}}
  - {key: treatment, header_value: group-b, weight: 50, destination: {host: model-inference-v2, subset: v2}}
overrides:
  - {header: {name: x-user-group, value: internal-testers}, variant: treatment}
  - {units: [qa-1, qa-2], variant: treatment}
metrics:
  primary: {name: click, kind: conversion, direction: increase}
"""


def base() -> dict[str, Any]:
    return {
        "name": "ranker-v2",
        "variants": [
            {
                "key": "control",
                "header_value": "group-a",
                "weight": 50,
                "destination": {"host": "model-inference-v1", "subset": "v1"},
            },
            {
                "key": "treatment",
                "header_value": "group-b",
                "weight": 50,
                "destination": {"host": "model-inference-v2", "subset": "v2"},
            },
        ],
    }


def test_issue_example_loads_as_written() -> None:
    spec = parse_spec(ISSUE_EXAMPLE)
    assert spec.name == "ranker-v2"
    assert spec.unit == "user_id"
    assert spec.header == "x-user-group"
    assert [(v.key, v.header_value, v.weight) for v in spec.variants] == [
        ("control", "group-a", 50),
        ("treatment", "group-b", 50),
    ]
    assert spec.variants[1].destination.host == "model-inference-v2"
    assert spec.variants[1].destination.subset == "v2"
    assert spec.overrides[0].header is not None
    assert spec.overrides[0].header.value == "internal-testers"
    assert spec.overrides[1].units == ("qa-1", "qa-2")
    assert spec.metrics is not None
    assert spec.metrics.primary.name == "click"
    assert spec.control_variant.key == "control"
    assert spec.seed == "ranker-v2"
    assert spec.api_version == "abmesh/v1"


def test_example_file_equals_issue_example() -> None:
    assert load_spec(EXAMPLE) == parse_spec(ISSUE_EXAMPLE)
    assert load_spec(str(EXAMPLE)) == load_spec(
        base()
        | {
            "overrides": [
                {
                    "header": {"name": "x-user-group", "value": "internal-testers"},
                    "variant": "treatment",
                },
                {"units": ["qa-1", "qa-2"], "variant": "treatment"},
            ],
            "metrics": {
                "primary": {"name": "click", "kind": "conversion", "direction": "increase"}
            },
        }
    )


def test_json_round_trip_is_identity() -> None:
    spec = parse_spec(ISSUE_EXAMPLE)
    text = dump_spec(spec)
    assert load_spec(json.loads(text)) == spec
    assert parse_spec(text) == spec  # JSON text is accepted too
    assert dump_spec(load_spec(json.loads(text))) == text


def test_header_names_are_lowercased() -> None:
    spec = load_spec(base() | {"header": "X-User-Group"})
    assert spec.header == "x-user-group"


def _set(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base())
    node: Any = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


INVALID = [
    # (mutation, text that must appear in the error: the field and the reason)
    (_set("variants.0.weight", -1), "variants.0.weight"),
    (_set("variants.0.weight", 60), "weights must sum to 100"),
    (_set("variants.0.weight", 50.001), "variants.0.weight"),
    (_set("variants.1.key", "control"), "variants: keys must be unique"),
    (_set("variants.1.header_value", "group-a"), "variants: header values must be unique"),
    (_set("variants.0.header_value", "group a"), "variants.0.header_value"),
    (_set("variants.0.header_value", "a\r\nSet-Cookie: x=1"), "variants.0.header_value"),
    (_set("variants.0.header_value", "a:b"), "variants.0.header_value"),
    (_set("variants.0.header_value", ""), "variants.0.header_value"),
    (_set("header", "x user"), "header:"),
    (_set("header", "x-user-group\n"), "header:"),
    (_set("header", "x-é"), "header:"),
    (_set("name", "ranker v2"), "name:"),
    (_set("name", "../../etc"), "name:"),
    (_set("name", "a" * 64), "name:"),
    (_set("name", ""), "name:"),
    (_set("variants.0.key", "ctl;drop"), "variants.0.key"),
    (_set("salt", "has:colon"), "salt:"),
    (_set("unit", "user id"), "unit:"),
    (_set("variants.0.destination.host", "Model_V1"), "variants.0.destination.host"),
    (_set("variants.0.destination.subset", "v 1"), "variants.0.destination.subset"),
    (_set("variants.0.destination.port", 70000), "variants.0.destination.port"),
    (_set("variants", base()["variants"][:1]), "at least two variants"),
    (_set("coverage", 0), "coverage"),
    (_set("coverage", 1.5), "coverage"),
    (_set("coverage", 0.00001), "coverage"),
    (_set("coverage", float("nan")), "coverage"),
    (_set("control", "nope"), "control:"),
    (_set("hash", "md5"), "hash:"),
    (_set("apiVersion", "abmesh/v2"), "apiVersion"),
    (_set("colour", "red"), "colour"),
    (_set("overrides", [{"variant": "treatment"}]), "overrides.0"),
    (_set("overrides", [{"variant": "nope", "units": ["u"]}]), "overrides.0.variant"),
    (
        _set("overrides", [{"variant": "treatment", "units": ["bad\x00unit"]}]),
        "overrides.0.units.0",
    ),
    (
        _set("overrides", [{"variant": "treatment", "header": {"name": "x y", "value": "v"}}]),
        "overrides.0.header.name",
    ),
    (_set("layer", {"name": "search", "start": 60, "end": 40}), "layer"),
    (_set("layer", {"name": "search", "start": "0", "end": 40}), "layer.start"),
    (_set("variants.0.weight", True), "variants.0.weight"),
    (_set("variants.0.weight", "50"), "variants.0.weight"),
    (_set("coverage", True), "coverage"),
    (_set("sticky", "yes"), "sticky"),
    (_set("variants.0.destination.port", "80"), "variants.0.destination.port"),
    (_set("header", "set-cookie"), "header: header 'set-cookie' is reserved"),
    (_set("header", "Content-Length"), "header:"),
    (_set("header", "transfer-encoding"), "header:"),
    (_set("header", "host"), "header:"),
    (_set("header", "authorization"), "header:"),
    (_set("header", "x-envoy-upstream-alt-stat-name"), "header:"),
    (_set("overrides", [{"variant": "treatment", "units": []}]), "overrides.0"),
    (
        _set(
            "overrides",
            [{"variant": "treatment", "units": ["qa"]}, {"variant": "control", "units": ["qa"]}],
        ),
        "overrides.1.units: 'qa' is listed in overrides.0 already",
    ),
    (_set("metrics", {"primary": {"name": "rev", "kind": "ratio"}}), "metrics.primary"),
    (
        _set("metrics", {"primary": {"name": "click", "kind": "conversion", "direction": "up"}}),
        "metrics.primary.direction",
    ),
    (
        _set(
            "metrics",
            {
                "primary": {"name": "click", "kind": "conversion"},
                "guardrails": [{"name": "click", "kind": "mean"}],
            },
        ),
        "metric names",
    ),
]


@pytest.mark.parametrize(("data", "expected"), INVALID, ids=[e for _, e in INVALID])
def test_invalid_field_is_named(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(data)
    assert expected in str(info.value)
    assert all(line for line in info.value.problems)


def test_all_problems_are_reported_together() -> None:
    data = _set("name", "bad name")
    data["variants"][0]["header_value"] = "bad value"
    with pytest.raises(SpecError) as info:
        load_spec(data)
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("name:")
    assert info.value.problems[1].startswith("variants.0.header_value:")


@pytest.mark.parametrize(
    "text", ["[1, 2]", "name: [unclosed", "just a string\nsecond line", "[" * 100_000]
)
def test_malformed_documents_are_refused(text: str) -> None:
    with pytest.raises(SpecError):
        parse_spec(text)


def test_every_problem_is_one_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec('name: ranker\n"odd\\nkey": 1\nvariants: []\n')
    assert all("\n" not in problem for problem in info.value.problems)
    assert any(problem.startswith("odd key:") for problem in info.value.problems)


def test_single_line_yaml_text_is_not_taken_for_a_path() -> None:
    with pytest.raises(SpecError, match="variants"):
        load_spec("name: x")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe name: x", "not UTF-8"),
        (b"x" * 1_000_001, "larger than"),
        (None, "is not a regular file"),
    ],
)
def test_unreadable_spec_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "spec.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "absent.yaml")


def test_spec_is_immutable() -> None:
    spec = load_spec(base())
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
    assert isinstance(spec, ExperimentSpec)


def test_the_readme_spec_is_valid_and_shows_the_defaults() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## The spec", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = load_spec(yaml.safe_load(block))
    assert spec.analysis == type(spec.analysis)()  # the block lists the defaults
    assert spec.metrics is not None
    assert spec.metrics.guardrails[0].margin == 0.02
    assert spec.rollout is not None
    defaults = type(spec.rollout)()
    assert (spec.rollout.phases, spec.rollout.guardrails) == (defaults.phases, defaults.guardrails)
