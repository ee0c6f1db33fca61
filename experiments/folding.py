"""Per-unit folding of events into per-arm sufficient statistics.

The unit (user) is the statistical unit: an arm's statistics are over its exposed units, each
contributing one value per series — the unit's total (a `sum`/`mean` metric) or 1 if it has
any event (a `conversion` metric) — and 0 while it has none.  Every metric has two series: its
post-exposure values `m` and its pre-period values `m~pre` (the CUPED covariate).

Per arm and series the store keeps `n` (exposed units), `N` (exposed units whose value is not
0) and over those, with a per-series shift `K` (a non-zero unit value of the phase), the sums
`S = Σ(v − K)` and `Q = Σ(v − K)²`.  Units at 0 are counted, not summed: a unit's value
jumping from 0 to 1e9 then never passes through a sum of squares of size 1e18 that later has to
cancel, and `m2 = Σ(v − v̄)²` — the non-zero group's `Q − S²/N` merged with the zeros by Chan's
formula — stays exact for large values (revenue in cents, timestamps), the pitfall in
docs/statistics.md §3.  While a series has no non-zero unit in any arm its shift is chosen anew,
so a huge value that went back to 0 (a refund) leaves no trace.  For the pairs analyses need (a
metric and its covariate, for CUPED; a ratio's numerator and denominator with their covariates,
for the delta method) the same is kept over the units where both values are non-zero
(`P`, `A`, `B`, `C` = count, Σ(a − Ka), Σ(b − Kb), Σ(a − Ka)(b − Kb)), from which `export`
merges the stable co-moment `Σ(a − ā)(b − b̄)` over all units.

How a batch of the log changes these sums, per partition of the units, and how partitions'
sums are added, is in `foldbatch`; a unit never exposed in the phase never counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import msgspec

from experiments.segments import CELL, split_cells
from experiments.spec import ExperimentSpec, MetricKind
from experiments.spec_segments import Segment

PRE = "~pre"  # suffix of the pre-period (covariate) series of a metric


class Event(msgspec.Struct, frozen=True, gc=False):
    """One business-metric event, validated.  `series` is the metric, or `metric~pre` for a
    pre-period (covariate) value; `timestamp` is when it happened (unix seconds).

    A msgspec Struct rather than a frozen dataclass: ingest builds one per event and a fold one
    per log entry, and a frozen dataclass's `__init__` (object.__setattr__ per field) cost ten
    times as much.  gc=False: it holds only strings and floats, never a cycle."""

    event_id: str
    unit: str
    series: str
    value: float
    timestamp: float
    segments: tuple[tuple[str, str], ...] = ()  # the unit's segment values, if it says


@dataclass(frozen=True)
class FoldPlan:
    """Which series exist for a spec, which are conversions, and which pairs need cross sums."""

    series: tuple[str, ...]
    conversion: frozenset[str]
    pairs: tuple[tuple[str, str], ...]
    ratios: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # ratio -> (num, den)
    segments: tuple[Segment, ...] = ()
    # The series whose unit values are also binned (experiments.distributions); none for a
    # phase whose plan was stored before the bins existed.
    histograms: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: ExperimentSpec) -> FoldPlan:
        event_metrics: dict[str, bool] = {}  # name -> is conversion
        ratios: dict[str, tuple[str, str]] = {}
        metrics = spec.metrics
        declared = (
            () if metrics is None else (metrics.primary, *metrics.secondary, *metrics.guardrails)
        )
        for m in declared:
            if m.kind is MetricKind.RATIO:
                assert m.numerator is not None  # checked by the spec
                assert m.denominator is not None
                ratios[m.name] = (m.numerator, m.denominator)
                for part in (m.numerator, m.denominator):
                    event_metrics.setdefault(part, False)
            else:
                event_metrics[m.name] = m.kind is MetricKind.CONVERSION
        series = tuple(s for name in event_metrics for s in (name, name + PRE))
        conversion = frozenset(
            s for name, conv in event_metrics.items() if conv for s in (name, name + PRE)
        )
        pairs: dict[tuple[str, str], None] = {(name, name + PRE): None for name in event_metrics}
        for num, den in ratios.values():
            pairs.update(dict.fromkeys(combinations((num, den, num + PRE, den + PRE), 2)))
        binned = tuple(name for name, conv in event_metrics.items() if not conv)
        return cls(series, conversion, tuple(pairs), ratios, spec.segments, binned)

    def to_json(self) -> str:
        return json.dumps(
            {
                "series": self.series,
                "conversion": sorted(self.conversion),
                "pairs": self.pairs,
                "ratios": dict(self.ratios),
                "segments": [s.model_dump(mode="json") for s in self.segments],
                "histograms": self.histograms,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FoldPlan:
        data = json.loads(text)
        return cls(
            tuple(data["series"]),
            frozenset(data["conversion"]),
            tuple((a, b) for a, b in data["pairs"]),
            {k: (v[0], v[1]) for k, v in data["ratios"].items()},
            tuple(Segment.model_validate(s) for s in data.get("segments", ())),
            tuple(data.get("histograms", ())),
        )

    def accepts(self, metric: str) -> bool:
        return metric in self.series and not metric.endswith(PRE)

    def pairs_of(self, series: str) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.pairs if series in (a, b)]


def stat_key(variant: str, name: str) -> str:
    """Key of one number in a phase's statistics: `variant|n`, `variant|S|click`, ..."""
    return f"{variant}|{name}"


def pair_key(a: str, b: str, part: str) -> str:
    """`P|a|b` (units with both non-zero), `A|a|b`, `B|a|b` (their shifted sums), `C|a|b`."""
    return f"{part}|{a}|{b}"


class _ArmView:
    """One arm's statistics as plain sums and stable central moments."""

    def __init__(self, variant: str, stats: Mapping[str, float], shifts: Mapping[str, float]):
        self.variant, self.stats, self.shifts = variant, stats, shifts
        self.n = stats[stat_key(variant, "n")]

    def get(self, name: str) -> float:
        return self.stats.get(stat_key(self.variant, name), 0.0)

    def sums(self, s: str) -> tuple[float, float, float]:
        """Σv, Σv² and m2 = Σ(v − v̄)² over all n units, from N, S, Q over the non-zero ones."""
        k, nz = self.shifts.get(s, 0.0), self.get(f"N|{s}")
        shifted, q = self.get(f"S|{s}"), self.get(f"Q|{s}")
        total, total_sq = shifted + nz * k, q + 2 * k * shifted + nz * k * k
        if nz == 0:
            return total, total_sq, 0.0
        # Chan et al.'s merge of the non-zero group (mean K + S/N, m2 Q − S²/N) with the zeros.
        mean_nz = k + shifted / nz
        m2 = max(q - shifted * shifted / nz, 0.0) + mean_nz * mean_nz * nz * (self.n - nz) / self.n
        return total, total_sq, m2

    def cross(self, a: str, b: str) -> tuple[float, float]:
        """Σab and the co-moment Σ(a − ā)(b − b̄) over all n units.  The units fall into four
        groups — both non-zero, only a, only b, neither — whose within-group co-moments are
        C − A·B/P, 0, 0, 0; the between-group terms use group means (Chan's merge again)."""
        ka, kb = self.shifts.get(a, 0.0), self.shifts.get(b, 0.0)
        p, sa, sb, c = (self.get(pair_key(a, b, part)) for part in "PABC")
        total = c + ka * sb + kb * sa + p * ka * kb
        if self.n == 0:
            return total, 0.0
        na, nb = self.get(f"N|{a}"), self.get(f"N|{b}")
        sum_a, sum_b = self.get(f"S|{a}") + na * ka, self.get(f"S|{b}") + nb * kb
        mean_a, mean_b = sum_a / self.n, sum_b / self.n
        groups = [  # (units, mean of a, mean of b) of each group
            (p, ka + sa / p if p else 0.0, kb + sb / p if p else 0.0),
            (na - p, ka + (self.get(f"S|{a}") - sa) / (na - p) if na > p else 0.0, 0.0),
            (nb - p, 0.0, kb + (self.get(f"S|{b}") - sb) / (nb - p) if nb > p else 0.0),
            (self.n - na - nb + p, 0.0, 0.0),
        ]
        within = c - sa * sb / p if p else 0.0
        between = sum(size * (ma - mean_a) * (mb - mean_b) for size, ma, mb in groups if size)
        return total, within + between


def variants_of(stats: Mapping[str, float]) -> list[str]:
    """The arms (not their segments' cells, experiments.segments)."""
    arms = {key.split("|", 1)[0] for key in stats if key.endswith("|n")}
    return sorted(a for a in arms if CELL not in a)


def exposures_of(stats: Mapping[str, float]) -> dict[str, int]:
    """Exposed units per variant."""
    return {v: int(stats[stat_key(v, "n")]) for v in variants_of(stats)}


def export(
    plan: FoldPlan, stats: Mapping[str, float], shifts: Mapping[str, float]
) -> dict[str, Any]:
    """Per arm: exposures and, per metric, `n`, `sum`, `sum_sq` and the stable `m2 = Σ(y − ȳ)²`;
    of the pre-period covariate `sum_x`, `sum_x2`, `m2_x`, and `sum_xy` with the stable
    co-moment `c_xy = Σ(x − x̄)(y − ȳ)`.  Per ratio metric the same sums and co-moments of every
    pair among numerator, denominator and their covariates (`pairs`), and `sum_num_den`."""
    arms: dict[str, Any] = {}
    for variant in variants_of(stats):
        arm = _ArmView(variant, stats, shifts)
        n = int(arm.n)
        metrics: dict[str, Any] = {}
        for s in plan.series:
            if s.endswith(PRE):
                continue
            total, total_sq, m2 = arm.sums(s)
            x, x2, m2_x = arm.sums(s + PRE)
            xy, c_xy = arm.cross(s, s + PRE)
            metrics[s] = {
                "n": n,
                "sum": total,
                "sum_sq": total_sq,
                "m2": m2,
                "sum_x": x,
                "sum_x2": x2,
                "m2_x": m2_x,
                "sum_xy": xy,
                "c_xy": c_xy,
            }
        for name, (num, den) in plan.ratios.items():
            pairs = {
                f"{a}|{b}": dict(zip(("sum", "comoment"), arm.cross(a, b), strict=True))
                for a, b in plan.pairs
                if {a, b} <= {num, den, num + PRE, den + PRE}
            }
            metrics[name] = {
                "n": n,
                "numerator": num,
                "denominator": den,
                "sum_num_den": pairs[f"{num}|{den}"]["sum"],
                "c_num_den": pairs[f"{num}|{den}"]["comoment"],
                "pairs": pairs,
            }
        arms[variant] = {"exposures": n, "metrics": metrics}
    return arms


def export_segments(
    plan: FoldPlan, stats: Mapping[str, float], shifts: Mapping[str, float]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per segment attribute and value, its cells' statistics as `export` gives an arm's."""
    return {
        attribute: {value: export(plan, cells, shifts) for value, cells in sorted(values.items())}
        for attribute, values in sorted(split_cells(stats).items())
    }
