"""A spec's operational guardrails read now: one `Reading` per guardrail, judged alike for
every provider.  A measurement below the guardrail's `min_requests` is "not enough data", a
state of its own: like no data and provider errors it is never a pass and never a fail.

The controller (controlplane.judge) adds the failure policy on top; the verdict for outside
controllers (experiments.verdict) reports single readings, since Argo and Flagger keep their
own failure counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from controlplane.metrics.prometheus import query_labels
from controlplane.metrics.protocol import Measurement, MetricsProvider, Phase
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import OperationalGuardrail

if TYPE_CHECKING:
    from analysis import Threshold

log = logging.getLogger("abmesh.metrics")

Status = Literal["pass", "fail", "no_data", "not_enough_data", "error"]


@dataclass(frozen=True, slots=True)
class Reading:
    name: str
    status: Status
    value: float | None
    limit: float
    bound: str
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "value": self.value, "limit": self.limit, "status": self.status}
        return {**out, "message": self.message} if self.message else out

    def describe(self) -> str:
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
        value; every other state is no data there."""
        from analysis import Threshold

        keep = self.status == "pass" or (self.status == "fail" and counted)
        bound: Literal["max", "min"] = "min" if self.bound == "min" else "max"
        return Threshold(self.name, self.value if keep else None, self.limit, variant, bound)


def judge(guardrail: OperationalGuardrail, m: Measurement) -> Reading:
    limit, bound = float(guardrail.limit), guardrail.bound.value
    if m.phase is not Phase.OK or m.value is None:
        status: Status = "error" if m.phase is Phase.ERROR else "no_data"
        return Reading(guardrail.name, status, None, limit, bound, m.message)
    if guardrail.min_requests and (m.sample is None or m.sample < guardrail.min_requests):
        have = "unknown" if m.sample is None else f"{m.sample:.0f}"
        why = f"{have} requests in the window, {guardrail.min_requests} needed"
        return Reading(guardrail.name, "not_enough_data", m.value, limit, bound, why)
    over = m.value > limit if bound == "max" else m.value < limit
    return Reading(guardrail.name, "fail" if over else "pass", m.value, limit, bound)


def read_guardrails(
    guardrails: tuple[OperationalGuardrail, ...],
    provider: MetricsProvider | None,
    variables: dict[str, str],
) -> list[Reading]:
    """Each guardrail read now.  Without a provider every reading is an error that says so; a
    provider that raises anyway (a bug, not the network) is an error reading too."""
    out = []
    for g in guardrails:
        if provider is None:
            m = Measurement.error("no metrics provider configured")
        else:
            try:
                m = provider.query(g, variables)
            except Exception as exc:
                m = Measurement.error(f"{type(exc).__name__} in the provider")
        if m.phase is Phase.ERROR:  # the operator sees a broken source in the log too
            log.warning("metrics provider %s, guardrail %s: %s", g.provider, g.name, m.message)
        out.append(judge(g, m))
    return out


def variables_for(
    spec: ExperimentSpec, cluster: str | None = None, namespace: str = ""
) -> dict[str, str]:
    """The placeholders' values for the candidate.  Envoy clusters are taken to be named after
    the subset (or the host) unless the route target maps them."""
    d = spec.candidate_variant.destination
    service = spec.rollout.service if spec.rollout and spec.rollout.service else spec.name
    return {
        "service": service,
        "variant": spec.candidate_variant.key,
        "namespace": namespace,
        **query_labels(d.host, d.subset, cluster or d.subset or d.host),
    }
