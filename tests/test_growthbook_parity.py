"""`hash: growthbook-v2` buckets every unit exactly as the `growthbook` package does."""

from __future__ import annotations

from typing import Any

import pytest
from growthbook import Experiment, GrowthBook

from assignment import assign_many
from experiments import load_spec

# ASCII ids, non-BMP characters (UTF-16 surrogate pairs: where SDKs once disagreed), accents, CJK.
UNITS = [f"user-{i}" for i in range(10_000)] + [
    f"{prefix}{i}" for i in range(500) for prefix in ("😀-", "é", "用户", "\U0001d518")
]

CONFIGS: list[dict[str, Any]] = [
    {"name": "ranker-v2", "weights": [50, 50]},
    {"name": "canary", "weights": [95, 5]},
    {"name": "three-way", "weights": [33.34, 33.33, 33.33], "salt": "seed-2026"},
    {"name": "partial", "weights": [20, 80], "coverage": 0.37},
    {"name": "tiny", "weights": [0.01, 99.99], "coverage": 0.9999},
    {"name": "layered", "weights": [50, 50], "layer": {"name": "search", "start": 10, "end": 60}},
]


@pytest.mark.parametrize("config", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_same_arm_as_growthbook(config: dict[str, Any]) -> None:
    weights = config["weights"]
    spec = load_spec(
        {
            "name": config["name"],
            "hash": "growthbook-v2",
            "salt": config.get("salt"),
            "coverage": config.get("coverage", 1),
            "layer": config.get("layer"),
            "variants": [
                {
                    "key": f"v{i}",
                    "header_value": f"g{i}",
                    "weight": w,
                    "destination": {"host": "model"},
                }
                for i, w in enumerate(weights)
            ],
        }
    )
    layer = config.get("layer")
    experiment = Experiment(
        key=config["name"],
        variations=list(range(len(weights))),
        weights=[w / 100 for w in weights],
        coverage=config.get("coverage", 1),
        hashVersion=2,
        seed=config.get("salt"),
        namespace=(layer["name"], layer["start"] / 100, layer["end"] / 100) if layer else None,
    )
    gb = GrowthBook(attributes={})
    ours = assign_many(spec, UNITS)
    mismatches = []
    for unit, mine in zip(UNITS, ours, strict=True):
        gb.set_attributes({"id": unit})
        theirs = gb.run(experiment)
        expected = (theirs.inExperiment, theirs.variationId if theirs.inExperiment else 0)
        if (mine.in_experiment, int(mine.variant[1:])) != expected:
            mismatches.append((unit, mine.variant, mine.in_experiment, expected))
    assert mismatches == []
    # The comparison covered enrolled units in the expected share, not only exclusions.
    share = config.get("coverage", 1) * ((layer["end"] - layer["start"]) / 100 if layer else 1)
    enrolled = sum(a.in_experiment for a in ours) / len(UNITS)
    assert enrolled == pytest.approx(share, abs=0.02)
