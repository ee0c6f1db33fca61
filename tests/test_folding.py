"""Folding against a direct recomputation from per-unit totals (the definition), in any order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import load_spec
from experiments.folding import PRE, Folder, FoldPlan, export

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


Op = tuple[str, str, str, float]  # ("expose", unit, variant, 0) | ("add", unit, series, value)

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("expose"),
            st.sampled_from([f"u{i}" for i in range(8)]),
            st.sampled_from(["a", "b"]),
            st.just(0.0),
        ),
        st.tuples(
            st.just("add"),
            st.sampled_from([f"u{i}" for i in range(8)]),
            st.sampled_from(PLAN.series),
            st.floats(min_value=-50, max_value=1e4, allow_nan=False),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=ops)
def test_any_order_of_exposures_and_events_gives_the_definition(operations: list[Op]) -> None:
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    totals: dict[tuple[str, str], float] = {}
    exposed: dict[str, str] = {}
    folder = Folder(PLAN, stats=stats, shifts=shifts, totals=totals, exposed=exposed)
    raw: dict[tuple[str, str], float] = {}
    first: dict[str, str] = {}
    for kind, unit, target, value in operations:
        if kind == "expose":
            folder.expose(unit, target)
            first.setdefault(unit, target)
        else:
            folder.add(unit, target, value)
            step = 1.0 if target in PLAN.conversion else value
            raw[unit, target] = raw.get((unit, target), 0.0) + step
    assert exposed == first
    assert_matches(export(PLAN, stats, shifts), oracle(first, raw))


def test_large_values_keep_their_variance() -> None:
    # Values near 1e9 with a spread of about 1: plain power sums lose the variance entirely
    # (Q − S²/n cancels); the shifted sums keep it.
    rng = np.random.default_rng(7)
    values = 1e9 + rng.normal(0, 1, size=5000)
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    folder = Folder(PLAN, stats=stats, shifts=shifts, totals={}, exposed={})
    for i, v in enumerate(values):
        folder.expose(f"u{i}", "a")
        folder.add(f"u{i}", "revenue", float(v))
    arm = export(PLAN, stats, shifts)["a"]["metrics"]["revenue"]
    n = arm["n"]
    assert arm["m2"] / (n - 1) == pytest.approx(np.var(values, ddof=1), rel=1e-9)
    assert arm["sum"] == pytest.approx(values.sum(), rel=1e-12)
    naive = (arm["sum_sq"] - arm["sum"] ** 2 / n) / (n - 1)
    assert naive != pytest.approx(np.var(values, ddof=1), rel=1e-2)  # why the shift exists


def test_a_huge_value_that_returns_to_zero_leaves_no_trace() -> None:
    # A refund: one unit gets +1e12, then −1e12.  Then 5000 ordinary units arrive.  The shift
    # chosen for 1e12 must not stay, or the sums of squares of the ordinary units cancel badly.
    rng = np.random.default_rng(3)
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    folder = Folder(PLAN, stats=stats, shifts=shifts, totals={}, exposed={})
    folder.expose("refund", "a")
    folder.add("refund", "revenue", 1e12)
    folder.add("refund", "revenue", -1e12)
    values = 100 + rng.normal(0, 1, size=5000)
    for i, v in enumerate(values):
        folder.expose(f"u{i}", "a")
        folder.add(f"u{i}", "revenue", float(v))
    arm = export(PLAN, stats, shifts)["a"]["metrics"]["revenue"]
    everyone = np.append(values, 0.0)
    assert arm["sum"] == pytest.approx(everyone.sum(), rel=1e-12)
    assert arm["sum_sq"] == pytest.approx((everyone**2).sum(), rel=1e-9)
    assert arm["m2"] == pytest.approx(((everyone - everyone.mean()) ** 2).sum(), rel=1e-9)


def test_large_covariates_keep_their_covariance() -> None:
    # x and y near 1e9 with a correlated spread of about 1: CUPED's theta = c_xy / m2_x.
    rng = np.random.default_rng(9)
    x = 1e9 + rng.normal(0, 1, size=4000)
    y = 1e9 + 1.01 * (x - 1e9) + rng.normal(0, 0.1, size=4000)
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    folder = Folder(PLAN, stats=stats, shifts=shifts, totals={}, exposed={})
    for i in range(len(x)):
        folder.add(f"u{i}", "revenue~pre", float(x[i]))
        folder.expose(f"u{i}", "a")
        folder.add(f"u{i}", "revenue", float(y[i]))
    arm = export(PLAN, stats, shifts)["a"]["metrics"]["revenue"]
    theta = arm["c_xy"] / arm["m2_x"]
    assert theta == pytest.approx(np.cov(x, y)[0, 1] / np.var(x, ddof=1), rel=1e-6)
    assert arm["m2_x"] / (len(x) - 1) == pytest.approx(np.var(x, ddof=1), rel=1e-6)


def test_changed_keys_are_tracked_for_writing_back() -> None:
    folder = Folder(PLAN, stats={}, shifts={}, totals={}, exposed={})
    folder.add("u1", "revenue", 5.0)
    assert folder.changed_totals == {("u1", "revenue")}
    assert folder.changed_shifts == set()  # shifts are set as values enter an arm
    assert folder.changed_stats == set()  # u1 is not exposed yet
    assert folder.expose("u1", "b")
    assert not folder.expose("u1", "a")  # the first exposure stands
    assert folder.new_exposures == {"u1": "b"}
    assert {"b|n", "b|N|revenue"} <= folder.changed_stats  # S, Q stay 0: v equals K
    assert folder.shifts == {"revenue": 5.0}
