"""Where an experiment's metrics are read: abmesh's own store (the default), or a SQL source —
exposures and events in a warehouse table, folded per unit and aggregated per arm by one
generated query (experiments.warehouse), so the events never pass through abmesh.

A connection is a URL (`duckdb:///path.db`, `postgresql://host/db`, `chdb:///dir`,
`clickhouse://host:8123/db`) or the name of an environment variable holding one.  A URL in
the spec must not carry a password: the spec is served by the API and kept in the audit, so a
credential goes in the environment variable instead."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from experiments.spec_base import Name, Number, SpecModel

if TYPE_CHECKING:
    from experiments.spec_metrics import Metric, Metrics
    from experiments.spec_segments import Segment

# URL scheme -> the engine that runs the query (experiments.warehouse.engines)
SCHEMES = {
    "duckdb": "duckdb",
    "postgresql": "postgres",
    "postgres": "postgres",
    "postgresql+psycopg": "postgres",
    "chdb": "chdb",
    "clickhouse": "clickhouse",
    "clickhouse+http": "clickhouse",
    "clickhouse+https": "clickhouse",
}
ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62}){0,2}")
_QUERY = re.compile(r"\s*(select|with)\b", re.IGNORECASE)
DAY_S = 86_400.0


def _column(value: str) -> str:
    if not _COLUMN.fullmatch(value):
        raise ValueError(f"column {value!r} must be a plain identifier (letters, digits, '_')")
    return value


def _relation(value: str) -> str:
    """A table name (`events`, `analytics.events`) or a query (`SELECT ...`, `WITH ...`)."""
    value = value.strip().rstrip(";").strip()
    if _TABLE.fullmatch(value) or (_QUERY.match(value) and ";" not in value):
        return value
    raise ValueError(
        f"{value[:80]!r} is neither a table name ([schema.]table) nor one query starting with"
        " SELECT or WITH"
    )


def _connection(value: str) -> str:
    if ENV_VAR.fullmatch(value):
        return value
    parts = urlsplit(value)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"connection {value[:80]!r}: give a URL with one of the schemes"
            f" {sorted(SCHEMES)}, or the name of an environment variable holding one"
        )
    if parts.password:
        raise ValueError(
            "connection: the URL carries a password, and the spec is served and audited; put"
            " the URL in an environment variable and give its name here"
        )
    return value


def is_query(relation: str) -> bool:
    """A relation that is a query, not a table name."""
    return bool(_QUERY.match(relation))


Column = Annotated[str, AfterValidator(_column)]
Relation = Annotated[str, AfterValidator(_relation)]


class ExposureColumns(SpecModel):
    unit: Column = "unit"
    variant: Column = "variant"
    timestamp: Column = "timestamp"
    # With it, only rows whose value is the experiment's name are read.
    experiment: Column | None = None
    # Segment attribute -> column; a declared segment not listed is read from its own name.
    segments: dict[Name, Column] = Field(default_factory=dict)
    # Metric -> a column holding the unit's pre-period value, counted as a `metric~pre` event.
    covariates: dict[Name, Column] = Field(default_factory=dict)


class EventColumns(SpecModel):
    event_id: Column = "event_id"
    unit: Column = "unit"
    metric: Column = "metric"
    value: Column = "value"
    timestamp: Column = "timestamp"
    experiment: Column | None = None


class SourceColumns(SpecModel):
    exposures: ExposureColumns = ExposureColumns()
    events: EventColumns = EventColumns()


class SqlSource(SpecModel):
    kind: Literal["sql"]
    connection: Annotated[str, AfterValidator(_connection)]
    exposures: Relation
    events: Relation
    columns: SourceColumns = SourceColumns()
    # `epoch`: unix seconds (numbers); `timestamp`: the engine's timestamp type.
    timestamps: Literal["epoch", "timestamp"] = "epoch"
    # A look sooner than this after the last query answers with that query's result.
    min_interval: Number = Field(default=60.0, ge=0, le=DAY_S, allow_inf_nan=False)
    # How long before the phase started an event may lie and still be read (as a covariate).
    pre_period: Number = Field(default=14 * DAY_S, ge=0, le=366 * DAY_S, allow_inf_nan=False)
    # How many seconds a query may run before the look fails with a timeout.
    timeout: Number = Field(default=120.0, gt=0, le=3600, allow_inf_nan=False)

    @property
    def engine(self) -> str:
        """The engine as the URL names it; '' while the connection is an environment variable
        (read when the query runs)."""
        return (
            "" if ENV_VAR.fullmatch(self.connection) else SCHEMES[urlsplit(self.connection).scheme]
        )


def event_metrics(metric: Metric) -> tuple[str, ...]:
    """The event metrics a declared metric is computed from: its own, or a ratio's parts."""
    if metric.numerator is not None and metric.denominator is not None:
        return (metric.numerator, metric.denominator)
    return (metric.name,)


def sources_of(source: SqlSource | None, metrics: Metrics | None) -> dict[str, SqlSource | None]:
    """Event metric -> where it is read (None: the store), checked to be one place each."""
    where: dict[str, SqlSource | None] = {}
    declared = () if metrics is None else (metrics.primary, *metrics.secondary, *metrics.guardrails)
    for metric in declared:
        chosen = metric.source or source
        for name in event_metrics(metric):
            if name in where and where[name] != chosen:
                raise ValueError(
                    f"metrics: {name!r} is read from two sources ({metric.name!r} names a"
                    " different one than another metric using it); a metric's events are"
                    " read in one place"
                )
            where[name] = chosen
    return where


def check_sources(
    source: SqlSource | None, metrics: Metrics | None, segments: Sequence[Segment]
) -> None:
    where = sources_of(source, metrics)
    declared = {s.name for s in segments}
    for sql in {id(s): s for s in (source, *where.values()) if s is not None}.values():
        cols = sql.columns.exposures
        for attribute in cols.segments:
            if attribute not in declared:
                raise ValueError(
                    f"source.columns.exposures.segments: {attribute!r} is not a declared"
                    f" segment {sorted(declared)}"
                )
        for metric in cols.covariates:
            if where.get(metric) != sql:
                raise ValueError(
                    f"source.columns.exposures.covariates: {metric!r} is not an event metric"
                    " read from this source"
                )
