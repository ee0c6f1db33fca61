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
    def from_report(
        cls, arms: Mapping[str, Any], ratios: Mapping[str, tuple[str, str]] | None = None
    ) -> ExperimentStats:
        """From `{variant: {"exposures": n, "metrics": {name: {...}}}}`.  A ratio metric's
        parts are named in its entry (`numerator`, `denominator`) or in `ratios`."""
        units: dict[str, float] = {}
        metrics: dict[str, dict[str, ArmStats]] = {}
        for variant, arm in arms.items():
            units[variant] = float(arm["exposures"])
            if not units[variant] >= 0:
                raise ValueError(f"arm {variant!r}: exposures {units[variant]:g} is not a count")
            plain = {k: v for k, v in arm["metrics"].items() if "sum" in v}
            for name, values in plain.items():
                try:
                    metrics.setdefault(name, {})[variant] = _arm(values)
                except ValueError as exc:
                    raise ValueError(f"metric {name!r}, arm {variant!r}: {exc}") from None
            for name, values in arm["metrics"].items():
                parts = (ratios or {}).get(name)
                if "numerator" in values:
                    parts = (values["numerator"], values["denominator"])
                if parts is not None and "c_num_den" in values:
                    num, den = _arm(plain[parts[0]]), _arm(plain[parts[1]])
                    comoment = float(values["c_num_den"])
                    metrics.setdefault(name, {})[variant] = ratio_arm(num, den, comoment)
        return cls(units, metrics)


def _arm(values: Mapping[str, Any]) -> ArmStats:
    return ArmStats(
        float(values["n"]),
        float(values["sum"]),
        float(values["sum_sq"]),
        float(values.get("sum_x", 0.0)),
        float(values.get("sum_x2", 0.0)),
        float(values.get("sum_xy", 0.0)),
        m2=_optional(values.get("m2")),
        m2_x=_optional(values.get("m2_x")),
        c_xy=_optional(values.get("c_xy")),
    )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)
