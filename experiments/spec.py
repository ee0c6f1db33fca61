"""The experiment spec: what is tested, on whom, how it is split and measured.

A spec is data (YAML or JSON), validated here once so that everything downstream — the hash,
the route renderers, the analysis — can trust it.  Validation messages name the field
(`variants.1.weight: ...`).  Weights are percentages with a resolution of 0.01 (basis points)
and coverage a fraction with a resolution of 0.0001, so the assignment thresholds are exact
integers and the same in every language.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, Strict, field_validator, model_validator

from experiments.names import HOST_RE
from experiments.spec_base import (
    BASIS_POINTS,
    SPEC_API_VERSION,
    HeaderName,
    HeaderValue,
    Name,
    Number,
    RoutingHeader,
    SpecModel,
    UnitId,
    no_repeats,
    to_basis_points,
)
from experiments.spec_metrics import AnalysisSettings, Direction, Metric, MetricKind, Metrics
from experiments.spec_rollout import Rollout
from experiments.spec_segments import Segment, check_segments
from experiments.spec_source import SqlSource, check_sources

__all__ = [
    "BASIS_POINTS",
    "SPEC_API_VERSION",
    "AnalysisSettings",
    "Destination",
    "Direction",
    "ExperimentSpec",
    "HashVersion",
    "Layer",
    "Metric",
    "MetricKind",
    "Metrics",
    "Override",
    "Rollout",
    "Segment",
    "Variant",
]


class HashVersion(StrEnum):
    ABMESH_V1 = "abmesh-v1"
    GROWTHBOOK_V2 = "growthbook-v2"


class Destination(SpecModel):
    """Where the mesh sends this variant's traffic (Istio host + DestinationRule subset)."""

    host: str = Field(min_length=1, max_length=253)
    subset: Name | None = None
    port: Annotated[int, Strict()] | None = Field(default=None, ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not HOST_RE.fullmatch(value):
            raise ValueError(f"host {value!r} is not a DNS-1123 name (lowercase, digits, '-', '.')")
        return value


class Variant(SpecModel):
    key: Name
    header_value: HeaderValue
    weight: Number = Field(ge=0, le=100, allow_inf_nan=False)
    destination: Destination
    description: str = Field(default="", max_length=1000)

    @property
    def weight_bp(self) -> int:
        return round(self.weight * 100)

    @field_validator("weight")
    @classmethod
    def _weight_resolution(cls, value: float) -> float:
        to_basis_points(value, 100, "weight")
        return value


class HeaderMatch(SpecModel):
    name: HeaderName
    value: HeaderValue


class Override(SpecModel):
    """Forces a variant: for requests carrying a header, or for listed units (QA, testers)."""

    variant: Name
    header: HeaderMatch | None = None
    units: tuple[UnitId, ...] | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if self.units is not None and not self.units:
            raise ValueError("'units' must list at least one unit")
        if (self.header is None) == (self.units is None):
            raise ValueError("an override needs exactly one of 'header' or 'units'")
        return self


class Layer(SpecModel):
    """A slice [start, end) in percent of a layer; experiments in one layer must not overlap."""

    name: Name
    start: Number = Field(default=0, ge=0, le=100, allow_inf_nan=False)
    end: Number = Field(default=100, ge=0, le=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        to_basis_points(self.start, 100, "start")
        to_basis_points(self.end, 100, "end")
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be below end ({self.end})")
        return self

    def overlaps(self, other: Layer) -> bool:
        return self.name == other.name and self.start < other.end and other.start < self.end


class ExperimentSpec(SpecModel):
    api_version: Literal["abmesh/v1"] = Field(default=SPEC_API_VERSION, alias="apiVersion")
    name: Name
    description: str = Field(default="", max_length=4000)
    unit: Name = "user_id"
    salt: Name | None = None
    header: RoutingHeader = "x-user-group"
    hash: HashVersion = HashVersion.ABMESH_V1
    variants: tuple[Variant, ...] = Field(max_length=26)
    control: Name | None = None
    coverage: Number = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    layer: Layer | None = None
    overrides: tuple[Override, ...] = Field(default=(), max_length=100)
    sticky: Annotated[bool, Strict()] = False
    metrics: Metrics | None = None
    segments: tuple[Segment, ...] = ()
    analysis: AnalysisSettings = AnalysisSettings()
    rollout: Rollout | None = None
    # Where the metrics' events are read: default abmesh's own store (experiments.spec_source).
    source: SqlSource | None = None

    @field_validator("variants")
    @classmethod
    def _at_least_two(cls, value: tuple[Variant, ...]) -> tuple[Variant, ...]:
        # Checked here rather than with min_length so that a spec whose variants have errors
        # of their own is not also told it has too few.
        if len(value) < 2:
            raise ValueError(f"an experiment needs at least two variants, got {len(value)}")
        return value

    @field_validator("coverage")
    @classmethod
    def _coverage_resolution(cls, value: float) -> float:
        to_basis_points(value, BASIS_POINTS, "coverage")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        keys = [v.key for v in self.variants]
        no_repeats(keys, "variants: keys")
        no_repeats([v.header_value for v in self.variants], "variants: header values")
        total = sum(v.weight_bp for v in self.variants)
        if total != BASIS_POINTS:
            raise ValueError(f"variants: weights must sum to 100; they sum to {total / 100:g}")
        if self.control is not None and self.control not in keys:
            raise ValueError(f"control: {self.control!r} is not one of the variants {keys}")
        if self.rollout is not None:
            self._check_rollout(self.rollout)
        check_segments(self.segments)
        check_sources(self.source, self.metrics, self.segments)
        candidate = self.rollout.candidate if self.rollout else None
        if candidate is not None and (
            candidate not in keys or candidate == self.control_variant.key
        ):
            raise ValueError(
                f"rollout.candidate: {candidate!r} must be one of the variants {keys} other than"
                " the control"
            )
        listed: dict[str, int] = {}
        for i, override in enumerate(self.overrides):
            if override.variant not in keys:
                raise ValueError(
                    f"overrides.{i}.variant {override.variant!r} is not one of the variants {keys}"
                )
            for unit in override.units or ():
                if listed.setdefault(unit, i) != i:
                    raise ValueError(
                        f"overrides.{i}.units: {unit!r} is listed in overrides.{listed[unit]}"
                        " already; a unit may be forced by one override only"
                    )
        return self

    def _check_rollout(self, rollout: Rollout) -> None:
        if self.sticky:
            raise ValueError(
                "rollout: a rollout moves units between arms as it ramps, which sticky: true"
                " forbids; drop one of the two"
            )
        if self.metrics is None and any(p.kind == "ab" for p in rollout.phases):
            raise ValueError("rollout: an 'ab' phase needs metrics to test (add metrics.primary)")
        if not rollout.guardrails and any(p.kind == "canary" for p in rollout.phases):
            # A canary is judged by its guardrails alone: with none, every check would pass
            # without evidence and the candidate would walk to 100 % unseen.
            raise ValueError(
                "rollout.guardrails: a 'canary' phase needs at least one operational guardrail"
                " (leave the field out for the defaults: p99 latency and 5xx ratio)"
            )
        keys = [v.key for v in self.variants]
        unknown = sorted(set(rollout.target.clusters) - set(keys))
        if unknown:
            raise ValueError(f"rollout.target.clusters: {unknown} are not variants {keys}")

    @property
    def seed(self) -> str:
        """The hash salt: `salt`, or the experiment name (as GrowthBook defaults its seed)."""
        return self.salt or self.name

    @property
    def control_variant(self) -> Variant:
        key = self.control or self.variants[0].key
        return next(v for v in self.variants if v.key == key)

    @property
    def candidate_variant(self) -> Variant:
        """The variant a rollout moves traffic to: `rollout.candidate`, else the first other."""
        key = self.rollout.candidate if self.rollout and self.rollout.candidate else None
        control = self.control_variant.key
        return next(v for v in self.variants if v.key == key or (key is None and v.key != control))

    def with_weights(self, weights: Mapping[str, float]) -> ExperimentSpec:
        """This spec with the arms at `weights` (variant -> percent; a variant not named gets
        0), as a rollout or an analysis phase sets them."""
        if all(v.weight == weights.get(v.key, 0) for v in self.variants):
            return self
        data = self.model_dump(mode="json", by_alias=True)
        for variant in data["variants"]:
            variant["weight"] = weights.get(variant["key"], 0)
        return ExperimentSpec.model_validate(data)

    def variant(self, key: str) -> Variant:
        for v in self.variants:
            if v.key == key:
                return v
        raise KeyError(key)
