"""Load and dump experiment specs (YAML or JSON text, files, or mappings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from experiments.errors import SpecError
from experiments.spec import ExperimentSpec

MAX_SPEC_BYTES = 1_000_000
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"  # shipped example specs


def load_spec(source: str | Path | Mapping[str, Any]) -> ExperimentSpec:
    """Validate a spec given as a mapping, a path to a YAML/JSON file, or YAML/JSON text."""
    if isinstance(source, Mapping):
        return spec_from_mapping(source)
    if isinstance(source, Path) or ("\n" not in source and not source.lstrip().startswith("{")):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise SpecError([f"cannot read spec file {str(path)!r}: {exc.strerror}"]) from None
        if size > MAX_SPEC_BYTES:
            raise SpecError([f"spec file {str(path)!r} is larger than {MAX_SPEC_BYTES} bytes"])
        return parse_spec(path.read_text(encoding="utf-8"))
    return parse_spec(source)


def parse_spec(text: str) -> ExperimentSpec:
    """Validate a spec from YAML (a superset of JSON) text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML or JSON: {exc}".replace("\n", " ")]) from None
    if not isinstance(data, Mapping):
        raise SpecError([f"a spec must be a mapping, got {type(data).__name__}"])
    return spec_from_mapping(data)


def spec_from_mapping(data: Mapping[str, Any]) -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError([_describe(err) for err in exc.errors()]) from None


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def dump_spec(spec: ExperimentSpec) -> str:
    """Canonical JSON of a spec: sorted keys, defaults included, so equal specs dump equal."""
    return json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
