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

from experiments.folding import PRE, Event, FoldPlan, pair_key, stat_key

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


@dataclass(slots=True)
class UnitState:
    """What a partition keeps per unit and phase: its arm once exposed, the raw totals of each
    series credited so far, and its events still waiting for an exposure."""

    arm: str = ""
    exposed_at: float = math.nan
    totals: dict[str, float] = field(default_factory=dict)
    pending: list[tuple[str, float, float]] = field(default_factory=list)  # series, value, time

    def encode(self) -> str:
        at = None if math.isnan(self.exposed_at) else self.exposed_at
        return _ENCODE([self.arm, at, self.totals, self.pending])

    @classmethod
    def decode(cls, text: str | None) -> UnitState:
        if text is None:
            return cls()
        arm, at, totals, pending = _DECODE(text)
        return cls(arm, math.nan if at is None else at, totals, [tuple(p) for p in pending])

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
    the partition's `stats` and `shifts`, in place: each changed unit's old values leave its arm
    and its new ones enter, in arrays over the batch's units."""
    units = list(states)
    series = plan.series
    old_arm = [states[u].arm for u in units]
    old = _values(plan, [states[u].totals for u in units])
    new_count = sum(states[x.unit].expose(plan, x) for x in exposures)
    for e in events:
        states[e.unit].credit(plan, e.series, e.value, e.timestamp)
    new = _values(plan, [states[u].totals for u in units])
    arm = [states[u].arm for u in units]
    moved = (old != new).any(axis=1)
    rows = [i for i, a in enumerate(arm) if a and (not old_arm[i] or moved[i])]
    result = FoldResult(set(), set(), new_count)
    if not rows:
        return result
    old, new = old[rows], new[rows]
    was = np.array([bool(old_arm[i]) for i in rows])
    arms = np.array([arm[i] for i in rows])
    k = _shifts(plan, stats, shifts, new, arms, result)
    bump = _Bumper(stats, result.changed_stats)
    for variant in dict.fromkeys(arms.tolist()):
        now_in = arms == variant
        before = now_in & was
        bump(stat_key(variant, "n"), float(now_in.sum() - before.sum()))
        terms_new, terms_old = _terms(new[now_in], k), _terms(old[before], k)
        for part, t_new, t_old in zip("NSQ", terms_new, terms_old, strict=True):
            for s, delta in zip(series, t_new.sum(axis=0) - t_old.sum(axis=0), strict=True):
                bump(stat_key(variant, f"{part}|{s}"), delta)
        col = {s: j for j, s in enumerate(series)}
        for a, b in plan.pairs:
            ia, ib = col[a], col[b]
            for part, p_new, p_old in zip(
                "PABC",
                _pair_terms(terms_new, ia, ib),
                _pair_terms(terms_old, ia, ib),
                strict=True,
            ):
                bump(stat_key(variant, pair_key(a, b, part)), p_new - p_old)
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
    arms: np.ndarray,
    result: FoldResult,
) -> np.ndarray:
    """The shift of each series; chosen anew (its sums cleared to exactly 0) while no unit of
    the partition is non-zero in it, from a non-zero value of this batch."""
    k = np.zeros(len(plan.series))
    variants = {key.split("|", 1)[0] for key in stats if key.endswith("|n")} | set(arms.tolist())
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
            if kind in ("n", "N", "P"):
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
