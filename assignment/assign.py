"""Which variant a unit gets: overrides, then sticky record, then layer, coverage and arm.

The rules are specified in HASHING.md.  A spec is compiled once into lookup tables (integer
thresholds, prebuilt `Assignment` objects) and cached by identity, so the hot path is one or
two SHA-256 calls, a bisect and no allocation beyond the hashed string.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from assignment import hashing
from experiments.errors import InvalidUnitError
from experiments.names import unit_problem
from experiments.spec import BASIS_POINTS, ExperimentSpec, HashVersion
from experiments.store.protocol import StickyStore


class Reason(StrEnum):
    OVERRIDE_HEADER = "override-header"
    OVERRIDE_UNIT = "override-unit"
    STICKY = "sticky"
    LAYER = "layer"  # outside the experiment's layer slice
    COVERAGE = "coverage"  # not enrolled
    HASH = "hash"  # randomised into an arm
    # Not running: everyone but overrides gets the variant serving all traffic (the winner of
    # a promotion) or else the control.
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    variant: str
    in_experiment: bool  # part of the randomised sample (counts as an exposure)
    header_name: str
    header_value: str
    reason: Reason


Bucketer = Callable[[str], Assignment]


class _Compiled:
    """Everything `assign` needs from a spec, precomputed."""

    __slots__ = (
        "bucket",
        "header_overrides",
        "inactive",
        "spec",
        "sticky_salt",
        "unit_overrides",
        "variants",
    )

    def __init__(self, spec: ExperimentSpec) -> None:
        self.spec = spec  # keeps the spec alive, so its id() is not reused while cached

        def make(key: str, in_experiment: bool, reason: Reason) -> Assignment:
            value = spec.variant(key).header_value
            return Assignment(spec.name, key, in_experiment, spec.header, value, reason)

        self.variants = {v.key: make(v.key, True, Reason.STICKY) for v in spec.variants}
        self.sticky_salt = spec.seed if spec.sticky else None
        # Overrides apply in spec order: each entry keeps its position, so a unit listed before
        # a header override beats it and one listed after does not.
        self.header_overrides: list[tuple[int, str, str, Assignment]] = []
        self.unit_overrides: dict[str, tuple[int, Assignment]] = {}
        for position, o in enumerate(spec.overrides):
            if o.header is not None:
                forced = make(o.variant, False, Reason.OVERRIDE_HEADER)
                self.header_overrides.append((position, o.header.name, o.header.value, forced))
            by_unit = make(o.variant, False, Reason.OVERRIDE_UNIT)
            for unit in o.units or ():
                self.unit_overrides[unit] = (position, by_unit)
        arms = [make(v.key, True, Reason.HASH) for v in spec.variants]
        control = spec.control_variant.key
        excluded = {r: make(control, False, r) for r in (Reason.LAYER, Reason.COVERAGE)}
        serving = next((v.key for v in spec.variants if v.weight == 100), control)
        self.inactive = make(serving, False, Reason.INACTIVE)
        if spec.hash is HashVersion.GROWTHBOOK_V2:
            self.bucket = _growthbook_bucketer(spec, arms, excluded)
        else:
            self.bucket = _abmesh_bucketer(spec, arms, excluded)


def _abmesh_bucketer(
    spec: ExperimentSpec, arms: list[Assignment], excluded: dict[Reason, Assignment]
) -> Bucketer:
    bucket_of, threshold = hashing.bucket_of, hashing.threshold
    arm_prefix = hashing.hash_prefix(spec.seed, hashing.PURPOSE_ARM)
    bounds = hashing.cumulative_thresholds([v.weight_bp for v in spec.variants], BASIS_POINTS)
    pick = arms.__getitem__

    def arm(unit: str) -> Assignment:
        return pick(bisect_right(bounds, bucket_of(arm_prefix, unit)))

    chain = arm
    coverage_bp = round(spec.coverage * BASIS_POINTS)
    if coverage_bp < BASIS_POINTS:
        cov_prefix = hashing.hash_prefix(spec.seed, hashing.PURPOSE_COVERAGE)
        cov_limit = threshold(coverage_bp, BASIS_POINTS)
        not_enrolled, inner = excluded[Reason.COVERAGE], chain

        def covered(unit: str) -> Assignment:
            return inner(unit) if bucket_of(cov_prefix, unit) < cov_limit else not_enrolled

        chain = covered
    if spec.layer is not None:
        layer_prefix = hashing.hash_prefix(spec.layer.name, hashing.PURPOSE_LAYER)
        low = threshold(round(spec.layer.start * 100), BASIS_POINTS)
        high = threshold(round(spec.layer.end * 100), BASIS_POINTS)
        outside, inner_layer = excluded[Reason.LAYER], chain

        def layered(unit: str) -> Assignment:
            return inner_layer(unit) if low <= bucket_of(layer_prefix, unit) < high else outside

        chain = layered
    return chain


def _growthbook_bucketer(
    spec: ExperimentSpec, arms: list[Assignment], excluded: dict[Reason, Assignment]
) -> Bucketer:
    seed, layer = spec.seed, spec.layer
    ranges = hashing.growthbook_ranges(spec.coverage, [v.weight / 100 for v in spec.variants])

    def bucket(unit: str) -> Assignment:
        if layer is not None:
            n = hashing.growthbook_hash("__" + layer.name, unit, 1)
            if n is None or not layer.start / 100 <= n < layer.end / 100:
                return excluded[Reason.LAYER]
        index = hashing.choose_range(hashing.growthbook_hash(seed, unit, 2) or 0.0, ranges)
        return arms[index] if index >= 0 else excluded[Reason.COVERAGE]

    return bucket


_CACHE: dict[int, _Compiled] = {}
_CACHE_LIMIT = 4096


def _compiled(spec: ExperimentSpec) -> _Compiled:
    found = _CACHE.get(id(spec))
    if found is not None and found.spec is spec:
        return found
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    found = _CACHE[id(spec)] = _Compiled(spec)
    return found


def _check_unit(unit: str) -> None:
    problem = unit_problem(unit)
    if problem is not None:
        raise InvalidUnitError(problem)


def check_units(units: Sequence[str]) -> None:
    for i, unit in enumerate(units):
        problem = unit_problem(unit)
        if problem is not None:
            raise InvalidUnitError(f"units[{i}]: {problem}")


def _lowered(c: _Compiled, headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Headers by lowercase name, or None when no header override could match."""
    if not headers or not c.header_overrides:
        return None
    return {k.lower(): v for k, v in headers.items()}


def _forced(c: _Compiled, unit: str, lowered: dict[str, str] | None) -> Assignment | None:
    """The first override, in spec order, that applies to `unit` with these headers."""
    by_unit = c.unit_overrides.get(unit)
    if lowered is not None:
        for position, name, value, forced in c.header_overrides:
            if by_unit is not None and by_unit[0] < position:
                break
            if lowered.get(name) == value:
                return forced
    return None if by_unit is None else by_unit[1]


def forced_by_headers(spec: ExperimentSpec, headers: Mapping[str, str]) -> Assignment | None:
    """The variant a header override forces, with no unit: a tester identified by a header
    the gateway sets from a verified token needs no unit id."""
    c = _compiled(spec)
    return _forced(c, "", _lowered(c, headers)) if c.header_overrides else None


def assign(
    spec: ExperimentSpec,
    unit: str,
    *,
    headers: Mapping[str, str] | None = None,
    sticky: StickyStore | None = None,
    active: bool = True,
) -> Assignment:
    """The variant of `unit` in `spec`.  `headers` may force a variant through the spec's
    overrides; `sticky` is consulted and written when the spec asks for sticky assignment;
    an experiment that is not `active` (not running) gives everyone but overrides the variant
    at 100 % (a promoted winner), or else the control."""
    c = _compiled(spec)
    _check_unit(unit)
    forced = _forced(c, unit, _lowered(c, headers))
    if forced is not None:
        return forced
    if not active:
        return c.inactive
    if sticky is None or c.sticky_salt is None:
        return c.bucket(unit)
    return _assign_sticky(c, [unit], sticky)[0]


def assign_many(
    spec: ExperimentSpec,
    units: Sequence[str],
    *,
    headers: Mapping[str, str] | None = None,
    sticky: StickyStore | None = None,
    active: bool = True,
) -> list[Assignment]:
    """`assign` for many units at once (the same headers apply to all); sticky records are
    read and written in one round trip each."""
    if isinstance(units, str):
        raise TypeError("units must be a sequence of unit ids, not one string")
    c = _compiled(spec)
    check_units(units)
    lowered = _lowered(c, headers)
    if not active:
        return [_forced(c, u, lowered) or c.inactive for u in units]
    bucket = c.bucket
    if sticky is None or c.sticky_salt is None:
        if lowered is None and not c.unit_overrides:
            return [bucket(u) for u in units]
        return [_forced(c, u, lowered) or bucket(u) for u in units]
    results: list[Assignment | None] = [_forced(c, u, lowered) for u in units]
    open_at = [i for i, r in enumerate(results) if r is None]
    for i, r in zip(open_at, _assign_sticky(c, [units[i] for i in open_at], sticky), strict=True):
        results[i] = r
    return [r for r in results if r is not None]


def _assign_sticky(c: _Compiled, units: Sequence[str], store: StickyStore) -> list[Assignment]:
    spec, salt = c.spec, c.sticky_salt
    assert salt is not None
    recorded = store.get_sticky(spec.name, salt, _distinct(units))
    fresh = {u: c.bucket(u) for u in units if c.variants.get(recorded.get(u, "")) is None}
    new = {u: a.variant for u, a in fresh.items() if a.in_experiment}
    if new:
        recorded.update(store.put_sticky(spec.name, salt, new, current=c.variants.keys()))
    out: list[Assignment] = []
    for u in units:
        chosen, kept = fresh.get(u), c.variants.get(recorded.get(u, ""))
        # Recorded earlier, or recorded first by another replica racing this one: the record wins.
        if kept is not None and (chosen is None or kept.variant != chosen.variant):
            chosen = kept
        assert chosen is not None  # every unit is either recorded or freshly bucketed
        out.append(chosen)
    return out


def _distinct(units: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(units))
