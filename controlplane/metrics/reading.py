"""A spec's operational guardrails read now: one `Reading` per guardrail, judged alike for
every provider.  A measurement below the guardrail's `min_requests` is "not enough data", a
state of its own: like no data and provider errors it is never a pass and never a fail.

A relative guardrail (controlplane.metrics.sequential) also reads the stable arm and carries
its test from one reading to the next in `Tests.saved`, which the caller keeps.

The controller (controlplane.judge) adds the failure policy on top; the verdict for outside
controllers (experiments.verdict) reports single readings, since Argo and Flagger keep their
own failure counts (the relative tests' state it keeps in the store).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from controlplane.metrics.outcome import Reading, Status
from controlplane.metrics.prometheus import query_labels
from controlplane.metrics.protocol import Measurement, MetricsProvider, Phase
from controlplane.metrics.sequential import read_sequential
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import GuardrailKind, OperationalGuardrail

log = logging.getLogger("abmesh.metrics")


@dataclass
class Tests:
    """What relative guardrails need besides the candidate: the stable arm's variables, and
    each relative guardrail's test so far by name (replaced by every reading)."""

    stable: dict[str, str]
    saved: dict[str, Any] = field(default_factory=dict)


def judge(guardrail: OperationalGuardrail, m: Measurement) -> Reading:
    assert guardrail.limit is not None  # a threshold guardrail has one (the spec says so)
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
    tests: Tests | None = None,
) -> list[Reading]:
    """Each guardrail read now.  Without a provider every reading is an error that says so; a
    provider that raises anyway (a bug, not the network) is an error reading too.  Relative
    guardrails need `tests`; their new states replace the old in `tests.saved`, and a
    guardrail no longer in the spec is forgotten there."""
    out = []
    kept: dict[str, Any] = {}
    for g in guardrails:
        sequential = g.kind is not GuardrailKind.THRESHOLD
        if sequential and provider is not None and tests is not None:
            reading, saved = read_sequential(g, provider, variables, tests.stable,
                                             tests.saved.get(g.name))  # fmt: skip
            if saved is not None:
                kept[g.name] = saved
            _log_error(g, reading.status == "error", reading.message)
            out.append(reading)
            continue
        if provider is None:
            m = Measurement.error("no metrics provider configured")
        elif sequential:
            m = Measurement.error("a sequential guardrail needs its saved test")
        else:
            try:
                m = provider.query(g, variables)
            except Exception as exc:
                m = Measurement.error(f"{type(exc).__name__} in the provider")
        _log_error(g, m.phase is Phase.ERROR, m.message)
        out.append(_error(g, m) if sequential else judge(g, m))
    if tests is not None:
        tests.saved = kept
    return out


def _error(g: OperationalGuardrail, m: Measurement) -> Reading:
    status: Status = "error" if m.phase is Phase.ERROR else "no_data"
    limit = g.ceiling_share if g.kind is GuardrailKind.CEILING else 1.0 + g.tolerance
    return Reading(g.name, status, None, limit, "max", m.message, g.kind.value, None, g.alpha)


def _log_error(g: OperationalGuardrail, failed: bool, message: str) -> None:
    if failed:  # the operator sees a broken source in the log too
        log.warning("metrics provider %s, guardrail %s: %s", g.provider, g.name, message)


def variables_for(
    spec: ExperimentSpec, cluster: str | None = None, namespace: str = "",
    variant: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """The placeholders' values for one arm (default: the candidate).  Envoy clusters are
    taken to be named after the subset (or the host) unless the route target maps them."""
    v = spec.variant(variant) if variant else spec.candidate_variant
    d = v.destination
    service = spec.rollout.service if spec.rollout and spec.rollout.service else spec.name
    return {
        "service": service,
        "variant": v.key,
        "namespace": namespace,
        **query_labels(d.host, d.subset, cluster or d.subset or d.host),
    }
