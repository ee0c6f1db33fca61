"""Inputs at the edge of what the normal approximation covers, so that `decide` still decides
(docs/statistics.md §11), and inputs no experiment can produce, which are refused.

- An arm with 0 % or 100 % conversions has the plug-in variance p̂(1 − p̂) = 0.  Taken as it
  is, a broken candidate (0 of 24,000) would rest on the control's variance alone; refusing it
  (the old burn-in rule "one converted and one unconverted unit") left a broken model at 50 %
  of the traffic forever.  Such an arm gets a ½-success continuity prior instead,
  p̃ = (x + ½)/(n + 1), whose variance p̃(1 − p̃) ≈ ½/n is about what one conversion in 2n
  would give: the interval stays honest for a rare event and still closes on a dead arm.
- Two constant arms (zero variance in both) know their difference exactly; `zero_variance`
  marks them and `decide.evaluate` gives them a point interval (p = 0 when the constants
  differ) instead of the mixture's "no information".  A constant read through the power sums
  of a large mean may be rounding rather than a constant: stores supply `m2` for that
  (docs/statistics.md §3).
- A relative lift over a control mean that is 0 at the metric's own scale is undefined (a
  control mean of 1e-18 printed a lift of +1.4e18 %): the pair is judged on the absolute
  difference, with a reason.
"""

from __future__ import annotations

from analysis.msprt import Kind, arm_variance
from analysis.stats import ArmStats
from experiments.spec import Metric, MetricKind

# |control mean| at or below this fraction of the metric's scale leaves the lift undefined.
LIFT_EPSILON = 1e-6


def check_arm(metric: Metric, variant: str, arm: ArmStats) -> None:
    """Refuse sufficient statistics no arm can have, naming the metric and the arm (negative
    or non-finite counts ArmStats refuses itself; `ExperimentStats.from_report` names them)."""
    where = f"metric {metric.name!r}, arm {variant!r}"
    if metric.kind is MetricKind.CONVERSION and not 0 <= arm.sum <= arm.n:
        raise ValueError(
            f"{where}: {arm.sum:g} conversions among {arm.n:g} units; a conversion sum counts"
            " converted units, so it must lie between 0 and n"
        )


def judged_variance(arm: ArmStats, kind: Kind) -> float:
    """The arm's variance as `decide` uses it: the plug-in one, except for an arm with 0 % or
    100 % conversions, which gets the ½-success continuity prior (module docstring)."""
    if kind == "proportion" and arm.n > 0 and arm.sum in (0.0, arm.n):
        p = (min(arm.sum, arm.n - arm.sum) + 0.5) / (arm.n + 1)
        return p * (1.0 - p)
    return arm_variance(arm, kind)


def lift_undefined(a: ArmStats, b: ArmStats, kind: Kind) -> str | None:
    """Why the relative lift of b over control a is undefined, or None when it is defined."""
    scale = max(abs(b.mean), judged_variance(a, kind) ** 0.5, judged_variance(b, kind) ** 0.5)
    if a.mean == 0 or abs(a.mean) <= LIFT_EPSILON * scale:
        return (
            f"the control mean {a.mean:.3g} is zero at the metric's scale ({scale:.3g}), so a"
            " relative lift is undefined: the absolute difference is judged instead"
        )
    return None
