"""The two-arm 50/50 spec the analysis benchmarks decide on."""

from __future__ import annotations

from typing import Any

from experiments import load_spec
from experiments.spec import ExperimentSpec


def two_arms(
    name: str, metrics: dict[str, Any], analysis: dict[str, Any] | None = None
) -> ExperimentSpec:
    arms = [("control", "a", "v1"), ("treatment", "b", "v2")]
    return load_spec(
        {
            "name": name,
            "variants": [
                {"key": k, "header_value": h, "weight": 50, "destination": {"host": d}}
                for k, h, d in arms
            ],
            "metrics": metrics,
            "analysis": analysis or {},
        }
    )
