"""When a guardrail counts as failed: the failure policy over consecutive readings
(docs/statistics.md §17).

As Argo Rollouts' `failureLimit` and `consecutiveErrorLimit`, but per guardrail and on
consecutive readings: `failure_limit` failing readings in a row (default 1: at once), or more
than `consecutive_error_limit` provider errors in a row (default unset: errors alone never
fail a rollout; no data for the progress deadline does).  A pass resets both counts; a reading
with no data (or not enough) resets the error count only, since the provider answered.  The
counts live in the rollout state (`RolloutState.guardrail_counts`), so a restarted controller
goes on counting where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.metrics import Reading
from experiments.spec_rollout import OperationalGuardrail

Counts = dict[str, dict[str, int]]  # guardrail -> {"failures": n, "errors": n}


@dataclass(frozen=True, slots=True)
class Judged:
    reading: Reading
    failed: bool  # the policy says this guardrail has failed: roll back
    why: str  # the reading and, when counted, the counts that made it a failure


def apply_policy(
    guardrails: Sequence[OperationalGuardrail], readings: Sequence[Reading], counts: Counts
) -> tuple[list[Judged], Counts]:
    """Each reading judged with the counts so far, and the new counts (a guardrail no longer
    in the spec is forgotten)."""
    out, new = [], Counts()
    for g, r in zip(guardrails, readings, strict=True):
        old = counts.get(g.name, {})
        failures, errors = old.get("failures", 0), old.get("errors", 0)
        if r.status == "pass":
            failures = errors = 0
        elif r.status == "fail":
            failures, errors = failures + 1, 0
        elif r.status == "error":
            errors += 1
        else:
            errors = 0
        new[g.name] = {"failures": failures, "errors": errors}
        why = r.describe()
        if r.status == "fail" and g.failure_limit > 1:
            why += f" ({failures} in a row, failure_limit {g.failure_limit})"
        limit = g.consecutive_error_limit
        if limit is not None and errors > limit:
            out.append(Judged(r, True, f"{why}: {errors} errors in a row >"
                                       f" consecutive_error_limit {limit}"))  # fmt: skip
        else:
            out.append(Judged(r, r.status == "fail" and failures >= g.failure_limit, why))
    return out, new
