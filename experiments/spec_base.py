"""The building blocks of the spec's models: validated names, header tokens, unit ids and
strict numbers, the frozen base model and the exact-resolution helpers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Strict

from experiments.names import check_name, check_routing_header, check_token, unit_problem

SPEC_API_VERSION: Literal["abmesh/v1"] = "abmesh/v1"
BASIS_POINTS = 10_000  # 100 % in units of 0.01 %


def _name(value: str) -> str:
    return check_name(value)


def _header_name(value: str) -> str:
    # HTTP header names are case-insensitive; Istio and Envoy match them lowercased.
    return check_token(value, "header name").lower()


def _routing_header(value: str) -> str:
    return check_routing_header(_header_name(value))


def _header_value(value: str) -> str:
    return check_token(value, "header value")


def _unit(value: str) -> str:
    problem = unit_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def to_basis_points(value: float, scale: int, what: str) -> int:
    """`value * scale` as an exact integer, refusing finer resolution than one unit."""
    scaled = value * scale
    rounded = round(scaled)
    if abs(scaled - rounded) > 1e-6:
        raise ValueError(f"{what} {value} is finer than the supported resolution of {1 / scale}")
    return rounded


Name = Annotated[str, AfterValidator(_name)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
RoutingHeader = Annotated[str, AfterValidator(_routing_header)]
# Numbers and flags are not coerced from other types: `weight: true` or `sticky: "yes"` is a
# mistake to report, not a value to guess (integers are still accepted as numbers).
Number = Annotated[float, Strict()]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
UnitId = Annotated[str, AfterValidator(_unit)]


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def no_repeats(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} must be unique; {value!r} appears more than once")
        seen.add(value)
