"""`decide`: one look at an experiment, turned into continue / winner /
winner_pending_guardrails / harm / no_difference / invalid with the reasons and the numbers
behind them.

The order of judgement, and why:
1. An operational guardrail over its limit (p99 latency, 5xx rate — values the caller reads
   from Prometheus) is harm at once: the candidate is hurting users whatever the statistics.
2. A sample ratio mismatch (the sequential Dirichlet–multinomial test below `srm_alpha` at
   any look, or Pearson's χ² at the one horizon look) makes every comparison untrustworthy:
   invalid.
3. Burn-in: no statistical verdict before `min_units_per_arm` units in each arm; plug-in
   variances are unstable before that (docs/statistics.md §6).  Degenerate arms (0 % or 100 %
   conversions, constants, a zero control under a lift) are judged: analysis.degenerate.
4. The primary metric by the always-valid confidence sequence (running minimum p, running
   intersection of intervals, kept in the state), or by Lan–DeMets boundaries at planned looks;
   α is split over the treatment arms (Bonferroni, which stays valid at any stopping time).
   Metric guardrails are non-inferiority tests: harm when the interval lies wholly beyond the
   margin on the bad side; or, with a two-sided tolerance (a model's mean score that should
   not move), harm when it lies wholly outside ±tolerance on either side.  A margin or a
   tolerance must also be *shown* kept (non_inferior, within_tolerance) before a winner is
   declared (until then, and at the horizon too, the status is winner_pending_guardrails:
   continue).
5. No difference when the interval lies inside ±MDE, at the horizon, or at the final
   group-sequential look without a crossing.

The arithmetic over all comparisons runs in one numpy pass; `decide_many` batches experiments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.decision import Decision, DecisionState
from analysis.degenerate import judged_variance
from analysis.guardrails import Threshold
from analysis.inputs import ExperimentStats
from analysis.looks import Pair, check_ratios, prepare
from analysis.mixture import Array, effect_and_variance, mixture, pvalue_of, rho2_for
from analysis.verdicts import conclude
from experiments.spec import ExperimentSpec

Request = tuple[ExperimentSpec, ExperimentStats, Sequence[Threshold], DecisionState | None]


def decide(
    spec: ExperimentSpec,
    stats: ExperimentStats,
    guardrails: Sequence[Threshold] = (),
    state: DecisionState | None = None,
    *,
    srm: bool = True,
) -> Decision:
    """One look at `spec`'s experiment.  `state` is the previous Decision's `state` (None at the
    first look); it is not changed, and the returned Decision carries the new one.

    `srm=False` leaves the sample ratio unjudged (no SRM p-value, never invalid for it): for an
    observational look at a sample whose split moved while it was collected (a canary's
    steps), where no planned ratio exists to test the counts against."""
    return decide_many([(spec, stats, guardrails, state)], srm=srm)[0]


def decide_many(requests: Sequence[Request], *, srm: bool = True) -> list[Decision]:
    """`decide` for many experiments at once, sharing one vectorised pass."""
    looks = [prepare(*request) for request in requests]
    if srm:
        check_ratios(looks)
    # One row per pair (estimate, variance, p, low, high) as Python floats for the verdicts.
    values = evaluate([p for look in looks for p in look.pairs]).T.tolist()
    decisions, start = [], 0
    for look in looks:
        end = start + len(look.pairs)
        decisions.append(conclude(look, values[start:end]))
        start = end
    return decisions


def evaluate(pairs: Sequence[Pair]) -> Array:
    """Rows: estimate, Var(estimate), running p, running low, running high (one column per
    pair).  Each pair's confidence sequence is tuned to its spec's n* (docs/statistics.md §6)."""
    if not pairs:
        return np.empty((5, 0))
    cols = np.array(
        [
            (
                p.a.mean,
                judged_variance(p.a, p.kind),
                p.a.n,
                p.b.mean,
                judged_variance(p.b, p.kind),
                p.b.n,
                p.alpha,
                p.n_star,
                *p.prior,
            )
            for p in pairs
        ],
        dtype=float,
    ).T
    ma, va, na, mb, vb, nb, alpha, n_star, p0, low0, high0 = cols
    est, v = effect_and_variance(ma, va, na, mb, vb, nb, relative=False)
    relative = np.array([p.relative for p in pairs])
    log_scale = relative & (ma * mb > 0)
    if relative.any():
        est_rel, v_rel = effect_and_variance(ma, va, na, mb, vb, nb, relative=True)
        est, v = np.where(relative, est_rel, est), np.where(relative, v_rel, v)
    if log_scale.any():
        # A lift is tested as the log ratio φ = ln(ȳ_b/ȳ_a), Var φ̂ = s_b²/(ȳ_b² n_b) +
        # s_a²/(ȳ_a² n_a): swapping the arms only flips its sign, so false harm and false
        # winner get α/2 each.  The delta-method lift put ȳ_b² into the variance, which made
        # drops easier to call than gains (0.032 against 0.016 at α = 0.05).  Means of opposite
        # signs or a zero treatment mean keep the delta method.
        with np.errstate(all="ignore"):
            phi, v_phi = np.log(mb / ma), vb / (mb * mb * nb) + va / (ma * ma * na)
        est, v = np.where(log_scale, phi, est), np.where(log_scale, v_phi, v)
    with np.errstate(all="ignore"):
        tau2 = rho2_for(n_star, alpha) * (na + nb) * v
        log_lambda, radius = mixture(est, v, tau2, 0.0, alpha)
        low, high = est - radius, est + radius
    unbounded = ~(radius < np.inf)
    if unbounded.any():
        low, high = np.where(unbounded, -np.inf, low), np.where(unbounded, np.inf, high)
    # Two constant arms: the difference is known exactly (analysis.degenerate), a point
    # interval with p = 0 when the constants differ, instead of the mixture's "no information".
    exact = (v == 0) & (na > 1) & (nb > 1) & (np.abs(est) < np.inf)
    if exact.any():
        low, high = np.where(exact, est, low), np.where(exact, est, high)
        log_lambda = np.where(exact & (est != 0), np.inf, log_lambda)
    if log_scale.any():
        est, v, low, high = _lift_of_log(log_scale, np.sign(ma), est, v, low, high)
    running = np.empty((5, len(pairs)))
    running[0], running[1] = est, v
    np.minimum(p0, pvalue_of(log_lambda), out=running[2])
    np.maximum(low0, low, out=running[3])
    np.minimum(high0, high, out=running[4])
    return running


def _lift_of_log(
    where: Array, sign: Array, phi: Array, v: Array, low: Array, high: Array
) -> tuple[Array, Array, Array, Array]:
    """Back from the log ratio to the lift (ȳ_b − ȳ_a)/|ȳ_a| = sign(ȳ_a)(e^φ − 1), where
    `where`; a monotone map, so the interval's ends map to its ends (swapped for a negative
    control).  The variance is carried over by the delta method, (1 + lift)² Var φ̂, for the
    group-sequential z."""
    with np.errstate(all="ignore"):
        lift = sign * np.expm1(phi)
        ends = sign * np.expm1(low), sign * np.expm1(high)
        lo, hi = np.minimum(*ends), np.maximum(*ends)
        v_lift = np.exp(2 * phi) * v
    pick = np.asarray(where, dtype=bool)
    return (
        np.where(pick, lift, phi),
        np.where(pick, v_lift, v),
        np.where(pick, lo, low),
        np.where(pick, hi, high),
    )
