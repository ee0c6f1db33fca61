"""Lan–DeMets boundaries against published tables and an independent route (the multivariate
normal CDF of scipy, Genz's algorithm), plus a seeded simulation of the design's type-I error.

Published values:
- Jennison & Turnbull (2000), Table 2.1 (Pocock C_P) and Table 2.3 (O'Brien–Fleming C_B),
  α = 0.05 two-sided, K equally spaced looks.
- Lan–DeMets spending, α = 0.05 two-sided (α/2 per side): K = 2 at t = (0.5, 1) from
  docs/statistics.md §7; K = 5 equally spaced as printed by gsDesign
  (`gsDesign(k=5, test.type=2, sfu=sfLDOF)`: 4.877, 3.357, 2.680, 2.290, 2.031;
  `sfu=sfLDPocock`: 2.438, 2.427, 2.410, 2.397, 2.386).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis import classical_constant, gst_boundaries, rejection_probability

POCOCK = {2: 2.178, 3: 2.289, 4: 2.361, 5: 2.413, 10: 2.555, 15: 2.626, 20: 2.672}
OBRIEN_FLEMING = {2: 1.977, 3: 2.004, 4: 2.024, 5: 2.040, 10: 2.087}


@pytest.mark.parametrize(("looks", "expected"), POCOCK.items())
def test_pocock_constants_match_jennison_turnbull(looks: int, expected: float) -> None:
    assert classical_constant(looks, 0.05, "pocock") == pytest.approx(expected, abs=6e-4)


@pytest.mark.parametrize(("looks", "expected"), OBRIEN_FLEMING.items())
def test_obrien_fleming_constants_match_jennison_turnbull(looks: int, expected: float) -> None:
    assert classical_constant(looks, 0.05, "obf") == pytest.approx(expected, abs=6e-4)


@pytest.mark.parametrize(
    ("fractions", "spending", "expected"),
    [
        ((0.5, 1.0), "obf", (2.963, 1.969)),
        ((0.5, 1.0), "pocock", (2.157, 2.201)),
        ((0.2, 0.4, 0.6, 0.8, 1.0), "obf", (4.877, 3.357, 2.680, 2.290, 2.031)),
        ((0.2, 0.4, 0.6, 0.8, 1.0), "pocock", (2.438, 2.427, 2.410, 2.397, 2.386)),
    ],
)
def test_spending_boundaries_match_gsdesign(
    fractions: tuple[float, ...], spending: str, expected: tuple[float, ...]
) -> None:
    design = gst_boundaries(fractions, alpha=0.05, spending=spending)  # type: ignore[arg-type]
    assert design.z == pytest.approx(expected, abs=6e-4)
    assert design.cumulative_alpha[-1] == pytest.approx(0.05, abs=1e-12)


def _mvn_exit(bounds: tuple[float, ...], fractions: tuple[float, ...], sides: int) -> list[float]:
    """P(some look up to k crosses) for each k, from the joint normal of (Z_1..Z_k) with
    Cov(Z_j, Z_k) = sqrt(t_j/t_k): an integration route independent of the recursion."""
    t = np.array(fractions)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    out = []
    for k in range(1, len(t) + 1):
        upper = np.array(bounds[:k])
        lower = -upper if sides == 2 else np.full(k, -np.inf)
        stay = stats.multivariate_normal.cdf(
            upper,
            np.zeros(k),
            cov[:k, :k],
            lower_limit=lower,
            abseps=1e-7,
            releps=1e-7,
            rng=np.random.default_rng(5),
        )
        out.append(1 - float(stay))
    return out


@pytest.mark.parametrize(
    ("fractions", "spending", "sides", "alpha"),
    [
        ((0.3, 0.7, 1.0), "obf", 2, 0.05),
        ((0.25, 0.5, 0.6, 1.0), "pocock", 2, 0.05),
        ((0.2, 0.45, 0.8, 1.0), ("power", 2.0), 2, 0.01),
        ((0.33, 0.67, 1.0), "obf", 1, 0.025),
        ((0.1, 0.5, 0.9), ("power", 3.0), 1, 0.05),
        ((0.25, 0.5, 0.75, 1.3), "obf", 2, 0.05),  # an over-run: the final look at 130 %
        ((0.3, 0.6, 2.0), "pocock", 2, 0.05),
    ],
)
def test_each_look_spends_exactly_its_increment(
    fractions: tuple[float, ...], spending: object, sides: int, alpha: float
) -> None:
    design = gst_boundaries(fractions, alpha=alpha, spending=spending, sides=sides)  # type: ignore[arg-type]
    assert _mvn_exit(design.z, design.information_fractions, sides) == pytest.approx(
        design.cumulative_alpha, abs=3e-5
    )


def test_power_family_spends_alpha_t_to_the_rho() -> None:
    design = gst_boundaries((0.25, 0.5, 1.0), alpha=0.05, spending=("power", 2))
    assert design.cumulative_alpha == pytest.approx((0.05 / 16, 0.05 / 4, 0.05))
    assert design.spending == "power (rho 2)"


def test_the_per_side_convention_is_alpha_over_two() -> None:
    """A two-sided design at α = 0.05 and a one-sided one at 0.025 have the same boundaries up
    to the chance of crossing the far side first (≤ 2e-5, docs/statistics.md §7): both match
    gsDesign's published two-sided values.  Spending the total α with the one-sided function
    would give 2.772, 1.979 for K = 2 instead (the convention of docs/statistics.md §7)."""
    published = (4.877, 3.357, 2.680, 2.290, 2.031)
    fractions = (0.2, 0.4, 0.6, 0.8, 1.0)
    one_sided = gst_boundaries(fractions, alpha=0.025, sides=1)
    two_sided = gst_boundaries(fractions, alpha=0.05, sides=2)
    assert one_sided.z == pytest.approx(published, abs=6e-4)
    assert one_sided.z == pytest.approx(two_sided.z, abs=2e-5)
    assert two_sided.cumulative_alpha[-1] == pytest.approx(0.05)
    assert one_sided.nominal_p[-1] == pytest.approx(stats.norm.sf(2.031), rel=2e-3)


def test_overrun_spends_the_rest_and_bad_schedules_are_refused() -> None:
    overrun = gst_boundaries((0.5, 1.3))
    assert overrun.information_fractions == (0.5, 1.3)
    assert overrun.cumulative_alpha[-1] == pytest.approx(0.05)
    assert overrun.z[-1] > gst_boundaries((0.5, 1.0)).z[-1]  # less correlated, so higher
    assert math.isinf(gst_boundaries((0.5, 1.0, 1.2)).z[-1])  # nothing left to spend
    for bad, match in [
        ((), "empty"),
        ((0.5, 0.5), "increase strictly"),
        ((0.6, 0.4), "increase strictly"),
        ((0.0, 1.0), "positive"),
        ((math.nan,), "positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            gst_boundaries(bad)
    with pytest.raises(ValueError, match="alpha"):
        gst_boundaries((1.0,), alpha=1.5)
    with pytest.raises(ValueError, match="spending"):
        gst_boundaries((1.0,), spending="haybittle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sides"):
        gst_boundaries((1.0,), sides=3)


def test_rejection_probability_of_any_boundaries_matches_the_mvn_route() -> None:
    for bounds, fractions, sides in [
        ((2.5, 2.2, 2.0), (0.3, 0.6, 1.0), 2),
        ((3.0, 2.0, 2.0, 1.9), (0.1, 0.4, 0.7, 1.0), 2),
        ((2.2, 2.0), (0.5, 1.0), 1),
    ]:
        expected = _mvn_exit(bounds, fractions, sides)[-1]
        assert rejection_probability(bounds, fractions, sides) == pytest.approx(expected, abs=3e-5)


def test_summary_lists_every_look() -> None:
    design = gst_boundaries((0.5, 1.0))
    assert "2.9626" in design.summary()
    assert "1.9686" in design.summary()
    assert design._repr_html_().count("<tr>") == 3


def test_aa_simulation_group_sequential_keeps_alpha_while_naive_looks_do_not() -> None:
    """5 equally spaced looks at normal data, 200 units per arm per look, 20,000 seeded
    experiments: acting on |z| ≥ 1.96 at any look rejects ~14 % (Armitage et al. 1969 give
    0.142 for K = 5); the LD-OBF and LD-Pocock boundaries stay at 5 %."""
    rng = np.random.default_rng(20240601)
    experiments, looks, per_look = 20_000, 5, 200
    a = rng.normal(0, 1, (experiments, looks, per_look)).sum(axis=2).cumsum(axis=1)
    b = rng.normal(0, 1, (experiments, looks, per_look)).sum(axis=2).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    z = (b - a) / n / np.sqrt(2 / n)
    se = math.sqrt(0.05 * 0.95 / experiments)
    naive = float(np.mean((np.abs(z) >= 1.96).any(axis=1)))
    assert naive == pytest.approx(0.142, abs=4 * math.sqrt(0.142 * 0.858 / experiments))
    fractions = tuple(n / n[-1])
    for spending in ("obf", "pocock"):
        bounds = np.array(gst_boundaries(fractions, spending=spending).z)  # type: ignore[arg-type]
        rate = float(np.mean((np.abs(z) >= bounds).any(axis=1)))
        assert rate == pytest.approx(0.05, abs=4 * se)
