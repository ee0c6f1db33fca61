"""Assignment rules: overrides first, then layer, coverage and arm; ramping never reshuffles."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from assignment import Reason, assign, assign_many
from experiments import ExperimentSpec, load_spec
from experiments.errors import InvalidUnitError


def make_spec(*weights: float, name: str = "exp", **extra: Any) -> ExperimentSpec:
    variants = [
        {
            "key": f"v{i}",
            "header_value": f"group-{chr(97 + i)}",
            "weight": w,
            "destination": {"host": "model"},
        }
        for i, w in enumerate(weights)
    ]
    return load_spec({"name": name, "variants": variants, **extra})


UNITS = [f"user-{i}" for i in range(20_000)]

OVERRIDES = [
    {"header": {"name": "x-user-group", "value": "internal-testers"}, "variant": "v1"},
    {"units": ["qa-1", "qa-2"], "variant": "v1"},
    {"units": ["qa-3"], "variant": "v0"},
]


def test_overrides_come_before_layer_coverage_and_arm() -> None:
    # A tiny coverage and a layer slice that excludes most units: overrides still force.
    spec = make_spec(
        100, 0, coverage=0.0001, overrides=OVERRIDES, layer={"name": "l", "start": 0, "end": 1}
    )
    forced = assign(spec, "anyone", headers={"X-User-Group": "internal-testers"})
    assert (forced.variant, forced.reason, forced.in_experiment) == (
        "v1",
        Reason.OVERRIDE_HEADER,
        False,
    )
    assert forced.header_value == "group-b"
    by_unit = assign(spec, "qa-2")
    assert (by_unit.variant, by_unit.reason) == ("v1", Reason.OVERRIDE_UNIT)
    assert assign(spec, "qa-3").variant == "v0"


@pytest.mark.parametrize(
    ("order", "expected"),
    [((2, 0), ("v0", Reason.OVERRIDE_UNIT)), ((0, 2), ("v1", Reason.OVERRIDE_HEADER))],
)
def test_overrides_apply_in_spec_order(
    order: tuple[int, int], expected: tuple[str, Reason]
) -> None:
    # qa-3 is listed for v0 and the header forces v1: whichever comes first in the spec wins.
    spec = make_spec(50, 50, overrides=[OVERRIDES[i] for i in order])
    headers = {"x-user-group": "internal-testers"}
    result = assign(spec, "qa-3", headers=headers)
    assert (result.variant, result.reason) == expected
    many = assign_many(spec, ["qa-3", "other"], headers=headers)
    assert (many[0].variant, many[0].reason) == expected
    assert (many[1].variant, many[1].reason) == ("v1", Reason.OVERRIDE_HEADER)


def test_non_matching_header_does_not_force() -> None:
    spec = make_spec(100, 0, overrides=OVERRIDES)
    for headers in ({"x-user-group": "group-b"}, {"x-other": "internal-testers"}, {}):
        result = assign(spec, "someone", headers=headers)
        assert (result.variant, result.reason) == ("v0", Reason.HASH)


def test_excluded_units_get_control_and_are_not_in_experiment() -> None:
    spec = make_spec(0, 100, coverage=0.5, control="v0")
    results = assign_many(spec, UNITS)
    out = [r for r in results if not r.in_experiment]
    assert 0.45 < len(out) / len(UNITS) < 0.55
    assert {(r.variant, r.reason, r.header_value) for r in out} == {
        ("v0", Reason.COVERAGE, "group-a")
    }
    assert {r.variant for r in results if r.in_experiment} == {"v1"}


def test_bulk_equals_scalar() -> None:
    for spec in (
        make_spec(50, 50),
        make_spec(20, 30, 50, coverage=0.7, overrides=OVERRIDES[1:]),
        make_spec(50, 50, layer={"name": "l", "start": 25, "end": 75}),
        make_spec(10, 90, hash="growthbook-v2", coverage=0.5),
    ):
        units = [*UNITS[:3000], "qa-1", "qa-3"]
        assert assign_many(spec, units) == [assign(spec, u) for u in units]


def test_bulk_header_override_applies_to_all_units() -> None:
    spec = make_spec(100, 0, overrides=OVERRIDES)
    results = assign_many(spec, ["a", "qa-3"], headers={"x-user-group": "internal-testers"})
    assert [r.variant for r in results] == ["v1", "v1"]


def test_a_string_is_not_a_batch_of_units() -> None:
    with pytest.raises(TypeError, match="sequence of unit ids"):
        assign_many(make_spec(50, 50), "abc")


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("", "empty"),
        ("a\x00b", "control"),
        ("line\nbreak", "control"),
        ("\x85", "control"),
        ("x" * 257, "bytes"),
        ("é" * 129, "bytes"),
        ("\ud800", "UTF-8"),
        (42, "string"),
    ],
)
def test_bad_units_are_refused(unit: Any, message: str) -> None:
    spec = make_spec(50, 50)
    with pytest.raises(InvalidUnitError, match=message):
        assign(spec, unit)
    with pytest.raises(InvalidUnitError, match=r"units\[1\]"):
        assign_many(spec, ["ok", unit])


def test_longest_and_non_ascii_units_are_accepted() -> None:
    spec = make_spec(50, 50)
    for unit in ("x" * 256, "é" * 128, "用户", "user 😀", "a:b|c"):
        assert assign(spec, unit).in_experiment


# Ramp without reshuffle -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=6),
    salt=st.text(alphabet="abcdefgh0123456789-", min_size=1, max_size=10).filter(
        lambda s: s[0] != "-"
    ),
)
def test_raising_the_candidate_share_only_moves_units_into_it(steps: list[int], salt: str) -> None:
    units = UNITS[:2000]
    previous: set[str] | None = None
    for bp in sorted(steps):
        spec = make_spec(100 - bp / 100, bp / 100, salt=salt)
        candidate = {
            u for u, a in zip(units, assign_many(spec, units), strict=True) if a.variant == "v1"
        }
        if previous is not None:
            assert previous <= candidate
        previous = candidate


@settings(max_examples=40, deadline=None)
@given(coverages=st.lists(st.integers(min_value=1, max_value=10_000), min_size=2, max_size=5))
def test_raising_coverage_only_adds_units_and_keeps_their_arm(coverages: list[int]) -> None:
    units = UNITS[:2000]
    previous: dict[str, str] = {}
    for bp in sorted(coverages):
        spec = make_spec(30, 70, coverage=bp / 10_000)
        now = {
            u: a.variant
            for u, a in zip(units, assign_many(spec, units), strict=True)
            if a.in_experiment
        }
        assert previous.items() <= now.items()
        previous = now


def test_three_arm_ramp_from_middle_to_last_arm_is_monotone() -> None:
    before = dict(zip(UNITS, assign_many(make_spec(40, 40, 20), UNITS), strict=True))
    after = dict(zip(UNITS, assign_many(make_spec(40, 20, 40), UNITS), strict=True))
    moved = {(before[u].variant, after[u].variant) for u in UNITS if before[u] != after[u]}
    assert moved == {("v1", "v2")}


# Layers -----------------------------------------------------------------------------------


def test_layer_slices_are_exclusive_and_cover_their_share() -> None:
    slices = [(0, 20), (20, 50), (50, 100)]
    specs = [
        make_spec(50, 50, name=f"exp-{i}", layer={"name": "ranking", "start": a, "end": b})
        for i, (a, b) in enumerate(slices)
    ]
    membership = np.array([[a.in_experiment for a in assign_many(s, UNITS)] for s in specs])
    assert membership.sum(axis=0).max() == 1  # a unit is in at most one experiment of the layer
    assert membership.all(axis=0).sum() == 0
    shares = membership.mean(axis=1)
    assert shares == pytest.approx([0.2, 0.3, 0.5], abs=0.015)
    assert membership.any(axis=0).all()  # the slices cover the whole layer


def test_layer_salt_is_independent_of_the_experiment_salt() -> None:
    spec = make_spec(50, 50, layer={"name": "ranking", "start": 0, "end": 50})
    results = assign_many(spec, UNITS)
    inside = [a.variant for a in results if a.in_experiment]
    table = [inside.count("v0"), inside.count("v1")]
    assert stats.chisquare(table).pvalue > 0.001


# Distribution -----------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(50, 50), (95, 5), (33.34, 33.33, 33.33)])
def test_split_matches_weights(weights: tuple[float, ...]) -> None:
    spec = make_spec(*weights)
    units = [f"u{i}" for i in range(100_000)]
    counts = np.bincount(
        [int(a.variant[1:]) for a in assign_many(spec, units)], minlength=len(weights)
    )
    expected = np.array(weights) / 100 * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 0.001


def _treated(spec: ExperimentSpec, units: list[str]) -> np.ndarray:
    return np.array([a.variant == "v1" for a in assign_many(spec, units)])


def test_experiments_with_different_salts_are_independent() -> None:
    units = [f"u{i}" for i in range(100_000)]
    a, b = (
        _treated(make_spec(50, 50, name="ranker"), units),
        _treated(make_spec(50, 50, name="ranker", salt="ranker-phase-2"), units),
    )
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert stats.chi2_contingency(table, correction=False).pvalue > 0.001


def test_coverage_and_arm_hashes_are_independent() -> None:
    spec = make_spec(50, 50, coverage=0.1)
    inside = [
        a.variant for a in assign_many(spec, [f"u{i}" for i in range(100_000)]) if a.in_experiment
    ]
    assert stats.chisquare([inside.count("v0"), inside.count("v1")]).pvalue > 0.001


def test_near_identical_experiment_names_are_independent() -> None:
    # GrowthBook's hash v1 correlated experiments whose keys shared a prefix (GrowthBook PR #959).
    # 100 experiments named exp-0 ... exp-99: every neighbouring pair must look independent,
    # at a Bonferroni-corrected level over the 99 pairs.
    units = UNITS
    arms = [_treated(make_spec(50, 50, name=f"exp-{i}"), units) for i in range(100)]
    pvalues = []
    for a, b in itertools.pairwise(arms):
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        pvalues.append(stats.chi2_contingency(table, correction=False).pvalue)
    assert min(pvalues) > 0.001 / len(pvalues)
    # And the 100 per-experiment splits together are fair (chi-square with 100 df).
    treated = np.array([arm.sum() for arm in arms])
    statistic = np.sum((treated - len(units) / 2) ** 2 / (len(units) / 4))
    assert stats.chi2.sf(statistic, df=len(arms)) > 0.001


def test_spec_copies_assign_identically() -> None:
    spec = make_spec(20, 80)
    clone = load_spec(copy.deepcopy(spec.model_dump(by_alias=True)))
    assert assign_many(spec, UNITS[:500]) == assign_many(clone, UNITS[:500])


def test_inactive_experiment_gives_control_except_to_overrides() -> None:
    spec = make_spec(10, 90, overrides=OVERRIDES)
    someone = next(u for u in UNITS if assign(spec, u).variant == "v1")
    idle = assign(spec, someone, active=False)
    assert (idle.variant, idle.in_experiment, idle.reason) == ("v0", False, Reason.INACTIVE)
    assert assign(spec, "qa-1", active=False).reason is Reason.OVERRIDE_UNIT
    forced = assign(spec, "x", headers={"x-user-group": "internal-testers"}, active=False)
    assert forced.variant == "v1"
    many = assign_many(spec, ["a", "qa-1", "b"], active=False)
    assert [(a.variant, a.reason) for a in many] == [
        ("v0", Reason.INACTIVE),
        ("v1", Reason.OVERRIDE_UNIT),
        ("v0", Reason.INACTIVE),
    ]


def test_inactive_experiment_with_a_promoted_winner_gives_the_winner() -> None:
    spec = make_spec(0, 100, overrides=OVERRIDES)  # a variant at 100 %: the promoted one
    idle = assign(spec, "someone", active=False)
    assert (idle.variant, idle.in_experiment, idle.reason) == ("v1", False, Reason.INACTIVE)
    assert assign(spec, "qa-3", active=False).variant == "v0"  # overrides still apply
    assert [a.variant for a in assign_many(spec, ["a", "qa-3"], active=False)] == ["v1", "v0"]
