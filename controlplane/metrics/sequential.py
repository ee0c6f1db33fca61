"""A relative guardrail read now: both arms' cumulative counters, their increments since the
last reading added to the anytime-valid rate-ratio test (analysis.rate_ratio), and the test's
state handed back for the caller to keep (the controller in the rollout state, the verdict
endpoint in the store), so a restart goes on where the last reading stopped.

Increments, never rates: `rate()` windows overlap from one tick to the next, and summing them
would count the same requests again.  A counter that goes down was reset (Envoy restarted):
its new value is the increment.  The test starts over when the guardrail's definition changes
(tolerance, events) and, since the state lives in the rollout, with every new rollout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from analysis.rate_ratio import RateRatioTest
from controlplane.metrics.outcome import Reading, Status
from controlplane.metrics.protocol import Counts, MetricsProvider, Phase
from experiments.spec_rollout import OperationalGuardrail

Saved = dict[str, Any]


def read_relative(
    guardrail: OperationalGuardrail,
    provider: MetricsProvider,
    candidate: Mapping[str, str],
    stable: Mapping[str, str],
    saved: Saved | None,
) -> tuple[Reading, Saved | None]:
    """The reading and the state to keep (unchanged when the counters could not be read)."""
    now = {arm: _counters(provider, guardrail, v) for arm, v in
           (("candidate", candidate), ("stable", stable))}  # fmt: skip
    broken = [(arm, c) for arm, c in now.items() if c.phase is not Phase.OK]
    if broken:
        arm, c = broken[0]
        status: Status = "error" if c.phase is Phase.ERROR else "no_data"
        return _reading(guardrail, status, None, f"{arm} arm: {c.message}"), saved
    key = _definition(guardrail)
    if saved is None or saved.get("key") != key:
        first = {arm: _plain(c) for arm, c in now.items()}
        why = "first reading: the comparison counts from here"
        return _reading(guardrail, "not_enough_data", None, why), {"key": key, "last": first}
    test = RateRatioTest.from_dict(saved["test"]) if "test" in saved else RateRatioTest(
        guardrail.tolerance)  # fmt: skip
    step = {arm: _increment(saved["last"][arm], c) for arm, c in now.items()}
    test.update(step["candidate"], step["stable"])
    out = {"key": key, "last": {arm: _plain(c) for arm, c in now.items()}, "test": test.to_dict()}
    return judge_test(guardrail, test), out


def judge_test(guardrail: OperationalGuardrail, test: RateRatioTest) -> Reading:
    """Fail once the always-valid p is under α with both arms past the minimum sample."""
    kind, ratio = test.worst()
    n_a, n_b = test.stable.requests, test.candidate.requests
    seen = (f"{_what(kind)}: {test.candidate.events.get(kind, 0):g} of {n_b:g} candidate"
            f" requests vs {test.stable.events.get(kind, 0):g} of {n_a:g} stable")  # fmt: skip
    where = f"always-valid p {test.pvalue:.3g} against α {guardrail.alpha:g} for a rate over" \
            f" {test.delta0:g}× stable's"  # fmt: skip
    ratio_text = "n/a" if ratio is None else "∞" if math.isinf(ratio) else f"{ratio:.3g}×"
    detail = f"{seen} (ratio {ratio_text}); {where}"
    value = ratio if ratio is not None and math.isfinite(ratio) else None
    if min(n_a, n_b) < guardrail.min_sample:
        why = f"{min(n_a, n_b):g} requests in an arm, {guardrail.min_sample} needed; {detail}"
        return _reading(guardrail, "not_enough_data", value, why, test.pvalue)
    status: Status = "fail" if test.pvalue < guardrail.alpha else "pass"
    return _reading(guardrail, status, value, detail, test.pvalue)


def _reading(
    g: OperationalGuardrail, status: Status, value: float | None, message: str,
    pvalue: float | None = None,
) -> Reading:  # fmt: skip
    return Reading(g.name, status, value, 1.0 + g.tolerance, "max", message, "relative", pvalue,
                   g.alpha)  # fmt: skip


def _counters(
    provider: MetricsProvider, guardrail: OperationalGuardrail, variables: Mapping[str, str]
) -> Counts:
    try:
        return provider.counters(guardrail, variables)
    except Exception as exc:  # a provider's bug must not stop the tick
        return Counts.error(f"{type(exc).__name__} in the provider")


def _plain(c: Counts) -> dict[str, Any]:
    return {"requests": c.requests, "events": dict(c.events)}


def _increment(last: Mapping[str, Any], now: Counts) -> tuple[float, dict[str, float]]:
    """(requests, events by kind) since `last`; a counter that went down was reset."""
    before = {"requests": last["requests"], **last["events"]}
    after = {"requests": now.requests, **now.events}
    reset = any(after[k] < before.get(k, 0.0) for k in after)
    step = {k: v if reset else v - before.get(k, 0.0) for k, v in after.items()}
    requests = step.pop("requests")
    return requests, step


def _definition(g: OperationalGuardrail) -> str:
    """What makes a saved test this guardrail's: a change of any of it starts a new test."""
    parts = [g.query, g.promql, g.requests_promql, g.provider, g.tolerance, list(g.cuts_ms)]
    return json.dumps(parts)


def _what(kind: str) -> str:
    if kind.startswith("gt_"):
        return f"requests over {kind[3:]} ms"
    return {"errors": "5xx answers", "events": "events"}.get(kind, kind)

