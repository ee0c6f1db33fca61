"""Type-I error under continuous monitoring, power and expected stopping sample of each method.

    python benchmarks/sequential_errors.py [--experiments 2000] [--seed 20240601] [--no-decide]

A/A: both arms draw from the same distribution; the experiment is looked at every 100 units per
arm up to 10,000 per arm (100 looks), α = 0.05 two-sided.  Data: normal(0, 1), Bernoulli
p = 0.01 and lognormal(0, 1).  Methods:
- naive: Welch z-test at every look, acting on the first p < 0.05;
- fixed: the same test once, at 10,000 per arm;
- mSPRT / CS: the normal-mixture confidence sequence (analysis.mixture, n* = 20,000 = both arms
  at the horizon), running minimum p, burn-in of 100 units (and one success and one failure)
  per arm;
- GST OBF / Pocock: Lan–DeMets boundaries (analysis.gst_boundaries) at 10 looks, every 1,000;
- decide(): abmesh's own decision at every look (statuses winner or harm count as rejections),
  sequential and group-sequential (OBF, 10 looks), run through `decide_many`.
Each rate is printed with its Monte-Carlo standard error.

Alternative: the treatment mean is shifted by the design MDE, the effect a fixed-horizon test
at 10,000 per arm detects with 80 % power; sequential methods may run to 20,000 per arm (the
GST to its planned 10,000).  Printed: power (rejections in the right direction) and the
expected units per arm at stopping, against the fixed-horizon 10,000.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from specs import two_arms

from analysis import ArmStats, ExperimentStats, Status, decide_many, gst_boundaries
from analysis.decision import DecisionState
from analysis.mixture import effect_and_variance, mixture, pvalue_of, rho2_for
from experiments.spec import ExperimentSpec

ALPHA, STEP, FIXED_N, MIN_N = 0.05, 100, 10_000, 100
Array = NDArray[np.float64]
Draw = Callable[[np.random.Generator, tuple[int, int], float], Array]

# name -> (draw with the mean shifted by the third argument, standard deviation)
DATA: dict[str, tuple[Draw, float]] = {
    "normal": (lambda rng, shape, shift: rng.normal(shift, 1.0, shape), 1.0),
    "bernoulli p=0.01": (
        lambda rng, shape, shift: (rng.random(shape) < 0.01 + shift).astype(float),
        math.sqrt(0.0099),
    ),
    "lognormal(0,1)": (
        lambda rng, shape, shift: rng.lognormal(0.0, 1.0, shape) + shift,
        math.sqrt((math.e - 1) * math.e),
    ),
}


def spec(method: str, kind: str) -> ExperimentSpec:
    analysis: dict[str, object] = {"n_star": 2 * FIXED_N, "min_units_per_arm": MIN_N}
    if method == "group-sequential":
        analysis |= {"method": method, "max_units_per_arm": FIXED_N, "looks": 10}
    return two_arms(f"bench-{method}", {"primary": {"name": "y", "kind": kind}}, analysis)


@dataclass
class Method:
    """A rule's running state over all experiments: when each stopped and in which direction."""

    name: str
    stopped_at: Array
    sign: Array
    state: list[DecisionState | None] = field(default_factory=list)

    @classmethod
    def make(cls, name: str, experiments: int) -> Method:
        return cls(name, np.full(experiments, np.nan), np.zeros(experiments))

    def stop(self, where: NDArray[np.bool_], n: int, sign: Array) -> None:
        new = where & np.isnan(self.stopped_at)
        self.stopped_at[new] = n
        self.sign[new] = sign[new]


def simulate(
    draw: Draw,
    shift: float,
    experiments: int,
    max_n: int,
    rng: np.random.Generator,
    with_decide: bool,
    kind: str,
) -> list[Method]:
    methods = {
        m: Method.make(m, experiments)
        for m in ("naive", "fixed", "mSPRT / CS", "GST OBF", "GST Pocock")
    }
    if with_decide:
        methods |= {m: Method.make(m, experiments) for m in ("decide() sequential", "decide() GST")}
        specs = {
            "decide() sequential": spec("sequential", kind),
            "decide() GST": spec("group-sequential", kind),
        }
        for m in specs:
            methods[m].state = [None] * experiments
    sums = np.zeros((4, experiments))  # Σa, Σa², Σb, Σb²
    running_p = np.ones(experiments)
    gst = {
        "GST OBF": gst_boundaries([k / 10 for k in range(1, 11)], alpha=ALPHA, spending="obf").z,
        "GST Pocock": gst_boundaries(
            [k / 10 for k in range(1, 11)], alpha=ALPHA, spending="pocock"
        ).z,
    }
    rho2 = float(rho2_for(2 * FIXED_N, ALPHA))
    for look in range(1, max_n // STEP + 1):
        n = look * STEP
        a, b = draw(rng, (experiments, STEP), 0.0), draw(rng, (experiments, STEP), shift)
        sums += (a.sum(1), (a * a).sum(1), b.sum(1), (b * b).sum(1))
        mean_a, mean_b = sums[0] / n, sums[2] / n
        var_a = np.maximum(sums[1] - n * mean_a**2, 0) / (n - 1)
        var_b = np.maximum(sums[3] - n * mean_b**2, 0) / (n - 1)
        est, v = effect_and_variance(mean_a, var_a, n, mean_b, var_b, n, relative=False)
        with np.errstate(all="ignore"):
            z = est / np.sqrt(v)
        sign = np.sign(est)
        if n <= FIXED_N:
            methods["naive"].stop(np.abs(z) >= stats.norm.isf(ALPHA / 2), n, sign)
        if n == FIXED_N:
            methods["fixed"].stop(np.abs(z) >= stats.norm.isf(ALPHA / 2), n, sign)
        ready = (
            (sums[0] > 0) & (sums[0] < n) & (sums[2] > 0) & (sums[2] < n)
            if kind == "conversion"
            else True
        )
        if kind == "conversion":  # the proportion variance p(1 − p), ddof 0, as decide uses
            v = mean_a * (1 - mean_a) / n + mean_b * (1 - mean_b) / n
        log_lambda, _ = mixture(est, v, rho2 * 2 * n * v, 0.0, ALPHA)
        running_p = np.where(
            ready & (n >= MIN_N), np.minimum(running_p, pvalue_of(log_lambda)), running_p
        )
        methods["mSPRT / CS"].stop(running_p < ALPHA, n, sign)
        if n % (FIXED_N // 10) == 0 and n <= FIXED_N:
            for name, bounds in gst.items():
                methods[name].stop(np.abs(z) >= bounds[n // (FIXED_N // 10) - 1], n, sign)
        if with_decide:
            for name, s in specs.items():
                _decide(methods[name], s, sums, n)
    return list(methods.values())


def _decide(method: Method, s: ExperimentSpec, sums: Array, n: int) -> None:
    live = np.flatnonzero(np.isnan(method.stopped_at))
    requests = [
        (
            s,
            ExperimentStats(
                {"control": n, "treatment": n},
                {
                    "y": {
                        "control": ArmStats(n, sums[0, i], sums[1, i]),
                        "treatment": ArmStats(n, sums[2, i], sums[3, i]),
                    }
                },
            ),
            (),
            method.state[i],
        )
        for i in live
    ]
    for i, d in zip(live, decide_many(requests), strict=True):
        method.state[i] = d.state
        if d.status in (Status.WINNER, Status.HARM) and np.isnan(method.stopped_at[i]):
            method.stopped_at[i] = n
            method.sign[i] = 1.0 if d.status is Status.WINNER else -1.0
        elif d.status is Status.NO_DIFFERENCE and np.isnan(method.stopped_at[i]):
            method.stopped_at[i], method.sign[i] = n, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--no-decide", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    k = args.experiments
    z_sum = stats.norm.isf(ALPHA / 2) + stats.norm.isf(0.2)
    print(f"{k} simulated experiments per cell, α = {ALPHA}, looks every {STEP} units per arm\n")
    head = f"{'data':<18} {'method':<20} {'type-I (A/A)':>15} {'power':>7} {'E[n]/arm':>9}"
    print(f"{head} {'vs fixed':>8}")
    for name, (draw, sd) in DATA.items():
        kind = "conversion" if name.startswith("bernoulli") else "mean"
        started = time.perf_counter()
        null = simulate(draw, 0.0, k, FIXED_N, rng, not args.no_decide, kind)
        mde = z_sum * sd * math.sqrt(2 / FIXED_N)
        alt = simulate(draw, mde, k, 2 * FIXED_N, rng, not args.no_decide, kind)
        for m0, m1 in zip(null, alt, strict=True):
            rejected = ~np.isnan(m0.stopped_at) & (m0.sign != 0)
            rate = rejected.mean()
            se = math.sqrt(max(rate * (1 - rate), 1e-12) / k)
            power = float(np.mean(m1.sign > 0))
            horizon = (
                FIXED_N if m1.name in ("naive", "fixed", "GST OBF", "GST Pocock") else 2 * FIXED_N
            )
            expected_n = float(np.where(np.isnan(m1.stopped_at), horizon, m1.stopped_at).mean())
            print(
                f"{name:<18} {m0.name:<20} {rate:7.4f} ± {se:.4f} {power:7.3f} {expected_n:9.0f}"
                f" {expected_n / FIXED_N:8.2f}"
            )
        print(f"{'':<18} (MDE {mde:.4g}; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
