"""Per-arm distributions of unit values, as a sketch folded with the sums.

A mean hides what a data scientist asks next: did everyone move a little, or a few a lot?  For
every `sum`/`mean` series (not conversions, whose unit values are 0 or 1, nor covariates) the
fold counts each arm's non-zero unit values in logarithmic bins, 20 per decade (each bin
spans a factor of 10^(1/20) ≈ 1.122, so a quantile read from them is within 12 % of the
value), mirrored for negative values; units at 0 are the arm's `n − N`.  A bin is a count
under the key `variant|H|series|bin`, so it is added across partitions and kept exact
under any batching, like the other counts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.folding import stat_key, variants_of

PER_DECADE = 20
LOW_BIN, HIGH_BIN = -15 * PER_DECADE, 16 * PER_DECADE  # 1e-15 .. 1e16 (values are at most 1e15)
_SPAN = HIGH_BIN - LOW_BIN + 1  # negative values' codes are shifted below every positive one's


def bins(values: np.ndarray) -> Counter[str]:
    """How many of the non-zero `values` fall in each bin: `p<k>` holds [10^(k/20),
    10^((k+1)/20)), `n<k>` the same interval of negative values."""
    values = values[values != 0]
    if not len(values):
        return Counter()
    k = np.clip(np.floor(np.log10(np.abs(values)) * PER_DECADE), LOW_BIN, HIGH_BIN).astype(np.int64)
    # One code per (sign, bin), counted in numpy: a batch has thousands of values, few bins.
    codes, counts = np.unique(np.where(values > 0, k, k - _SPAN), return_counts=True)
    return Counter({
        (f"p{c}" if c >= LOW_BIN else f"n{c + _SPAN}"): int(n)
        for c, n in zip(codes.tolist(), counts.tolist(), strict=True)
    })


def edges(label: str) -> tuple[float, float]:
    """The interval a bin holds, low < high (for a negative bin, both negative)."""
    k = int(label[1:])
    low, high = 10 ** (k / PER_DECADE), 10 ** ((k + 1) / PER_DECADE)
    return (low, high) if label[0] == "p" else (-high, -low)


def export_distributions(
    stats: Mapping[str, float], series: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Per series and arm: `units`, `zeros` and the non-empty bins in increasing order as
    `[low, high, units]`."""
    out: dict[str, dict[str, Any]] = {}
    for s in series:
        prefix_len = len(f"|H|{s}|")
        per_arm: dict[str, Any] = {}
        for variant in variants_of(stats):
            head = f"{variant}|H|{s}|"
            counts = [
                (edges(key[len(variant) + prefix_len :]), value)
                for key, value in stats.items()
                if key.startswith(head) and value > 0
            ]
            n = stats.get(stat_key(variant, "n"), 0.0)
            nonzero = stats.get(stat_key(variant, f"N|{s}"), 0.0)
            per_arm[variant] = {
                "units": int(n),
                "zeros": int(n - nonzero),
                "bins": [[lo, hi, int(c)] for (lo, hi), c in sorted(counts)],
            }
        out[s] = per_arm
    return out


def quantile(dist: Mapping[str, Any], q: float) -> float | None:
    """The q-quantile of an arm's unit values from its bins (log-interpolated inside a bin),
    zeros included; None for an arm without units."""
    total = dist["units"]
    if not total:
        return None
    rows = [[lo, hi, c] for lo, hi, c in dist["bins"]]
    negative = [r for r in rows if r[1] <= 0]
    positive = [r for r in rows if r[0] > 0]
    ordered = negative + ([[0.0, 0.0, dist["zeros"]]] if dist["zeros"] else []) + positive
    target, seen = q * total, 0.0
    for lo, hi, count in ordered:
        if seen + count >= target and count:
            if lo == hi:
                return float(lo)
            f = (target - seen) / count
            if lo > 0:
                return float(math.exp(math.log(lo) + f * (math.log(hi) - math.log(lo))))
            return float(-math.exp(math.log(-lo) + f * (math.log(-hi) - math.log(-lo))))
        seen += count
    return float(ordered[-1][1]) if ordered else None
