"""What an experiment measures and how it is judged: the metrics (primary, secondary,
guardrails with their direction and a one-sided non-inferiority margin or a two-sided
tolerance) and the analysis settings that `analysis.decide` reads (method, α, minimum effect,
burn-in, horizon, looks)."""

from __future__ import annotations

import math
from enum import StrEnum
from statistics import NormalDist
from typing import Annotated, Self

from pydantic import Field, Strict, model_validator

from experiments.spec_base import Name, Number, SpecModel, no_repeats
from experiments.spec_source import SqlSource

Count = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
DEFAULT_N_STAR = 10_000
# n* outside [N_STAR_LOW, N_STAR_HIGH × the horizon's units] is warned about (see
# AnalysisSettings.warnings): the interval at the horizon is then far wider than it could be.
N_STAR_LOW = 100
N_STAR_HIGH = 100


class MetricKind(StrEnum):
    CONVERSION = "conversion"
    SUM = "sum"
    MEAN = "mean"
    RATIO = "ratio"


class Direction(StrEnum):
    INCREASE = "increase"
    DECREASE = "decrease"


class Metric(SpecModel):
    name: Name
    kind: MetricKind
    direction: Direction = Direction.INCREASE
    numerator: Name | None = None
    denominator: Name | None = None
    # Non-inferiority margin for guardrails, relative to control (0.01 = 1 % worse tolerated).
    margin: Number | None = Field(default=None, ge=0, allow_inf_nan=False)
    # Two-sided tolerance for guardrails, relative to control (0.02: a shift of more than 2 %
    # either way is harm), for a metric that should not move at all, e.g. a model's mean score.
    tolerance: Number | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Where its events are read (a ratio's: both parts'); default: the spec's `source`.
    source: SqlSource | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if self.margin is not None and self.tolerance is not None:
            raise ValueError(
                f"metric {self.name!r} has both 'margin' (one-sided: worse by at most) and"
                " 'tolerance' (two-sided: moved either way by at most); give one of them"
            )
        return self

    @model_validator(mode="after")
    def _ratio_parts(self) -> Self:
        parts = self.numerator is not None and self.denominator is not None
        if self.kind is MetricKind.RATIO and not parts:
            raise ValueError("a ratio metric needs both 'numerator' and 'denominator'")
        if self.kind is not MetricKind.RATIO and (self.numerator or self.denominator):
            raise ValueError("'numerator' and 'denominator' are only for ratio metrics")
        if parts and self.numerator == self.denominator:
            raise ValueError("a ratio's numerator and denominator must be different metrics")
        return self


class Metrics(SpecModel):
    primary: Metric
    secondary: tuple[Metric, ...] = ()
    guardrails: tuple[Metric, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [m.name for m in (self.primary, *self.secondary, *self.guardrails)]
        no_repeats(names, "metric names")  # loc is "metrics" already
        return self

    @model_validator(mode="after")
    def _tolerance_on_guardrails(self) -> Self:
        # Only a guardrail is judged against its bound; on the primary or a secondary metric a
        # tolerance would be silently ignored.
        roles = [("primary", self.primary)] + [
            (f"secondary.{i}", m) for i, m in enumerate(self.secondary)
        ]
        for where, metric in roles:
            if metric.tolerance is not None:
                raise ValueError(
                    f"'tolerance' (metrics.{where}.tolerance) is only for metrics in"
                    f" 'guardrails'; {metric.name!r} is not a guardrail"
                )
        return self


class Method(StrEnum):
    # Mixture SPRT / confidence sequence: valid however often it is looked at.
    SEQUENTIAL = "sequential"
    # Lan–DeMets boundaries at `looks` planned, equally spaced information fractions.
    GROUP_SEQUENTIAL = "group-sequential"


class SegmentHarm(StrEnum):
    FLAG = "flag"  # a segment's harm is shown; the rollout goes by the whole population
    ROLLBACK = "rollback"  # a harm confined to one segment is harm for the rollout too


class SpendingKind(StrEnum):
    OBF = "obf"
    POCOCK = "pocock"
    POWER = "power"


class AnalysisSettings(SpecModel):
    method: Method = Method.SEQUENTIAL
    alpha: Number = Field(default=0.05, gt=0, lt=0.5, allow_inf_nan=False)
    power: Number = Field(default=0.8, gt=0, lt=1, allow_inf_nan=False)
    # The smallest relative effect worth acting on (0.02 = 2 % of the control mean): an
    # interval inside ±mde ends the test as "no difference".
    mde: Number | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Judge the relative lift b/a − 1 (tested as the log ratio) instead of the difference b − a.
    relative: Flag = False
    cuped: Flag = False
    min_units_per_arm: Count = Field(default=100, ge=2)  # burn-in: no verdict before this
    max_units_per_arm: Count | None = Field(default=None, ge=2)  # the horizon
    # The mixture's tuning: total units of both arms where the interval is tightest.
    n_star: Count | None = Field(default=None, ge=2)
    looks: Count = Field(default=5, ge=1, le=100)
    spending: SpendingKind = SpendingKind.OBF
    rho: Number = Field(default=2.0, gt=0, le=20, allow_inf_nan=False)  # for spending "power"
    srm_alpha: Number = Field(default=0.001, gt=0, lt=0.5, allow_inf_nan=False)
    segment_harm: SegmentHarm = SegmentHarm.FLAG

    @model_validator(mode="after")
    def _horizon(self) -> Self:
        if self.max_units_per_arm is not None and self.max_units_per_arm < self.min_units_per_arm:
            raise ValueError(
                f"max_units_per_arm ({self.max_units_per_arm}) is below min_units_per_arm"
                f" ({self.min_units_per_arm})"
            )
        if self.method is Method.GROUP_SEQUENTIAL and self.max_units_per_arm is None:
            raise ValueError("the group-sequential method needs max_units_per_arm (its horizon)")
        return self

    @property
    def mixture_n(self) -> int:
        """n* of the mixture: as set, else both arms at the horizon, else 10,000."""
        if self.n_star is not None:
            return self.n_star
        if self.max_units_per_arm is not None:
            return 2 * self.max_units_per_arm
        return DEFAULT_N_STAR

    def warnings(self) -> list[str]:
        """Settings that are valid but probably not meant: an n* below 100 units, or above 100×
        the horizon's units (both arms; 10,000 without a horizon).  The mixture is tightest
        near n* units, so far from it the interval at the horizon is wider than the tuned one;
        the warning quotes the power that leaves (`mixture_power`)."""
        if self.n_star is None:
            return []
        horizon = 2 * self.max_units_per_arm if self.max_units_per_arm else DEFAULT_N_STAR
        if N_STAR_LOW <= self.n_star <= N_STAR_HIGH * horizon:
            return []
        where = (
            f"below {N_STAR_LOW} units"
            if self.n_star < N_STAR_LOW
            else f"over {N_STAR_HIGH}× the horizon's {horizon} units"
        )
        width, tuned, power = mixture_power(self.n_star, horizon, self.alpha, self.power)
        return [
            f"analysis.n_star {self.n_star} is {where}: at {horizon} units the interval is"
            f" ±{width:.3g} standard errors against ±{tuned:.3g} with n_star {horizon}, so an"
            f" effect found with power {self.power:.0%} by the tuned test is found with power"
            f" {power:.1%}"
        ]


def mixture_radius(n_star: float, units: float, alpha: float) -> float:
    """The mixture interval's half-width in standard errors after `units` (both arms), with
    τ² = ρ² N v (docs/statistics.md §6): r = τ²/v = ρ² N, radius = √((1 + r)/r · ln((1 + r)/α²))."""
    r = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / n_star * units
    return math.sqrt((1 + r) / r * math.log((1 + r) / alpha**2))


def mixture_power(
    n_star: float, units: float, alpha: float, power: float
) -> tuple[float, float, float]:
    """(radius with n*, radius tuned to n* = units, power with n*) at a look after `units`: the
    effect δ = tuned radius + z_power standard errors is what the tuned interval excludes 0
    for with probability `power`; with n* it does so with Φ(δ − radius) (the far tail, below
    1e-6 here, is left out)."""
    width, tuned = mixture_radius(n_star, units, alpha), mixture_radius(units, units, alpha)
    normal = NormalDist()
    return width, tuned, normal.cdf(tuned + normal.inv_cdf(power) - width)
