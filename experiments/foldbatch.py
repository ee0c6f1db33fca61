"""Folding a batch read from the log into one partition's per-arm statistics.

The stores append exposures and events to a durable log and acknowledge; folders read the log
in batches, one partition (a hash of the unit) at a time, and call `fold_batch` with the state
of the batch's units.  A unit's exposure and events always land in the same partition, so a
partition's statistics are written by one folder at a time and no write touches more than
its partition; readers add the partitions' partial sums (`merge_partials`).

What counts, per unit (see `folding` for the statistics kept):
- the unit's first exposure folded in the phase fixes its arm: the variant it was served;
- an event is credited to the metric's post-exposure series if it happened no earlier than
  `SKEW_S` before the exposure, else to its pre-period series `metric~pre` (the covariate),
  never to the effect.  Events of a unit not exposed yet wait in its state (`pending`) and are
  classified when the exposure arrives, so the outcome does not depend on which arrives first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np

from experiments.distributions import bins
from experiments.folding import PRE, Event, FoldPlan, pair_key, stat_key
from experiments.segments import CELL, Resolver, cells_of

# How far an event may precede its unit's exposure and still count as after it: the clocks of
# clients (event times) and of the assignment service (exposure times) differ a little.
SKEW_S = 60.0
# Events of a unit that is never exposed wait in its state; beyond this many, the oldest are
# taken as pre-period ones (a unit that active before its exposure is not new to the product).
PENDING_CAP = 256


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode


class Exposure(msgspec.Struct, frozen=True, gc=False):
    """A unit's exposure as served: the variant, when, and the spec generation that chose it
    (0 when the sender did not say).  A Struct for the same reason as `folding.Event`: a fold
    builds one per log entry."""

    unit: str
    variant: str
    at: float
    generation: int = 0
    segments: tuple[tuple[str, str], ...] = ()  # the unit's segment values, if it says


@dataclass(slots=True)
class UnitState:
    """What a partition keeps per unit and phase: its arm once exposed, the raw totals of each
    series credited so far, its events still waiting for an exposure, and its segment values
    (resolved: experiments.segments)."""

    arm: str = ""
    exposed_at: float = math.nan
    totals: dict[str, float] = field(default_factory=dict)
    pending: list[tuple[str, float, float]] = field(default_factory=list)  # series, value, time
    segments: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        at = None if math.isnan(self.exposed_at) else self.exposed_at
        fields = [self.arm, at, self.totals, self.pending]
        return _ENCODE([*fields, self.segments] if self.segments else fields)

    @classmethod
    def decode(cls, text: str | None) -> UnitState:
        if text is None:
            return cls()
        arm, at, totals, pending, *segments = _DECODE(text)
        return cls(
            arm, math.nan if at is None else at, totals, [tuple(p) for p in pending],
            segments[0] if segments else {},
        )  # fmt: skip

    @property
    def cells(self) -> tuple[str, ...]:
        if not self.segments:  # most units: their arm alone, built without a call
            return (self.arm,) if self.arm else ()
        return cells_of(self.arm, self.segments)

    def credit(self, plan: FoldPlan, series: str, value: float, at: float) -> None:
        """Add an event to the unit's totals (conversions count events), or keep it waiting."""
        if not series.endswith(PRE):
            if not self.arm:
                self.pending.append((series, value, at))
                if len(self.pending) > PENDING_CAP:
                    self.pending.sort(key=lambda p: p[2])
                    early, early_value, _ = self.pending.pop(0)
                    self._add(plan, early + PRE, early_value)
                return
            if at < self.exposed_at - SKEW_S:
                series += PRE
        self._add(plan, series, value)

    def _add(self, plan: FoldPlan, series: str, value: float) -> None:
        self.totals[series] = self.totals.get(series, 0.0) + (
            1.0 if series in plan.conversion else value
        )

    def expose(self, plan: FoldPlan, exposure: Exposure) -> bool:
        if self.arm:
            return False  # the first exposure folded stays
        self.arm, self.exposed_at = exposure.variant, exposure.at
        waiting, self.pending = self.pending, []
        for series, value, at in waiting:
            self.credit(plan, series, value, at)
        return True


@dataclass
class FoldResult:
    changed_stats: set[str]
    changed_shifts: set[str]
    new_exposures: int


def fold_batch(
    plan: FoldPlan,
    states: dict[str, UnitState],
    exposures: Sequence[Exposure],
    events: Sequence[Event],
    stats: dict[str, float],
    shifts: dict[str, float],
) -> FoldResult:
    """Apply a batch (in log order) to `states` (every unit of the batch, loaded or new) and to
    the partition's `stats` and `shifts`, in place: each changed unit's old values leave the
    cells it was in (its arm, its segments) and its new ones enter the cells it is in now, in
    arrays over the batch's units.  A counted unit's cells only ever grow: its arm is fixed
    by its first exposure, and a value by the exposure or, once exposed, by its first mention
    (experiments.segments)."""
    units = list(states)
    old_cells = [states[u].cells for u in units]
    old = _values(plan, [states[u].totals for u in units])
    resolver = Resolver(plan.segments, stats) if plan.segments else None
    new_count = 0
    for x in exposures:
        state = states[x.unit]
        if resolver is not None and x.segments:
            # Until the unit is exposed it is in no cell: its exposure's values win.
            resolver.merge(state.segments, x.segments, override=not state.arm)
        new_count += state.expose(plan, x)
    for e in events:
        if resolver is not None and e.segments:
            resolver.merge(states[e.unit].segments, e.segments)
        states[e.unit].credit(plan, e.series, e.value, e.timestamp)
    new = _values(plan, [states[u].totals for u in units])
    new_cells = [states[u].cells for u in units]
    moved = (old != new).any(axis=1)
    rows = [i for i, c in enumerate(new_cells) if c and (moved[i] or c != old_cells[i])]
    result = FoldResult(set(), set(), new_count)
    if not rows:
        return result
    old, new = old[rows], new[rows]
    arms = np.array([new_cells[i][0] for i in rows])
    was = np.array([bool(old_cells[i]) for i in rows])
    every = set(arms.tolist())
    if resolver is not None:
        cells_now = [set(new_cells[i]) for i in rows]
        cells_before = [set(old_cells[i]) for i in rows]
        every.update(c for cs in cells_now for c in cs)
    k = _shifts(plan, stats, shifts, new, every, result)
    bump = _Bumper(stats, result.changed_stats)
    col = {s: j for j, s in enumerate(plan.series)}
    for cell in sorted(every):
        if CELL in cell:
            now_in = np.array([cell in cs for cs in cells_now])
            before = np.array([cell in cs for cs in cells_before])
        else:  # an arm: every unit of the rows is in one, and was if it had any cell before
            now_in = arms == cell
            before = now_in & was
        bump(stat_key(cell, "n"), float(now_in.sum() - before.sum()))
        terms_new, terms_old = _terms(new[now_in], k), _terms(old[before], k)
        for part, t_new, t_old in zip("NSQ", terms_new, terms_old, strict=True):
            for s, delta in zip(plan.series, t_new.sum(axis=0) - t_old.sum(axis=0), strict=True):
                bump(stat_key(cell, f"{part}|{s}"), delta)
        for a, b in plan.pairs:
            ia, ib = col[a], col[b]
            for part, p_new, p_old in zip(
                "PABC",
                _pair_terms(terms_new, ia, ib),
                _pair_terms(terms_old, ia, ib),
                strict=True,
            ):
                bump(stat_key(cell, pair_key(a, b, part)), p_new - p_old)
        if CELL not in cell:  # an arm's distribution; its segments' would multiply the keys
            for s in plan.histograms:
                counts = bins(new[now_in, col[s]])
                counts.subtract(bins(old[before, col[s]]))
                for label, delta in counts.items():
                    bump(stat_key(cell, f"H|{s}|{label}"), float(delta))
    return result


def _values(plan: FoldPlan, totals: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Unit values per series: the total, or for conversions whether there was any event."""
    out = np.zeros((len(totals), len(plan.series)))
    col = {s: j for j, s in enumerate(plan.series)}
    for i, t in enumerate(totals):
        for s, v in t.items():
            j = col.get(s)
            if j is not None:
                out[i, j] = v
    conv = np.array([s in plan.conversion for s in plan.series], dtype=bool)
    out[:, conv] = np.minimum(out[:, conv], 1.0)
    return out


def _shifts(
    plan: FoldPlan,
    stats: dict[str, float],
    shifts: dict[str, float],
    new: np.ndarray,
    cells: set[str],
    result: FoldResult,
) -> np.ndarray:
    """The shift of each series; chosen anew (its sums cleared to exactly 0) while no unit of
    the partition is non-zero in it, from a non-zero value of this batch."""
    k = np.zeros(len(plan.series))
    variants = {key.split("|", 1)[0] for key in stats if key.endswith("|n")} | cells
    for j, s in enumerate(plan.series):
        nonzero = sum(stats.get(stat_key(v, f"N|{s}"), 0.0) for v in variants)
        if s in shifts and nonzero:
            k[j] = shifts[s]
            continue
        values = new[:, j][new[:, j] != 0]
        if not len(values):
            k[j] = shifts.get(s, 0.0)
            continue
        k[j] = shifts[s] = float(values[0])
        result.changed_shifts.add(s)
        for v in variants:
            names = [f"S|{s}", f"Q|{s}"] + [
                pair_key(a, b, part) for a, b in plan.pairs_of(s) for part in "PABC"
            ]
            for name in names:
                key = stat_key(v, name)
                if stats.get(key, 0.0) != 0.0:
                    stats[key] = 0.0
                    result.changed_stats.add(key)
    return k


def _terms(values: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit and series: non-zero (1/0), v − K and (v − K)² where non-zero, else 0."""
    nz = values != 0
    d = np.where(nz, values - k, 0.0)
    return nz.astype(float), d, d * d


def _pair_terms(
    terms: tuple[np.ndarray, np.ndarray, np.ndarray], ia: int, ib: int
) -> tuple[float, float, float, float]:
    nz, d, _ = terms
    both = (nz[:, ia] * nz[:, ib]).astype(bool)
    da, db = d[both, ia], d[both, ib]
    return float(both.sum()), float(da.sum()), float(db.sum()), float((da * db).sum())


class _Bumper:
    def __init__(self, stats: dict[str, float], changed: set[str]) -> None:
        self.stats, self.changed = stats, changed

    def __call__(self, key: str, delta: float) -> None:
        if delta:
            self.stats[key] = self.stats.get(key, 0.0) + float(delta)
            self.changed.add(key)


def merge_partials(
    parts: Sequence[tuple[Mapping[str, float], Mapping[str, float]]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Add partitions' statistics.  Each partition has its own shift K per series; its sums are
    re-shifted to a common K′ (that of the partition with most non-zero units) before adding:
    with δ = K − K′, S′ = S + Nδ and Q′ = Q + 2δS + Nδ², and for a pair A′ = A + Pδa,
    B′ = B + Pδb, C′ = C + δb·A + δa·B + P·δa·δb.  δ is a difference of two values of the
    series, so the re-shifted sums stay as well conditioned as the partitions' own."""
    if len(parts) == 1:
        return dict(parts[0][0]), dict(parts[0][1])
    common: dict[str, float] = {}
    weight: dict[str, float] = {}
    for stats, shifts in parts:
        nonzero: dict[str, float] = {}
        for key, value in stats.items():
            _, kind, *rest = key.split("|")
            if kind == "N":
                nonzero[rest[0]] = nonzero.get(rest[0], 0.0) + value
        for s, k in shifts.items():
            if s not in common or nonzero.get(s, 0.0) > weight[s]:
                common[s], weight[s] = k, nonzero.get(s, 0.0)
    total: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        total[key] = total.get(key, 0.0) + value

    for stats, shifts in parts:
        delta = {s: shifts[s] - common[s] for s in shifts}
        for key, count in stats.items():
            # The sums are re-shifted from the counts' keys: a sum that is 0 is not stored.
            variant, kind, *rest = key.split("|")
            if kind in ("n", "N", "P", "H"):
                add(key, count)
            if kind == "N":
                s, d = rest[0], delta.get(rest[0], 0.0)
                sq = stats.get(f"{variant}|S|{s}", 0.0), stats.get(f"{variant}|Q|{s}", 0.0)
                add(f"{variant}|S|{s}", sq[0] + count * d)
                add(f"{variant}|Q|{s}", sq[1] + 2 * d * sq[0] + count * d * d)
            elif kind == "P":
                a, b = rest
                da, db = delta.get(a, 0.0), delta.get(b, 0.0)
                sa, sb, c = (stats.get(f"{variant}|{p}|{a}|{b}", 0.0) for p in "ABC")
                add(f"{variant}|A|{a}|{b}", sa + count * da)
                add(f"{variant}|B|{a}|{b}", sb + count * db)
                add(f"{variant}|C|{a}|{b}", c + db * sa + da * sb + count * da * db)
    return total, common
