"""The anytime-valid confidence sequences of the shadow phase (docs/statistics.md §18;
analysis.shadow judges with them), on numpy arrays so that one call serves one phase or a
benchmark's thousand runs.  Each is valid from the first pair and at every look, with no
running state: it is a function of the cumulative sums in experiments.shadow_sums alone.

Disagreement rate p (x disagreements in n labelled pairs): the Beta(½, ½) mixture of the
Bernoulli likelihood ratios, M_n(p) = B(x + ½, n − x + ½) / (B(½, ½) p^x (1 − p)^(n − x)), is a
nonnegative martingale under p, so {p : M_n(p) < 1/α} covers p at all n with probability
≥ 1 − α (Ville's inequality; Robbins, "Statistical methods related to the law of the iterated
logarithm", Ann. Math. Statist. 41(5), 1970; the conjugate beta-binomial mixture of Howard,
Ramdas, McAuliffe, Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Ann. Statist. 49(2), 2021, of which confseq's `BetaBinomialMixture` is the sub-Bernoulli
generalisation).  The prior is the "half a success" that keeps
the upper bound shrinking when no disagreement is seen; ln M is convex in p, so the set is an
interval around x/n.

Mean score shift μ = E d, d = candidate − stable ∈ [−R, R] with R the width of score_range:
for every λ ∈ [0, 1) and ξ ≥ −1, exp(λξ − ψ_E(λ) ξ²) ≤ 1 + λξ with ψ_E(λ) = −ln(1 − λ) − λ
(Fan, Grama, Liu, "Exponential inequalities for martingales with applications", Electron.
J. Probab. 20, 2015, Lemma 4.1), the step behind Howard et al.'s empirical-Bernstein CS
(2021, Theorem 4).  With ξ_i = ±(d_i − μ)/c, c = 2R, the product over pairs is a supermartingale
under μ; centring at the hypothesised μ itself (a constant, hence predictable) makes
Σξ_i = ±(Σd − nμ)/c and Σξ_i² = (Σd² − 2μΣd + nμ²)/c² functions of the sums kept.  Mixing over
a grid of λ (uniform weights) and testing each side at α/2 gives the CS; when every d_i = 0
the penalty vanishes and the CS shrinks like ln(1/α)/n, so identical models pass.  λ ≤ ½ keeps
each side monotone in μ (2ψ_E(λ) < λ and |d̄ − μ| ≤ c), so the bounds are single roots and a
test at the tolerance decides exactly.

Score CDFs: the time-uniform DKW inequality of Howard & Ramdas, "Sequential estimation of
quantiles with applications to A/B-testing and best-arm identification", Bernoulli 28(3),
2022 (arXiv 1906.09712), Theorem 2 with m = 1, A = 0.85 and C = 0.8 ln(1612/α): with
probability ≥ 1 − α, for all t ≥ 1 and all x, |F̂_t(x) − F(x)| ≤ 0.85 √((ln ln(e t)
+ 0.8 ln(1612/α))/t).  The constants are the paper's; tests/test_analysis_shadow.py re-derives
them from the theorem's general error bound (as the authors' confseq computes it) for α ≤ 0.4
and checks the band's coverage by simulation.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

Array = NDArray[np.float64]

LAMBDAS = 0.5 * 2.0 ** (-np.arange(30) / 2.0)  # ½ down to 2·10⁻⁵: effects down to ~10⁻⁵ R
_LOG_W = -math.log(len(LAMBDAS))
_PSI = -np.log1p(-LAMBDAS) - LAMBDAS
DKW_A, DKW_C2, DKW_C3 = 0.85, 0.8, 1612.0


def disagreement_log_mixture(x: ArrayLike, n: ArrayLike, p: ArrayLike) -> Array:
    """ln M_n(p) for x disagreements in n pairs (0 where n = 0)."""
    xs, ns, ps = (np.asarray(v, dtype=np.float64) for v in (x, n, p))
    with np.errstate(divide="ignore"):
        out = (special.betaln(xs + 0.5, ns - xs + 0.5) - special.betaln(0.5, 0.5)
               - special.xlogy(xs, ps) - special.xlog1py(ns - xs, -ps))  # fmt: skip
    return np.asarray(out, dtype=np.float64)


def disagreement_cs(x: int, n: int, alpha: float) -> tuple[float, float]:
    """The (1 − α) bounds on the disagreement rate after x of n pairs ((0, 1) with none)."""
    if n <= 0:
        return 0.0, 1.0
    level, share = math.log(1 / alpha), x / n

    def excess(p: float) -> float:
        return float(disagreement_log_mixture(x, n, p)) - level

    low = 0.0 if x == 0 else optimize.brentq(excess, 1e-300, share, xtol=1e-15)
    high = 1.0 if x == n else optimize.brentq(excess, share, 1 - 1e-16, xtol=1e-15)
    return float(low), float(high)


def shift_log_mixtures(
    n: ArrayLike, sum_d: ArrayLike, sum_d2: ArrayLike, mu: ArrayLike, span: float
) -> tuple[Array, Array]:
    """(ln M⁺, ln M⁻) at μ: M⁺ grows when the mean is above μ, M⁻ when below (0 where n = 0)."""
    ns, s1, s2, m = (np.asarray(v, dtype=np.float64)[..., None] for v in (n, sum_d, sum_d2, mu))
    c = 2.0 * span
    s = (s1 - ns * m) / c
    v = np.maximum(s2 - 2 * m * s1 + ns * m * m, 0.0) / (c * c)  # ≥ 0 up to rounding
    up = np.logaddexp.reduce(_LOG_W + LAMBDAS * s - _PSI * v, axis=-1)
    down = np.logaddexp.reduce(_LOG_W - LAMBDAS * s - _PSI * v, axis=-1)
    empty = ns[..., 0] <= 0
    return np.where(empty, 0.0, up), np.where(empty, 0.0, down)


def shift_cs(n: int, sum_d: float, sum_d2: float, span: float, alpha: float) -> tuple[float, float]:
    """The (1 − α) bounds on the mean shift ([−R, R] with no pairs)."""
    if n <= 0:
        return -span, span
    level = math.log(2 / alpha)
    mean = min(max(sum_d / n, -span), span)

    def side(mu: float, which: int) -> float:
        return float(shift_log_mixtures(n, sum_d, sum_d2, mu, span)[which]) - level

    # ln M⁺ falls and ln M⁻ rises with μ, and both are ≤ 0 at the mean (where Σξ = 0).
    low, high = -span, span
    if side(-span, 0) >= 0:
        low = optimize.brentq(side, -span, mean, args=(0,), xtol=1e-14)
    if side(span, 1) >= 0:
        high = optimize.brentq(side, mean, span, args=(1,), xtol=1e-14)
    return float(low), float(high)


def dkw_radius(t: ArrayLike, alpha: float) -> Array:
    """The time-uniform DKW radius after t observations (inf before the first)."""
    ts = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = np.log1p(np.log(np.maximum(ts, 1.0))) + DKW_C2 * math.log(DKW_C3 / alpha)
        out = DKW_A * np.sqrt(inner / ts)
    return np.asarray(np.where(ts >= 1, out, np.inf), dtype=np.float64)


def cdf_gaps(hist_a: ArrayLike, hist_b: ArrayLike) -> tuple[Array, Array]:
    """(D, D⁺) of two histograms over the same bins (last axis; 0 where a side is empty).

    D = max over bin edges |F̂_a − F̂_b|, exact there (bins are [e_{k−1}, e_k), so the counts
    below an edge are the left limits).  Inside bin k either CDF can still move by its own
    mass, so the sup over all x is at most D⁺ = max_k max(F̂_a(e_k) − F̂_b(e_{k−1}),
    F̂_b(e_k) − F̂_a(e_{k−1})) ≤ D + the largest single-bin mass; because the DKW band holds at
    every x at once, the true CDFs obey the same bound with the two radii added."""
    a, b = (np.asarray(h, dtype=np.float64) for h in (hist_a, hist_b))
    na, nb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fa_hi, fb_hi = np.cumsum(a, axis=-1) / na, np.cumsum(b, axis=-1) / nb
        fa_lo, fb_lo = fa_hi - a / na, fb_hi - b / nb
    gap = np.abs(fa_hi - fb_hi).max(axis=-1)
    gap_plus = np.maximum((fa_hi - fb_lo).max(axis=-1), (fb_hi - fa_lo).max(axis=-1))
    empty = (na[..., 0] <= 0) | (nb[..., 0] <= 0)
    return np.where(empty, 0.0, gap), np.where(empty, 0.0, gap_plus)
