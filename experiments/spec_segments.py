"""Segments: the few unit attributes (country, platform, an input bucket) whose per-segment
effects the analysis reports.  Declared in the spec, so an attribute nobody declared is an error
rather than a new dimension, and capped, so a unit id sent as a segment value cannot grow the
statistics without bound.

A segment value is a short label.  The statistics keep it inside their keys
(`variant@attribute=value|...`, see experiments.segments), so the characters those keys are
built with are refused."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, Strict, model_validator

from experiments.spec_base import Name, SpecModel, no_repeats

OTHER = "(other)"  # where values beyond the declared list or the cap are counted
MAX_VALUE_CHARS = 64
MAX_SEGMENTS = 8
_RESERVED = frozenset("|@=")


def value_problem(value: str) -> str | None:
    """Why `value` cannot be a segment value, or None."""
    if not value or len(value) > MAX_VALUE_CHARS:
        return f"must be 1-{MAX_VALUE_CHARS} characters"
    if any(c in _RESERVED or not c.isprintable() for c in value):
        return "must be printable and without '|', '@' or '='"
    if value == OTHER:
        return f"{OTHER!r} is reserved for the values beyond the cap"
    return None


def _value(value: str) -> str:
    problem = value_problem(value)
    if problem is not None:
        raise ValueError(f"{value[:80]!r}: {problem}")
    return value


SegmentValue = Annotated[str, AfterValidator(_value)]


class Segment(SpecModel):
    """One attribute.  With `values`, any other value counts as `(other)`; without, the first
    `max_values` values seen (per store partition) get their own segment and later ones count
    as `(other)`."""

    name: Name
    values: tuple[SegmentValue, ...] | None = Field(default=None, min_length=1, max_length=100)
    max_values: Annotated[int, Strict()] = Field(default=20, ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _unique_values(self) -> Self:
        if self.values is not None:
            no_repeats(list(self.values), f"segment {self.name!r}: values")
        return self

    def resolve(self, value: str, known: set[str]) -> str:
        """The segment `value` is counted in, given the values that have one already (which
        it joins if there is room)."""
        if self.values is not None:
            return value if value in self.values else OTHER
        if value in known or len(known) < self.max_values:
            known.add(value)
            return value
        return OTHER


def check_segments(segments: tuple[Segment, ...]) -> None:
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"segments: at most {MAX_SEGMENTS} attributes, got {len(segments)}")
    no_repeats([s.name for s in segments], "segments: names")
