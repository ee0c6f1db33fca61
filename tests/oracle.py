"""The definition of the per-arm statistics, computed with pandas from raw events.

Independent of `experiments.folding`: deduplicate by event_id, total each unit's events per
metric (conversions: 1 if any), give exposed units without events 0, then sum per arm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def expected_arms(
    events: Sequence[Mapping[str, Any]],
    exposed: Mapping[str, str],
    metrics: Mapping[str, str],  # metric -> kind ("conversion" or "sum")
    ratios: Mapping[str, tuple[str, str]] | None = None,  # ratio -> (numerator, denominator)
) -> dict[str, Any]:
    frame = pd.DataFrame(list(events)).drop_duplicates("event_id", keep="first")
    frame = frame[frame["unit"].isin(list(exposed))]
    if "pre_period" not in frame:
        frame["pre_period"] = False
    frame["pre_period"] = frame["pre_period"].fillna(False).astype(bool)
    frame["value"] = frame.get("value", pd.Series(1.0, index=frame.index)).fillna(1.0)
    arms = pd.Series(exposed, name="variant")
    out: dict[str, Any] = {}
    for variant, units in arms.groupby(arms):
        index = pd.Index(units.index, name="unit")
        metric_stats: dict[str, Any] = {}
        values: dict[str, np.ndarray] = {}
        for metric, kind in metrics.items():

            def unit_values(
                pre: bool, metric: str = metric, kind: str = kind, index: pd.Index = index
            ) -> np.ndarray:
                rows = frame[(frame["metric"] == metric) & (frame["pre_period"] == pre)]
                if kind == "conversion":
                    per_unit = rows.groupby("unit").size().clip(upper=1).astype(float)
                else:
                    per_unit = rows.groupby("unit")["value"].sum()
                return per_unit.reindex(index, fill_value=0.0).to_numpy(dtype=float)

            y, x = unit_values(False), unit_values(True)
            values[metric] = y
            metric_stats[metric] = {
                "n": len(index),
                "sum": y.sum(),
                "sum_sq": (y * y).sum(),
                "m2": ((y - y.mean()) ** 2).sum(),
                "sum_x": x.sum(),
                "sum_x2": (x * x).sum(),
                "m2_x": ((x - x.mean()) ** 2).sum(),
                "sum_xy": (x * y).sum(),
                "c_xy": ((x - x.mean()) * (y - y.mean())).sum(),
            }
        for name, (num, den) in (ratios or {}).items():
            a, b = values[num], values[den]
            metric_stats[name] = {
                "sum_num_den": (a * b).sum(),
                "c_num_den": ((a - a.mean()) * (b - b.mean())).sum(),
            }
        out[str(variant)] = {"exposures": len(index), "metrics": metric_stats}
    return out


def assert_same_arms(
    got: Mapping[str, Any], expected: Mapping[str, Any], rel: float = 1e-9
) -> None:
    assert set(got) == set(expected)
    for variant, arm in expected.items():
        assert got[variant]["exposures"] == arm["exposures"], variant
        for metric, stats in arm["metrics"].items():
            for key, value in stats.items():
                actual = got[variant]["metrics"][metric][key]
                assert math.isclose(actual, value, rel_tol=rel, abs_tol=1e-9), (
                    variant,
                    metric,
                    key,
                    actual,
                    value,
                )
