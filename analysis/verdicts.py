"""The second half of a decision: each comparison's verdict from its interval (or its
group-sequential boundary), then the experiment's status and the reasons, in the order of
judgement that analysis.decide documents."""

from __future__ import annotations

from dataclasses import replace

from analysis.decision import Comparison, Decision, Status, finite, fmt
from analysis.gst_look import GroupSequentialLook
from analysis.guardrails import Threshold
from analysis.looks import Look, Pair
from analysis.multiple import adjust_pvalues
from experiments.spec import Direction
from experiments.spec_metrics import Method, Metric

# A guardrail's verdicts that show its margin (or tolerance) kept: needed before a winner.
KEPT = frozenset({"non_inferior", "within_tolerance"})


def conclude(look: Look, values: list[list[float]]) -> Decision:
    """The Decision for one experiment from its pairs' columns of `decide.evaluate`."""
    spec, state = look.spec, look.state
    comparisons: list[Comparison] = []
    sequential = spec.analysis.method is Method.GROUP_SEQUENTIAL
    gst = GroupSequentialLook(look) if sequential else None
    for i, pair in enumerate(look.pairs):
        est, v, p, low, high = values[i]
        state.intervals[pair.key] = [finite(p), finite(low), finite(high)]
        if gst is not None and pair.role == "primary":
            comparisons.append(gst.compare(pair, est, v))
        else:
            comparisons.append(_compare(look, pair, est, p, low, high))
    comparisons = _adjust_secondary(comparisons)
    for role, metric, variant, na, nb in look.burn_in:
        comparisons.append(
            Comparison(
                metric.name,
                role,
                variant,
                look.plan.control,
                "burn-in",
                "burn_in",
                n_control=na,
                n_treatment=nb,
            )
        )
    status, winner, harmful, reasons = _Judge(look, comparisons, gst).status()
    return Decision(
        spec.name,
        status,
        tuple(look.reasons + reasons),
        winner,
        tuple(harmful),
        tuple(comparisons),
        look.checks,
        finite(look.srm_p),
        finite(look.seq_srm_p),
        state,
    )


def _sign(pair: Pair) -> float:
    return 1.0 if pair.metric.direction is Direction.INCREASE else -1.0


def _scale(pair: Pair) -> float:
    """What a relative margin or MDE is a fraction of: 1 for a lift, |control mean| otherwise."""
    return 1.0 if pair.relative else abs(pair.a.mean)


def _horizon(look: Look, pair: Pair) -> bool:
    cap = look.spec.analysis.max_units_per_arm
    return cap is not None and min(pair.a.n, pair.b.n) >= cap


def _compare(look: Look, pair: Pair, est: float, p: float, low: float, high: float) -> Comparison:
    sign = _sign(pair)
    g_low, g_high = (low, high) if sign > 0 else (-high, -low)
    cfg = look.spec.analysis
    if low > high:
        # The running intersection is empty: the looks contradict each other, so the effect
        # is not stable over time (or the data were replaced); no interval can be trusted.
        verdict = "unstable"
    elif pair.role == "guardrail" and pair.metric.tolerance is not None:
        verdict = _within_tolerance(pair.metric.tolerance * _scale(pair), low, high)
    elif pair.role == "guardrail":
        m = (pair.metric.margin or 0.0) * _scale(pair)
        verdict = "harm" if g_high < -m else "non_inferior" if g_low > -m else "inconclusive"
    elif g_low > 0:
        verdict = "better"
    elif g_high < 0:
        verdict = "worse"
    elif pair.role == "primary" and (
        (
            cfg.mde is not None
            and -cfg.mde * _scale(pair) < g_low
            and g_high < cfg.mde * _scale(pair)
        )
        or _horizon(look, pair)
    ):
        verdict = "no_difference"
    else:
        verdict = "inconclusive"
    kind = "lift" if pair.relative else "difference"
    return Comparison(
        pair.metric.name, pair.role, pair.variant, pair.control,
        f"confidence sequence ({pair.kind}, {kind})", verdict,
        finite(est), finite(low), finite(high), finite(p),
        n_control=pair.a.n, n_treatment=pair.b.n, relative=pair.relative, alpha=pair.alpha,
    )  # fmt: skip


def _within_tolerance(t: float, low: float, high: float) -> str:
    """Two-sided: a shift beyond ±t either way is harm, whatever the metric's direction; the
    interval wholly inside (−t, t) shows the tolerance kept.  Both sides are read off one
    two-sided confidence sequence, so together they keep its level."""
    if low > t or high < -t:
        return "harm"
    return "within_tolerance" if -t < low and high < t else "inconclusive"


def _bound_of(metric: Metric) -> str:
    """A metric guardrail's bound as the reasons name it, relative to the control mean."""
    if metric.tolerance is not None:
        return f"its tolerance ±{metric.tolerance:g} of control"
    return f"its margin {metric.margin or 0.0:g} of control"


def _adjust_secondary(comparisons: list[Comparison]) -> list[Comparison]:
    """Benjamini–Hochberg over the secondary comparisons' always-valid p-values."""
    index = [i for i, c in enumerate(comparisons) if c.role == "secondary" and c.pvalue is not None]
    if not index:
        return comparisons
    adjusted = adjust_pvalues([float(comparisons[i].pvalue or 0.0) for i in index], method="bh")
    out = list(comparisons)
    for i, q in zip(index, adjusted, strict=True):
        out[i] = replace(out[i], adjusted_pvalue=finite(q))
    return out


class _Judge:
    """The experiment's status from its comparisons, with a reason for every part of it."""

    def __init__(self, look: Look, comparisons: list[Comparison], gst: GroupSequentialLook | None):
        self.look, self.comparisons, self.gst = look, comparisons, gst
        self.spec = look.spec
        self.control = look.plan.control
        self.treatments = list(look.plan.treatments)
        self.reasons: list[str] = []
        metrics = self.spec.metrics
        self.guard_metrics = {m.name: m for m in metrics.guardrails} if metrics else {}

    def status(self) -> tuple[Status, str | None, list[str], list[str]]:
        checks = self.look.checks
        self.reasons += [Threshold.describe(c) for c in checks if c.status != "pass"]
        # A reading of the control arm over its limit is the stable model's problem, not
        # evidence against the candidate.
        fails = {c.variant for c in checks if c.status == "fail" and c.variant != self.control}
        if fails:
            harmful = self.treatments if None in fails else sorted(v for v in fails if v)
            return Status.HARM, None, harmful, self.reasons
        if self.look.invalid:
            return Status.INVALID, None, [], self.reasons
        if self.spec.metrics is None or not self.treatments:
            what = "names no metrics" if self.spec.metrics is None else "has no treatment arm"
            self.reasons.append(f"the spec {what} with traffic, so there is nothing to test")
            return Status.CONTINUE, None, [], self.reasons
        unstable = [c for c in self.comparisons if c.verdict == "unstable"]
        if unstable:
            self.reasons += [
                f"{c.metric} ({c.variant}): the running interval is empty (low {fmt(c.ci_low)} >"
                f" high {fmt(c.ci_high)}): the looks contradict each other, so the effect is not"
                " stable over time or the data were replaced"
                for c in unstable
            ]
            return Status.INVALID, None, [], self.reasons
        primary = [c for c in self.comparisons if c.role == "primary"]
        guards = [c for c in self.comparisons if c.role == "guardrail"]
        self.reasons += [self._describe(c) for c in primary]
        harm = [g for g in guards if g.verdict == "harm"]
        self.reasons += [self._describe_guard(g, "beyond {bound}: harm") for g in harm]
        harmful = sorted(
            {c.variant for c in primary if c.verdict == "worse"} | {g.variant for g in harm}
        )
        if harmful:
            return Status.HARM, None, harmful, self.reasons
        better = [c for c in primary if c.verdict == "better"]
        blocked = {c.variant: self._blockers(c.variant, guards) for c in better}
        winners = [c for c in better if not blocked[c.variant]]
        if winners:
            sign = 1.0 if self.spec.metrics.primary.direction is Direction.INCREASE else -1.0
            best = max(winners, key=lambda c: sign * (c.estimate or 0.0))
            return Status.WINNER, best.variant, [], self.reasons
        for blockers in blocked.values():
            self.reasons += blockers
        cap = self.spec.analysis.max_units_per_arm
        at_horizon = cap is not None and all(
            min(c.n_control, c.n_treatment) >= cap for c in primary
        )
        pending = [c for c in better if self._unproven(c.variant, guards)]
        if pending:
            # A clear winner is never "no difference", not even at the horizon: whether to
            # promote it with a guardrail unproven is for a person to decide, not the test.
            if at_horizon:
                self.reasons += [
                    f"the horizon of {cap} units per arm is reached: {c.variant} is better on"
                    f" {c.metric} but {self._still_unproven(c.variant, guards)}, so it is not"
                    " promoted"
                    for c in pending
                ]
            return Status.WINNER_PENDING_GUARDRAILS, None, [], self.reasons
        concluded = {"no_difference"} | ({"better"} if at_horizon else set())
        if self.gst is not None and self.gst.exhausted:
            concluded.add("burn_in")  # never reached its minimum within the design
        if self._units_past_horizon() and any(c.verdict == "burn_in" for c in primary):
            # Assigned units past the horizon but too few with metric data: the test is over
            # all the same (never burn-in past the horizon), and the stable model is kept.
            concluded.add("burn_in")
            self.reasons.append(
                f"the horizon of {cap} assigned units per arm is reached with too little"
                " metric data for a verdict: the test ends without one"
            )
        if primary and all(c.verdict in concluded for c in primary):
            if better:
                self.reasons.append("the horizon is reached with a guardrail without data")
            return Status.NO_DIFFERENCE, None, [], self.reasons
        return Status.CONTINUE, None, [], self.reasons

    def _units_past_horizon(self) -> bool:
        """Every arm with traffic has at least the horizon's assigned units."""
        cap, plan = self.spec.analysis.max_units_per_arm, self.look.plan
        counts = dict(zip(plan.keys, self.look.counts, strict=True))
        arms = (plan.control, *plan.treatments)
        return cap is not None and bool(counts) and min(counts.get(k, 0.0) for k in arms) >= cap

    def _unproven(self, variant: str, guards: list[Comparison]) -> list[Comparison]:
        """The metric guardrails with a margin or a tolerance that `variant` has not yet been
        shown to keep."""
        return [
            g
            for g in guards
            if g.variant == variant and self._needs_proof(g.metric) and g.verdict not in KEPT
        ]

    def _needs_proof(self, name: str) -> bool:
        metric = self.guard_metrics.get(name)
        return metric is not None and (metric.margin is not None or metric.tolerance is not None)

    def _bound(self, name: str) -> str:
        return _bound_of(self.guard_metrics[name])

    def _still_unproven(self, variant: str, guards: list[Comparison]) -> str:
        return " and ".join(
            f"guardrail {g.metric} is still not shown within {self._bound(g.metric)}"
            for g in self._unproven(variant, guards)
        )

    def _blockers(self, variant: str, guards: list[Comparison]) -> list[str]:
        """Why `variant` cannot be promoted yet although its primary metric is better."""
        out = [
            f"{variant} cannot be promoted while guardrail {c.name} has no data"
            for c in self.look.checks
            if c.status == "no_data" and c.variant in (None, variant)
        ]
        return out + [
            self._describe_guard(g, "not yet shown within {bound}")
            for g in self._unproven(variant, guards)
        ]

    def _describe(self, c: Comparison) -> str:
        if c.verdict == "burn_in":
            return self._burn_in(c)
        if self.gst is not None:
            return self.gst.describe(c)
        effect = _pct if c.relative else fmt
        level = f"{(1 - (c.alpha or 0.05)) * 100:.4g}%"
        if c.verdict == "no_difference":
            verdict = self._no_difference(c)
        elif c.verdict == "inconclusive":
            verdict = self._progress(c)
        else:
            verdict = f"significantly {c.verdict}"
        return (
            f"{c.metric}: {c.variant} vs {c.control} effect {effect(c.estimate)} "
            f"({level} CI [{effect(c.ci_low)}, {effect(c.ci_high)}]), always-valid p "
            f"{fmt(c.pvalue)} against α {fmt(c.alpha)}; units {c.n_treatment:g} vs "
            f"{c.n_control:g} — {verdict}"
        )

    def _no_difference(self, c: Comparison) -> str:
        cap, mde = self.spec.analysis.max_units_per_arm, self.spec.analysis.mde
        if cap is not None and min(c.n_control, c.n_treatment) >= cap:
            return f"no difference: the horizon of {cap} units per arm is reached"
        return f"no difference: the interval lies within ±{mde:g} (the MDE, relative to control)"

    def _progress(self, c: Comparison) -> str:
        planned = self.spec.analysis.mixture_n / 2
        units = min(c.n_control, c.n_treatment)
        return f"not conclusive yet ({units:g} units per arm; the test is tuned for {planned:g})"

    def _burn_in(self, c: Comparison) -> str:
        cfg = self.spec.analysis
        assert self.spec.metrics is not None
        extra = ""
        if self.spec.metrics.primary.kind.value == "conversion":
            extra = ", with a converted and an unconverted unit in each"
        return (
            f"burn-in: {c.metric} has {c.n_control:g} units in {c.control} and "
            f"{c.n_treatment:g} in {c.variant}; {cfg.min_units_per_arm} per arm{extra} "
            "are needed before a verdict"
        )

    def _describe_guard(self, g: Comparison, verdict: str) -> str:
        """`verdict` with "{bound}" standing for the guardrail's margin or tolerance."""
        effect = _pct if g.relative else fmt
        bound = self._bound(g.metric)
        return (
            f"guardrail metric {g.metric} ({g.variant}): effect {effect(g.estimate)}, CI "
            f"[{effect(g.ci_low)}, {effect(g.ci_high)}] — {verdict.format(bound=bound)}"
        )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2%}"
