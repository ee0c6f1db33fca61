"""One guardrail's reading as every consumer sees it (the controller's tick, the audit log,
the verdict for Flagger and Argo, `analysis.decide`): a status, the value against its limit,
and for the sequential kinds (relative, ceiling) the always-valid p against α."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from analysis import Threshold

Status = Literal["pass", "fail", "no_data", "not_enough_data", "error"]


@dataclass(frozen=True, slots=True)
class Reading:
    name: str
    status: Status
    # threshold: the reading; relative: the observed rate ratio; ceiling: the observed share
    value: float | None
    # threshold: the limit; relative: the tolerated ratio 1 + tolerance; ceiling: the share
    limit: float
    bound: str
    message: str = ""
    kind: str = "threshold"
    pvalue: float | None = None  # sequential kinds: always-valid p that the limit is exceeded
    alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value, "limit": self.limit,
                               "status": self.status}  # fmt: skip
        if self.kind != "threshold":
            out |= {"kind": self.kind, "pvalue": self.pvalue, "alpha": self.alpha}
        return {**out, "message": self.message} if self.message else out

    def describe(self) -> str:
        if self.kind != "threshold" and self.status in ("pass", "fail"):
            verdict = {
                ("relative", "fail"): "worse than stable beyond its tolerance",
                ("relative", "pass"): "no evidence of a rate beyond its tolerance",
                ("ceiling", "fail"): "over its ceiling",
                ("ceiling", "pass"): "no evidence of a share over its ceiling",
            }[(self.kind, self.status)]
            return f"guardrail {self.name}: {verdict} ({self.message})"
        if self.status in ("pass", "fail"):
            relation = "within" if self.status == "pass" else (
                "over" if self.bound == "max" else "under")  # fmt: skip
            value = f"{self.value:.4g}"
            return f"guardrail {self.name} is {value}, {relation} its limit {self.limit:.4g}"
        what = {"no_data": "no data", "not_enough_data": "not enough data",
                "error": "provider error"}[self.status]  # fmt: skip
        return f"guardrail {self.name}: {what}, which is not a pass" + (
            f" ({self.message})" if self.message else "")  # fmt: skip

    def threshold(self, variant: str, counted: bool = True) -> Threshold:
        """The reading as `analysis.decide` takes it: only a pass, or a counted fail, has a
        value; every other state is no data there.  A relative reading is its always-valid p
        with α as a lower limit."""
        from analysis import Threshold

        keep = self.status == "pass" or (self.status == "fail" and counted)
        if self.kind != "threshold":
            p = self.pvalue if keep else None
            return Threshold(self.name, p, float(self.alpha or 0.0), variant, "min")
        bound: Literal["max", "min"] = "min" if self.bound == "min" else "max"
        return Threshold(self.name, self.value if keep else None, self.limit, variant, bound)
