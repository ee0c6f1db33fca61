"""Folding against a direct recomputation from per-unit totals (the definition): in any order,
cut into any batches, over any number of partitions whose partial sums are then merged."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import load_spec
from experiments.foldbatch import (
    PENDING_CAP,
    SKEW_S,
    Exposure,
    UnitState,
    fold_batch,
    merge_partials,
)
from experiments.folding import PRE, Event, FoldPlan, export
from experiments.store.logfold import partition_of

SPEC = load_spec(
    {
        "name": "e",
        "variants": [
            {"key": k, "header_value": k, "weight": 50, "destination": {"host": "m"}}
            for k in ("a", "b")
        ],
        "metrics": {
            "primary": {"name": "click", "kind": "conversion"},
            "secondary": [
                {"name": "revenue", "kind": "sum"},
                {"name": "rpv", "kind": "ratio", "numerator": "revenue", "denominator": "views"},
            ],
        },
    }
)
PLAN = FoldPlan.from_spec(SPEC)


def test_plan_series_and_pairs() -> None:
    assert PLAN.series == ("click", "click~pre", "revenue", "revenue~pre", "views", "views~pre")
    assert PLAN.conversion == {"click", "click~pre"}
    assert ("revenue", "views") in PLAN.pairs
    assert ("click", "click~pre") in PLAN.pairs
    assert PLAN.accepts("views")
    assert not PLAN.accepts("rpv")  # a ratio gets no events of its own
    assert not PLAN.accepts("click~pre")


def oracle(exposed: dict[str, str], totals: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Per arm, per series: unit values of exposed units (absent → 0), then plain sums."""
    out: dict[str, Any] = {}
    for variant in sorted(set(exposed.values())):
        units = [u for u, v in exposed.items() if v == variant]

        def values(s: str, units: list[str] = units) -> np.ndarray:
            raw = np.array([totals.get((u, s), 0.0) for u in units])
            return np.minimum(raw, 1.0) if s in PLAN.conversion else raw

        metrics = {}
        for s in ("click", "revenue", "views"):
            y, x = values(s), values(s + PRE)
            metrics[s] = {
                "n": len(units),
                "sum": y.sum(),
                "sum_sq": (y * y).sum(),
                "m2": ((y - y.mean()) ** 2).sum(),
                "sum_x": x.sum(),
                "sum_x2": (x * x).sum(),
                "sum_xy": (x * y).sum(),
            }
        metrics["rpv"] = {"sum_num_den": (values("revenue") * values("views")).sum()}
        out[variant] = {"exposures": len(units), "metrics": metrics}
    return out


def close(a: float, b: float) -> bool:
    # Sums of squares of values up to 1e6 reach 1e13: an absolute tolerance of 1e-6 on those
    # would ask for more digits than doubles hold, so allow 1e-9 of the largest scale.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def assert_matches(result: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(result) == set(expected)
    for variant, arm in expected.items():
        assert result[variant]["exposures"] == arm["exposures"]
        for metric, sums in arm["metrics"].items():
            for key, value in sums.items():
                got = result[variant]["metrics"][metric][key]
                assert close(got, value), (variant, metric, key, got, value)


class Partitions:
    """A log folded the way the stores fold it: per partition of the unit, batch by batch;
    read by merging the partitions' statistics."""

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.units: list[dict[str, UnitState]] = [{} for _ in range(count)]
        self.stats: list[dict[str, float]] = [{} for _ in range(count)]
        self.shifts: list[dict[str, float]] = [{} for _ in range(count)]
        self.log: list[Exposure | Event] = []

    def expose(self, unit: str, variant: str, at: float = 0.0) -> None:
        self.log.append(Exposure(unit, variant, at))

    def add(self, unit: str, series: str, value: float, at: float = 0.0) -> None:
        self.log.append(Event(f"e{len(self.log)}", unit, series, value, at))

    def fold(self) -> None:
        """Fold what was logged since the last call, one batch per partition."""
        batches: list[tuple[list[Exposure], list[Event]]] = [([], []) for _ in range(self.count)]
        for entry in self.log:
            k = partition_of(entry.unit, self.count)
            if isinstance(entry, Exposure):
                batches[k][0].append(entry)
            else:
                batches[k][1].append(entry)
        self.log = []
        for k, (exposures, events) in enumerate(batches):
            if not exposures and not events:
                continue
            touched = {e.unit for e in [*exposures, *events]}
            states = {u: self.units[k].get(u, UnitState()) for u in touched}
            fold_batch(PLAN, states, exposures, events, self.stats[k], self.shifts[k])
            self.units[k].update(states)

    def export(self) -> dict[str, Any]:
        self.fold()
        stats, shifts = merge_partials(list(zip(self.stats, self.shifts, strict=True)))
        return export(PLAN, stats, shifts)


Op = tuple[str, str, str, float, bool]  # (kind, unit, variant or series, value, fold after)

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("expose"),
            st.sampled_from([f"u{i}" for i in range(8)]),
            st.sampled_from(["a", "b"]),
            st.just(0.0),
            st.booleans(),
        ),
        st.tuples(
            st.just("add"),
            st.sampled_from([f"u{i}" for i in range(8)]),
            st.sampled_from(PLAN.series),
            st.floats(min_value=-50, max_value=1e4, allow_nan=False),
            st.booleans(),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=ops, partitions=st.sampled_from([1, 3, 16]))
def test_any_order_batching_and_partitioning_gives_the_definition(
    operations: list[Op], partitions: int
) -> None:
    log = Partitions(partitions)
    raw: dict[tuple[str, str], float] = {}
    first: dict[str, str] = {}
    for kind, unit, target, value, cut in operations:
        if kind == "expose":
            log.expose(unit, target)
            first.setdefault(unit, target)
        else:  # every event at the time of the exposures: none is before one
            log.add(unit, target, value)
            step = 1.0 if target in PLAN.conversion else value
            raw[unit, target] = raw.get((unit, target), 0.0) + step
        if cut:
            log.fold()
    assert_matches(log.export(), oracle(first, raw))


def test_one_partition_or_sixteen_merge_to_the_same_statistics() -> None:
    # Values near 1e6 with covariates: each partition picks its own shifts, and the merge
    # re-shifts them to common ones; the result is the single partition's within 1e-9.
    rng = np.random.default_rng(11)
    logs = [Partitions(1), Partitions(16)]
    for i in range(3000):
        (y, x), views = 1e6 + rng.normal(0, 50, size=2), float(rng.integers(1, 9))
        for log in logs:
            log.expose(f"u{i}", "ab"[i % 2])
            log.add(f"u{i}", "revenue", float(y) if i % 3 else 0.0)
            log.add(f"u{i}", "revenue~pre", float(x))
            log.add(f"u{i}", "views", views)
            log.add(f"u{i}", "click", 1.0)
        if i % 500 == 0:
            for log in logs:
                log.fold()
    one, many = (log.export() for log in logs)
    for variant in one:
        for metric, sums in one[variant]["metrics"].items():
            for key, value in sums.items():
                if isinstance(value, dict | str):
                    continue  # the ratio's names, and its pairs (their sums are checked above)
                got = many[variant]["metrics"][metric][key]
                assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (metric, key)


def test_large_values_keep_their_variance() -> None:
    # Values near 1e9 with a spread of about 1: plain power sums lose the variance entirely
    # (Q − S²/n cancels); the shifted sums keep it, merged over partitions too.
    rng = np.random.default_rng(7)
    values = 1e9 + rng.normal(0, 1, size=5000)
    log = Partitions(16)
    for i, v in enumerate(values):
        log.expose(f"u{i}", "a")
        log.add(f"u{i}", "revenue", float(v))
    arm = log.export()["a"]["metrics"]["revenue"]
    n = arm["n"]
    assert arm["m2"] / (n - 1) == pytest.approx(np.var(values, ddof=1), rel=1e-9)
    assert arm["sum"] == pytest.approx(values.sum(), rel=1e-12)
    naive = (arm["sum_sq"] - arm["sum"] ** 2 / n) / (n - 1)
    assert naive != pytest.approx(np.var(values, ddof=1), rel=1e-2)  # why the shift exists


def test_a_huge_value_that_returns_to_zero_leaves_no_trace() -> None:
    # A refund: one unit gets +1e12, then −1e12.  Then 5000 ordinary units arrive.  The shift
    # chosen for 1e12 must not stay, or the sums of squares of the ordinary units cancel badly.
    rng = np.random.default_rng(3)
    log = Partitions(1)
    log.expose("refund", "a")
    log.add("refund", "revenue", 1e12)
    log.fold()
    log.add("refund", "revenue", -1e12)
    log.fold()
    values = 100 + rng.normal(0, 1, size=5000)
    for i, v in enumerate(values):
        log.expose(f"u{i}", "a")
        log.add(f"u{i}", "revenue", float(v))
    arm = log.export()["a"]["metrics"]["revenue"]
    everyone = np.append(values, 0.0)
    assert arm["sum"] == pytest.approx(everyone.sum(), rel=1e-12)
    assert arm["sum_sq"] == pytest.approx((everyone**2).sum(), rel=1e-9)
    assert arm["m2"] == pytest.approx(((everyone - everyone.mean()) ** 2).sum(), rel=1e-9)


def test_large_covariates_keep_their_covariance() -> None:
    # x and y near 1e9 with a correlated spread of about 1: CUPED's theta = c_xy / m2_x.
    rng = np.random.default_rng(9)
    x = 1e9 + rng.normal(0, 1, size=4000)
    y = 1e9 + 1.01 * (x - 1e9) + rng.normal(0, 0.1, size=4000)
    log = Partitions(16)
    for i in range(len(x)):
        log.add(f"u{i}", "revenue~pre", float(x[i]))
        log.expose(f"u{i}", "a")
        log.add(f"u{i}", "revenue", float(y[i]))
    arm = log.export()["a"]["metrics"]["revenue"]
    theta = arm["c_xy"] / arm["m2_x"]
    assert theta == pytest.approx(np.cov(x, y)[0, 1] / np.var(x, ddof=1), rel=1e-6)
    assert arm["m2_x"] / (len(x) - 1) == pytest.approx(np.var(x, ddof=1), rel=1e-6)


def test_the_first_exposure_stands_and_changes_are_reported() -> None:
    states = {"u1": UnitState()}
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    event = Event("e1", "u1", "revenue", 5.0, 10.0)
    result = fold_batch(PLAN, states, [], [event], stats, shifts)
    assert (result.changed_stats, result.changed_shifts, stats) == (set(), set(), {})
    assert states["u1"].pending == [("revenue", 5.0, 10.0)]  # waits for the exposure
    result = fold_batch(
        PLAN, states, [Exposure("u1", "b", 10.0, 3), Exposure("u1", "a", 11.0)], [], stats, shifts
    )
    assert result.new_exposures == 1
    assert states["u1"].arm == "b"  # the first exposure stands
    assert {"b|n", "b|N|revenue"} <= result.changed_stats  # S, Q stay 0: v equals K
    assert shifts == {"revenue": 5.0}
    assert UnitState.decode(states["u1"].encode()) == states["u1"]


def test_events_before_the_exposure_go_to_the_pre_period_whichever_arrives_first() -> None:
    # u1's events arrive before its exposure, u2's after: the outcome is the same.  Events more
    # than SKEW_S before the exposure are pre-period values, later ones (even slightly
    # earlier, clock skew) count after it.
    expected = {"revenue": 3.0, "revenue~pre": 4.0}
    at = 1000.0
    times = [at - SKEW_S - 1, at - SKEW_S + 1, at + 5]
    for unit, events_first in (("u1", True), ("u2", False)):
        log = Partitions(1)
        if not events_first:
            log.expose(unit, "a", at)
            log.fold()
        for t, v in zip(times, (4.0, 1.0, 2.0), strict=True):
            log.add(unit, "revenue", v, t)
        log.fold()
        if events_first:
            log.expose(unit, "a", at)
        arm = log.export()["a"]["metrics"]["revenue"]
        assert (arm["sum"], arm["sum_x"]) == (expected["revenue"], expected["revenue~pre"])


def test_a_unit_never_exposed_keeps_a_bounded_wait_list() -> None:
    state = UnitState()
    for i in range(PENDING_CAP + 10):
        state.credit(PLAN, "revenue", 1.0, float(i))
    assert len(state.pending) == PENDING_CAP
    assert state.totals == {"revenue~pre": 10.0}  # the oldest, taken as pre-period
    assert min(p[2] for p in state.pending) == 10.0
