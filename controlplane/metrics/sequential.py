"""A relative or ceiling guardrail read now: the cumulative counters (both arms, or the
candidate's), their increments since the last reading added to the anytime-valid test
(analysis.rate_ratio, analysis.rate_ceiling), and the test's state handed back for the caller
to keep (the controller in the rollout state, the verdict endpoint in the store), so a restart
goes on where the last reading stopped (docs/statistics.md §17).

Increments, never rates: `rate()` windows overlap from one tick to the next, and summing them
would count the same requests again.  A counter that goes down was reset (Envoy restarted):
its new value is the increment.  The test starts over when the guardrail's definition changes
(kind, tolerance, limit, events) and, since the state lives in the rollout, with every new
rollout.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from analysis.rate_ceiling import RateCeilingTest
from analysis.rate_ratio import RateRatioTest
from controlplane.metrics.outcome import Reading, Status
from controlplane.metrics.protocol import Counts, MetricsProvider, Phase
from experiments.spec_rollout import GuardrailKind, OperationalGuardrail

Saved = dict[str, Any]


def read_sequential(
    guardrail: OperationalGuardrail,
    provider: MetricsProvider,
    candidate: Mapping[str, str],
    stable: Mapping[str, str],
    saved: Saved | None,
) -> tuple[Reading, Saved | None]:
    """The reading and the state to keep (unchanged when the counters could not be read).  A
    relative guardrail reads both arms; a ceiling, the candidate only."""
    arms = [("candidate", candidate)]
    if guardrail.kind is GuardrailKind.RELATIVE:
        arms.append(("stable", stable))
    at = time.time()  # both arms as of one instant: increments over one interval
    now = {arm: _counters(provider, guardrail, v, at) for arm, v in arms}
    broken = [(arm, c) for arm, c in now.items() if c.phase is not Phase.OK]
    if broken:
        arm, c = broken[0]
        status: Status = "error" if c.phase is Phase.ERROR else "no_data"
        return _reading(guardrail, status, None, f"{arm} arm: {c.message}"), saved
    key = _definition(guardrail)
    if saved is None or saved.get("key") != key:
        first = {arm: _plain(c) for arm, c in now.items()}
        why = "first reading: the count starts here"
        return _reading(guardrail, "not_enough_data", None, why), {"key": key, "last": first}
    step = {arm: _increment(saved["last"][arm], c) for arm, c in now.items()}
    last = {arm: _plain(c) for arm, c in now.items()}
    if guardrail.kind is GuardrailKind.CEILING:
        ceiling = RateCeilingTest.from_dict(saved["test"]) if "test" in saved else (
            RateCeilingTest(guardrail.ceiling_share))  # fmt: skip
        requests, events = step["candidate"]
        ceiling.update(requests, sum(events.values()))
        return judge_ceiling(guardrail, ceiling, events), {"key": key, "last": last,
                                                           "test": ceiling.to_dict()}  # fmt: skip
    test = RateRatioTest.from_dict(saved["test"]) if "test" in saved else RateRatioTest(
        guardrail.tolerance)  # fmt: skip
    test.update(step["candidate"], step["stable"])
    return judge_test(guardrail, test), {"key": key, "last": last, "test": test.to_dict()}


def judge_test(guardrail: OperationalGuardrail, test: RateRatioTest) -> Reading:
    """Fail once the always-valid p is under α (a pass needs the minimum sample per arm).
    The value is the observed ratio of the event kind with the most evidence now."""
    _, ratio = test.worst()
    n_a, n_b = test.stable.requests, test.candidate.requests
    kinds = sorted(test.log_lr, key=lambda k: float(k[3:]) if k.startswith("gt_") else 0.0)
    seen = [
        f"{_what(k)}: {test.candidate.events.get(k, 0):g} of {n_b:g} candidate requests vs"
        f" {test.stable.events.get(k, 0):g} of {n_a:g} stable ({_times(test.ratio(k))})"
        for k in kinds
        if test.candidate.events.get(k) or test.stable.events.get(k)
    ] or [f"no {_what(kinds[0]) if kinds else 'events'} in {n_b:g} candidate and {n_a:g}"
          " stable requests"]  # fmt: skip
    detail = (f"{'; '.join(seen)}; always-valid p {test.pvalue:.3g} against α"
              f" {guardrail.alpha:g} for a rate over {test.delta0:g}× stable's")  # fmt: skip
    value = ratio if ratio is not None and math.isfinite(ratio) else None
    return _verdict(guardrail, min(n_a, n_b), test.pvalue, value, detail)


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else "∞" if math.isinf(ratio) else f"{ratio:.3g}×"


def judge_ceiling(
    guardrail: OperationalGuardrail, test: RateCeilingTest, events: Mapping[str, float]
) -> Reading:
    """Fail once the always-valid p is under α with the candidate past the minimum sample."""
    kind = next(iter(events), "events")
    share = test.share
    seen = f"{_what(kind)}: {test.events:g} of {test.requests:g} candidate requests" + (
        f" ({share:.3%})" if share is not None else "")  # fmt: skip
    detail = (f"{seen}; always-valid p {test.pvalue:.3g} against α {guardrail.alpha:g} for a"
              f" share over {test.ceiling:.3%}")  # fmt: skip
    return _verdict(guardrail, test.requests, test.pvalue, share, detail)


def _verdict(
    g: OperationalGuardrail, sample: float, pvalue: float, value: float | None, detail: str
) -> Reading:
    """The minimum sample gates a pass, never a failure: the test is valid from the first
    request, and a candidate that fails every request should not get 100 of them first."""
    if pvalue < g.alpha:
        return _reading(g, "fail", value, detail, pvalue)
    if sample < g.min_sample:
        why = f"{sample:g} requests in an arm, {g.min_sample} needed for a pass; {detail}"
        return _reading(g, "not_enough_data", value, why, pvalue)
    return _reading(g, "pass", value, detail, pvalue)


def _reading(
    g: OperationalGuardrail, status: Status, value: float | None, message: str,
    pvalue: float | None = None,
) -> Reading:  # fmt: skip
    """Its limit: the tolerated ratio (relative), or the largest share of bad requests."""
    limit = g.ceiling_share if g.kind is GuardrailKind.CEILING else 1.0 + g.tolerance
    return Reading(g.name, status, value, limit, "max", message, g.kind.value, pvalue, g.alpha)


def _counters(
    provider: MetricsProvider, guardrail: OperationalGuardrail, variables: Mapping[str, str],
    at: float,
) -> Counts:  # fmt: skip
    try:
        return provider.counters(guardrail, variables, at)
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
    parts = [g.kind.value, g.query, g.promql, g.requests_promql, g.provider, g.tolerance,
             g.limit, list(g.cuts_ms)]  # fmt: skip
    return json.dumps(parts)


def _what(kind: str) -> str:
    if kind.startswith("gt_"):
        return f"requests over {kind[3:]} ms"
    return {"errors": "5xx answers", "events": "events"}.get(kind, kind)

