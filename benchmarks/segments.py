"""Segment flags under continuous monitoring: how often a segment is flagged when nothing
differs, and how soon a harm confined to one small segment is found.

    python benchmarks/segments.py [--runs 1000] [--looks 16] [--seed 20260417]

What is simulated, at the level of sufficient statistics: two arms weighted 50/50 and one
conversion metric (10 % everywhere), with three segment attributes — country (US 40 %, DE 30 %,
FR 20 %, BR 10 %), platform (ios 50 %, android 35 %, web 15 %) and model_input_bucket (short
45 %, medium 35 %, long 20 %), 10 segments — independent of each other, so every unit is in
one segment of each attribute and the attributes overlap as in a real store.  Between two
looks `step` units join each arm (binomial around it) and spread over the 4 × 3 × 3 joint cells
by a multinomial draw; each cell's conversions are a binomial draw.  A look sums the joint
cells into the segments' arms, as the store exports them, and runs analysis.analyse_segments
with the state of the previous look: the statistics the product uses, not a copy.
(a) A/A: no differences anywhere.  (b) −10 % relative harm (10 % → 9 %) in country = BR only,
a 10 % segment; so every platform and bucket segment carries a −1 % harm diluted from it.
The spec: α 0.05, burn-in 100 per arm, horizon (and n* = 2 × horizon) the last look.
Columns of (b), per look: "BH flag", BR flagged as harm by Benjamini–Hochberg; "Bonferroni",
BR's interval at α/m wholly below 0 on its own; "harm_for_rollout", the product's rule (a
flagged harm that the Bonferroni level confirms, in any segment, with segment_harm: rollback);
"confined", BR's flagged harm while the whole population shows no significant harm (it does
carry a −1 % harm, which becomes significant late); "other country", US, DE or FR flagged
(false discoveries); "overlapping", a platform or bucket segment flagged (their diluted harm
is real).  Rates come with their Monte-Carlo standard error; the named sample is the first look
where the rate reaches 80 %.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from analysis.segment_result import SegmentAnalysis, SegmentComparison
from analysis.segments import analyse_segments
from experiments.spec import ExperimentSpec

ATTRIBUTES = {
    "country": {"US": 0.4, "DE": 0.3, "FR": 0.2, "BR": 0.1},
    "platform": {"ios": 0.5, "android": 0.35, "web": 0.15},
    "model_input_bucket": {"short": 0.45, "medium": 0.35, "long": 0.2},
}
HARMED = ("country", "BR")
BASE, ALPHA, ARMS = 0.10, 0.05, ("control", "treatment")
Ints = NDArray[np.int64]

# Joint cells: one per combination of values, with its share of the units and its values.
_GRID = np.array(np.meshgrid(*(np.arange(len(v)) for v in ATTRIBUTES.values()), indexing="ij"))
JOINT = _GRID.reshape(len(ATTRIBUTES), -1).T  # (cells, attributes): value index per attribute
SHARE = np.prod([np.array(list(v.values()))[JOINT[:, i]] for i, v in
                 enumerate(ATTRIBUTES.values())], axis=0)  # fmt: skip


def make_spec(horizon: int) -> ExperimentSpec:
    variants = [
        {"key": k, "header_value": k, "weight": 50, "destination": {"host": k}} for k in ARMS
    ]
    return ExperimentSpec.model_validate(
        {
            "name": "segments-benchmark",
            "variants": variants,
            "metrics": {"primary": {"name": "click", "kind": "conversion"}},
            "analysis": {"alpha": ALPHA, "max_units_per_arm": horizon, "segment_harm": "rollback"},
        }
    )


def paths(
    rng: np.random.Generator, runs: int, looks: int, step: int, harm: float
) -> tuple[Ints, Ints]:
    """Cumulative units and conversions, shape (runs, looks, arms, joint cells); the treatment
    converts at BASE × (1 + harm) in the harmed segment."""
    arrivals = rng.binomial(2 * step, 0.5, (runs, looks))
    per_arm = np.stack([arrivals, 2 * step - arrivals], axis=2)
    units = rng.multinomial(per_arm, SHARE)
    rate = np.full((len(ARMS), len(SHARE)), BASE)
    column = list(ATTRIBUTES).index(HARMED[0])
    value = list(ATTRIBUTES[HARMED[0]]).index(HARMED[1])
    rate[1, JOINT[:, column] == value] *= 1 + harm
    conversions = rng.binomial(units, rate)
    return np.cumsum(units, axis=1), np.cumsum(conversions, axis=1)


def cells_at(units: Ints, conversions: Ints) -> tuple[dict[str, Any], dict[str, Any]]:
    """The segments' arms and the whole population's, from one look's (arms, joint cells)."""

    def arms(mask: NDArray[np.bool_]) -> dict[str, Any]:
        n, c = units[:, mask].sum(axis=1).tolist(), conversions[:, mask].sum(axis=1).tolist()
        return {
            arm: {"exposures": n[i], "metrics": {"click": {"n": n[i], "sum": c[i], "sum_sq": c[i]}}}
            for i, arm in enumerate(ARMS)
        }

    cells = {
        attribute: {value: arms(JOINT[:, i] == j) for j, value in enumerate(values)}
        for i, (attribute, values) in enumerate(ATTRIBUTES.items())
    }
    return cells, arms(np.ones(len(SHARE), dtype=bool))


def monitor(spec: ExperimentSpec, units: Ints, conversions: Ints) -> list[SegmentAnalysis]:
    """One run's looks, each carrying the previous look's state."""
    results, state = [], None
    for look in range(units.shape[0]):
        cells, overall = cells_at(units[look], conversions[look])
        result = analyse_segments(cells, spec, overall=overall, state=state)
        results.append(result)
        state = result.state
    return results


def naive_alarm(units: Ints, conversions: Ints) -> bool:
    """The reference without any of it: a two-proportion z-test (unpooled) per segment at
    every look, at α, uncorrected.  Whether it ever rejects in a run (looks, arms, cells)."""
    for i, values in enumerate(ATTRIBUTES.values()):
        for j in range(len(values)):
            mask = JOINT[:, i] == j
            n, c = units[:, :, mask].sum(axis=2), conversions[:, :, mask].sum(axis=2)
            p = c / n
            se = np.sqrt((p * (1 - p) / n).sum(axis=1))
            z = np.abs(p[:, 1] - p[:, 0]) / np.where(se > 0, se, np.inf)
            if (2 * special.ndtr(-z) < ALPHA).any():
                return True
    return False


def comparisons(result: SegmentAnalysis) -> list[tuple[str, str, SegmentComparison]]:
    return [(s.attribute, s.value, c) for s in result.segments for c in s.comparisons]


def excludes_zero(c: SegmentComparison) -> bool:
    """The Bonferroni-level interval excludes 0 on either side."""
    low, high = c.bonferroni_low, c.bonferroni_high
    return (low is not None and low > 0) or (high is not None and high < 0)


def null_rates(results: list[SegmentAnalysis]) -> dict[str, bool]:
    """Whether each false alarm happened at any look of an A/A run."""
    every = [c for r in results for _, _, c in comparisons(r)]
    return {
        "any segment flagged (BH)": any(c.flagged for c in every),
        "any Bonferroni interval excludes 0": any(excludes_zero(c) for c in every),
        "harm_for_rollout": any(r.harm_for_rollout for r in results),
        "any segment SRM": any(r.srm_mismatches for r in results),
    }


def harm_rates(result: SegmentAnalysis) -> dict[str, bool]:
    """At one look of a run with the harm: what the harmed segment shows, and whether another
    country (no harm: a false discovery) or a platform or bucket segment (a real −1 % harm,
    diluted from BR) is flagged."""
    every = comparisons(result)
    harmed = [c for a, v, c in every if (a, v) == HARMED]
    return {
        "BH flag": any(c.flagged and c.direction == "harm" for c in harmed),
        "Bonferroni": any(excludes_zero(c) and c.direction == "harm" for c in harmed),
        "harm_for_rollout": result.harm_for_rollout,
        "confined": any(c.confined for c in harmed),
        "other country": any(c.flagged for a, v, c in every if a == HARMED[0] and v != HARMED[1]),
        "overlapping": any(c.flagged for a, _, c in every if a != HARMED[0]),
    }


def rate(flags: list[bool]) -> str:
    p = sum(flags) / len(flags)
    return f"{p:.3f} ± {math.sqrt(max(p * (1 - p), 1e-12) / len(flags)):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=16)
    parser.add_argument("--step", type=int, default=50_000, help="units per arm between looks")
    parser.add_argument("--seed", type=int, default=20260417)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    spec = make_spec(args.looks * args.step)
    start = time.perf_counter()
    print(f"{args.runs} runs × {args.looks} looks, {args.step} units per arm between looks,"
          f" {len(SHARE)} joint cells, {sum(map(len, ATTRIBUTES.values()))} segments")  # fmt: skip
    null = [
        null_rates(monitor(spec, *run))
        | {"naive z-test, every look, no correction": naive_alarm(*run)}
        for run in zip(*paths(rng, args.runs, args.looks, args.step, 0.0), strict=True)
    ]
    print(f"\n(a) no true difference: rate of runs with a false alarm at any look (α {ALPHA})")
    for name in null[0]:
        print(f"  {name:40} {rate([r[name] for r in null]):>15}")
    runs = [monitor(spec, *run) for run in zip(*paths(rng, args.runs, args.looks, args.step,
                                                      -0.10), strict=True)]  # fmt: skip
    share = ATTRIBUTES[HARMED[0]][HARMED[1]]
    print(f"\n(b) −10 % harm in {HARMED[0]}={HARMED[1]} ({share:.0%} of units): rate at each look")
    columns = list(harm_rates(runs[0][0]))
    print(f"  {'units/arm':>9} {'in BR':>7} " + " ".join(f"{c:>15}" for c in columns))
    named: dict[str, int] = {}
    for look in range(args.looks):
        at = [harm_rates(r[look]) for r in runs]
        n = (look + 1) * args.step
        cells = " ".join(f"{rate([a[c] for a in at]):>15}" for c in columns)
        print(f"  {n:>9} {round(n * share):>7} {cells}")
        for c in columns[:3]:
            if c not in named and sum(a[c] for a in at) >= 0.8 * len(at):
                named[c] = n
    for c in columns[:3]:
        where = f"{named[c]} units per arm" if c in named else "not within the looks"
        print(f"  80 % reached by {c}: {where}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
