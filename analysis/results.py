"""The shared shape of every test result: a frozen dataclass with `statistic`, `pvalue`,
`estimate`, `confidence_interval()` and a `summary()` that reads as text and renders as HTML
in a notebook."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class InferenceResult:
    method: str
    statistic: float
    pvalue: float
    estimate: float  # the effect: treatment (b) minus control (a), minus nothing else
    ci_low: float
    ci_high: float
    alpha: float

    def confidence_interval(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    def _rows(self) -> list[tuple[str, str]]:
        rows = [("method", self.method)]
        for f in fields(self):
            if f.name not in ("method", "ci_low", "ci_high"):
                rows.append((f.name, _fmt(getattr(self, f.name))))
        level = f"{1 - self.alpha:.0%} interval"
        rows.append((level, f"[{_fmt(self.ci_low)}, {_fmt(self.ci_high)}]"))
        return rows

    def summary(self) -> str:
        width = max(len(k) for k, _ in self._rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self._rows())

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self._rows()
        )
        return f"<table>{cells}</table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)
