"""What `decide` reads: per variant the number of assigned units (for SRM) and, per metric, the
arm's sufficient statistics.  `from_report` takes the `arms` JSON of abmesh's stats endpoint
(experiments.folding.export) as it is, ratio metrics included."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis.ratio import ratio_arm
from analysis.stats import ArmStats


@dataclass(frozen=True, slots=True)
class ExperimentStats:
    units: Mapping[str, float]  # variant -> assigned (exposed) units
    metrics: Mapping[str, Mapping[str, ArmStats]] = field(default_factory=dict)

    @classmethod
    def from_report(cls, arms: Mapping[str, Any]) -> ExperimentStats:
        """From `{variant: {"exposures": n, "metrics": {name: {...}}}}`."""
        units: dict[str, float] = {}
        metrics: dict[str, dict[str, ArmStats]] = {}
        for variant, arm in arms.items():
            units[variant] = float(arm["exposures"])
            plain = {k: v for k, v in arm["metrics"].items() if "numerator" not in v}
            for name, values in plain.items():
                metrics.setdefault(name, {})[variant] = _arm(values)
            for name, values in arm["metrics"].items():
                if "numerator" in values:
                    num, den = plain[values["numerator"]], plain[values["denominator"]]
                    metrics.setdefault(name, {})[variant] = ratio_arm(
                        _arm(num), _arm(den), float(values["c_num_den"])
                    )
        return cls(units, metrics)


def _arm(values: Mapping[str, Any]) -> ArmStats:
    return ArmStats(
        float(values["n"]),
        float(values["sum"]),
        float(values["sum_sq"]),
        float(values.get("sum_x", 0.0)),
        float(values.get("sum_x2", 0.0)),
        float(values.get("sum_xy", 0.0)),
        m2=None if values.get("m2") is None else float(values["m2"]),
    )
