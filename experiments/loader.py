"""Load and dump experiment specs (YAML or JSON text, files, or mappings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from experiments import strict_yaml
from experiments.errors import SpecError
from experiments.spec import ExperimentSpec

MAX_SPEC_BYTES = 1_000_000
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"  # shipped example specs


def load_spec(source: str | Path | Mapping[str, Any]) -> ExperimentSpec:
    """Validate a spec given as a mapping, a path to a YAML/JSON file, or YAML/JSON text.

    A string is text if it holds a newline, starts with `{`, or looks like a YAML mapping
    (`key: value`) and names no existing file; otherwise it is a path."""
    if isinstance(source, Mapping):
        return spec_from_mapping(source)
    if isinstance(source, str) and _looks_like_text(source):
        return parse_spec(source)
    return parse_spec(_read_spec_file(Path(source)))


def _looks_like_text(source: str) -> bool:
    if "\n" in source or source.lstrip().startswith("{"):
        return True
    return ": " in source and not Path(source).exists()


def _read_spec_file(path: Path) -> str:
    """The text of a spec file: a regular file of at most MAX_SPEC_BYTES bytes of UTF-8."""
    where = f"spec file {str(path)!r}"
    try:
        if not path.is_file():
            problem = "does not exist" if not path.exists() else "is not a regular file"
            raise SpecError([f"{where} {problem}"])
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([f"cannot read {where}: {exc.strerror}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError([f"{where} is larger than {MAX_SPEC_BYTES} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{where} is not UTF-8 text (byte {exc.start})"]) from None


def parse_spec(text: str) -> ExperimentSpec:
    """Validate a spec from YAML (a superset of JSON) text; a key given twice is an error."""
    try:
        data = strict_yaml.load(text)
    except strict_yaml.DuplicateKeyError as exc:
        raise SpecError([str(exc.problem)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML or JSON: {exc}".replace("\n", " ")]) from None
    except RecursionError:
        raise SpecError(["the document is nested too deeply"]) from None
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
    # One line per problem, whatever a key or value holds.
    return " ".join((f"{loc}: {message}" if loc else message).split())


def dump_spec(spec: ExperimentSpec) -> str:
    """Canonical JSON of a spec: sorted keys, defaults included, so equal specs dump equal."""
    return json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
