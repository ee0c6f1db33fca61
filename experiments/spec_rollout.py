"""The rollout plan: how the controller moves traffic from the stable model to the candidate.

Phases run in order: `shadow` mirrors requests to the candidate and compares its predictions
with the stable model's before any user sees it; `canary` walks its steps (the candidate's
share in percent) while the operational guardrails hold, a step advancing only on complete
evidence (enough passing checks in a row, enough time, enough units); `ab` holds a fixed split
until the sequential test decides; `promote` sends everything to the winner.  A guardrail over
its limit, or harm from the test, rolls back at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, Strict, model_validator

from experiments.spec_base import Name, Number, SpecModel, no_repeats

Count = Annotated[int, Strict()]


class Bound(StrEnum):
    MAX = "max"  # the value must not exceed the limit
    MIN = "min"  # the value must not fall below it


# The metrics provider's named query templates (controlplane.metrics.prometheus has one per mesh).
Query = Literal["p99_latency_ms", "error_ratio", "request_rate"]

# What a query or URL template may name, as `{name}`: the candidate's service, variant and
# namespace, the rate window, and the labels the mesh presets use (Envoy cluster `target`,
# Istio `host`, `subset`, `service_label`).  A `{` followed by anything but a name and `}` is
# left alone, so PromQL's label matchers `{job="x"}` need no escaping.
PLACEHOLDERS = ("service", "variant", "namespace", "window", "target", "host", "subset",
                "service_label")  # fmt: skip
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A header value names environment variables as ${NAME}: secrets stay out of the spec.
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
JSON_PATH_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def check_template(text: str, field: str) -> str:
    unknown = sorted({m for m in PLACEHOLDER_RE.findall(text) if m not in PLACEHOLDERS})
    if unknown:
        names = ", ".join(f"{{{u}}}" for u in unknown)
        raise ValueError(f"{field}: unknown placeholder {names}; known: {list(PLACEHOLDERS)}")
    return text


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    """A validator: the value must match `pattern` whole; the message says what it must be."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return check


_json_path = _matching(JSON_PATH_RE, "a json_path: a dotted path such as data.result.0.value.1")


class GuardrailKind(StrEnum):
    THRESHOLD = "threshold"  # one reading against an absolute limit
    RELATIVE = "relative"  # the candidate against the stable arm, sequentially (see below)
    CEILING = "ceiling"  # the candidate's share of bad requests under a limit, sequentially


class OperationalGuardrail(SpecModel):
    """A `threshold` guardrail is a value read each check by a metrics provider: `query` (a
    preset of the mesh) or `promql` (a template) from Prometheus, or `url` + `json_path` from
    any JSON endpoint (provider `web`), judged against `limit`.  A reading over
    `min_requests`' sample counts; a failing reading rolls back after `failure_limit` in a
    row; provider errors become a failure after `consecutive_error_limit` in a row (unset:
    never, the progress deadline applies).

    A `relative` guardrail compares the candidate's event rate with the stable arm's over the
    same ticks, with an anytime-valid test (analysis.rate_ratio): it fails once the evidence
    that the rate is more than (1 + `tolerance`) × stable's reaches 1/`alpha`, so looking every
    tick keeps false rollbacks under `alpha`.  Events are the preset `error_ratio` (5xx), the
    preset `p99_latency_ms` (requests slower than each of `above_ms`, histogram bucket bounds),
    or `promql` (a cumulative counter of events) with `requests_promql` (of requests).  No
    reading is a pass before each arm has `min_requests` requests since the test began (default
    100); a failure needs no minimum, since the test is valid from the first request.

    A `ceiling` guardrail tests the candidate alone against an absolute share of bad requests
    (analysis.rate_ceiling), from the same counters and as sequentially: `error_ratio` with
    `limit` 0.05 fails once the evidence that over 5 % of its answers are 5xx reaches
    1/`alpha`; `p99_latency_ms` with `limit` 1000 (a histogram bucket bound) is "at most 1 % of
    requests over 1000 ms"."""

    name: Name
    kind: GuardrailKind = GuardrailKind.THRESHOLD
    query: Query | None = None
    promql: Annotated[str, Field(min_length=1, max_length=4000)] | None = None
    provider: Name = "prometheus"
    url: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    json_path: Annotated[str, AfterValidator(_json_path)] | None = None
    headers: dict[Annotated[str, Field(min_length=1, max_length=100)],
                  Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, max_length=20)  # fmt: skip
    limit: Number | None = Field(default=None, allow_inf_nan=False)
    bound: Bound = Bound.MAX
    min_requests: Count | None = Field(default=None, ge=0)
    tolerance: Number = Field(default=0.2, ge=0, le=100, allow_inf_nan=False)
    alpha: Number = Field(default=0.01, gt=0, lt=0.5, allow_inf_nan=False)
    above_ms: tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], ...] = Field(
        default=(), max_length=10
    )
    requests_promql: Annotated[str, Field(min_length=1, max_length=4000)] | None = None
    failure_limit: Count = Field(default=1, ge=1, le=1000)
    consecutive_error_limit: Count | None = Field(default=None, ge=0, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _web_by_default(cls, data: object) -> object:
        if isinstance(data, dict) and "url" in data and "provider" not in data:
            return {**data, "provider": "web"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [f for f in ("query", "promql", "url") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                f"guardrail {self.name}: exactly one of query, promql or url, not {given or 'none'}"
            )
        from controlplane.metrics.registry import FACTORIES  # the control plane's plugins

        if self.provider not in FACTORIES:
            known = ", ".join(sorted(FACTORIES))
            raise ValueError(f"guardrail {self.name}: unknown metrics provider"
                             f" {self.provider!r}; known: {known}")  # fmt: skip
        for field_name in ("promql", "requests_promql"):
            text = getattr(self, field_name)
            if text is not None:
                check_template(text, f"guardrail {self.name}: {field_name}")
        if self.kind is not GuardrailKind.THRESHOLD:
            return self._sequential()
        if self.limit is None:
            raise ValueError(f"guardrail {self.name}: a threshold guardrail needs a limit")
        self._only_for(("tolerance", "above_ms"), "kind relative")
        self._only_for(("alpha", "requests_promql"), "kind relative or ceiling")
        if self.url is not None:
            check_template(self.url, f"guardrail {self.name}: url")
            if self.json_path is None:
                raise ValueError(f"guardrail {self.name}: url needs a json_path")
            if self.min_requests:
                raise ValueError(f"guardrail {self.name}: min_requests needs a Prometheus"
                                 " query (a JSON endpoint reports no sample size)")  # fmt: skip
        elif self.json_path is not None or self.headers:
            raise ValueError(f"guardrail {self.name}: json_path and headers go with a url")
        for header, value in self.headers.items():
            if "$" in ENV_RE.sub("", value):
                raise ValueError(f"guardrail {self.name}: headers.{header} may name environment"
                                 " variables only as ${NAME}")  # fmt: skip
        return self

    def _only_for(self, names: tuple[str, ...], where: str) -> None:
        # Compared with the defaults, not the fields given: a stored spec names every field.
        fields = type(self).model_fields
        changed = sorted(f for f in names if getattr(self, f) != fields[f].default)
        if changed:
            raise ValueError(f"guardrail {self.name}: {', '.join(changed)}: only for {where}")

    def _sequential(self) -> Self:
        where = f"guardrail {self.name} (kind {self.kind.value})"
        if self.url is not None:
            raise ValueError(f"{where}: needs counters from Prometheus (query or promql),"
                             " not a url")  # fmt: skip
        if self.query == "request_rate":
            raise ValueError(f"{where}: query is error_ratio or p99_latency_ms")
        if (self.promql is None) != (self.requests_promql is None):
            raise ValueError(f"{where}: promql (events) and requests_promql go together")
        if self.bound is not Bound.MAX:
            raise ValueError(f"{where}: judges a share of bad requests, so only bound max")
        if self.kind is GuardrailKind.CEILING:
            self._only_for(("tolerance", "above_ms"), "kind relative")
            if self.limit is None or self.limit <= 0:
                raise ValueError(f"{where}: needs a limit over 0")
            if self.query != "p99_latency_ms" and self.limit >= 1:
                raise ValueError(f"{where}: the limit is the largest share of bad requests,"
                                 f" under 1, not {self.limit:g}")  # fmt: skip
            return self
        if self.limit is not None:
            raise ValueError(f"{where}: has a tolerance relative to the stable arm, not a limit")
        if self.above_ms and self.query != "p99_latency_ms":
            raise ValueError(f"{where}: above_ms goes with query p99_latency_ms")
        no_repeats([f"{b:g}" for b in self.above_ms], f"guardrail {self.name}: above_ms")
        return self

    @property
    def ceiling_share(self) -> float:
        """A ceiling's largest share of bad requests: 1 % over the limit for p99 (p99 ≤ L
        says just that), else the limit itself."""
        assert self.limit is not None
        return 0.01 if self.query == "p99_latency_ms" else float(self.limit)

    @property
    def min_sample(self) -> int:
        """Requests needed (per arm for a relative guardrail) before a reading counts."""
        if self.min_requests is not None:
            return self.min_requests
        return 0 if self.kind is GuardrailKind.THRESHOLD else 100

    @property
    def cuts_ms(self) -> tuple[float, ...]:
        """A latency guardrail's bucket bounds: events are requests slower than each (a
        ceiling's is its limit)."""
        if self.kind is GuardrailKind.CEILING and self.limit is not None:
            return (float(self.limit),)
        return tuple(sorted(self.above_ms)) or DEFAULT_ABOVE_MS


# Relative latency: requests slower than each of these bucket bounds (both Envoy's and
# Istio's default histograms have them) are the events; their tests are averaged.
DEFAULT_ABOVE_MS = (50.0, 100.0, 250.0, 500.0, 1000.0)


class ShadowTolerance(SpecModel):
    """How far the candidate may stray from the stable model on the same requests; a limit set
    to null is shown but not gated.  `disagreement`: share of requests whose labels differ;
    `score_shift`: |mean(candidate − stable score)|; `distribution`: the largest distance
    between the two arms' score CDFs (Kolmogorov's statistic); `unpaired`: the largest share
    of predictions left without a partner (more invalidates the comparison, like SRM)."""

    disagreement: Number | None = Field(default=0.01, gt=0, lt=1, allow_inf_nan=False)
    score_shift: Number | None = Field(default=0.02, gt=0, allow_inf_nan=False)
    distribution: Number | None = Field(default=0.1, gt=0, lt=1, allow_inf_nan=False)
    unpaired: Number = Field(default=0.2, gt=0, le=1, allow_inf_nan=False)


class OnTimeout(StrEnum):
    PROCEED = "proceed"  # the next phase, as if passed
    ROLLBACK = "rollback"  # stop the rollout; the candidate is never exposed


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Shadow(SpecModel):
    """Mirror `percent` of the stable model's requests (of `methods`) to the candidate, whose
    answers never reach clients, and compare the predictions both post for the same request
    (`POST /v1/predictions`, paired by request id) with anytime-valid tests at level `alpha`.
    Passes when every tolerance is shown to hold, stops the rollout when one is shown broken,
    and at `max_duration_s` does what `on_timeout` says.  No weight changes: every user is
    served by the stable model."""

    kind: Literal["shadow"] = "shadow"
    percent: Number = Field(default=10, gt=0, le=100, allow_inf_nan=False)
    methods: tuple[HttpMethod, ...] = Field(default=("GET", "POST"), min_length=1, max_length=7)
    max_duration_s: Number = Field(default=3600, ge=10, le=7 * 86400, allow_inf_nan=False)
    on_timeout: OnTimeout = OnTimeout.ROLLBACK
    tolerance: ShadowTolerance = ShadowTolerance()
    alpha: Number = Field(default=0.05, gt=0, lt=0.5, allow_inf_nan=False)
    min_pairs: Count = Field(default=100, ge=1, le=10_000_000)
    # Scores are bounded (the score-shift sequence needs a range) and binned for the CDFs.
    score_range: tuple[Number, Number] = (0.0, 1.0)
    pair_window_s: Number = Field(default=60, ge=1, le=86400, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> Self:
        no_repeats(list(self.methods), "shadow.methods")
        low, high = self.score_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"shadow.score_range must be two finite numbers, low < high: "
                             f"{list(self.score_range)}")  # fmt: skip
        return self


class Canary(SpecModel):
    kind: Literal["canary"] = "canary"
    steps: tuple[Count, ...] = Field(default=(5, 20, 50), min_length=1, max_length=20)
    checks: Count = Field(default=3, ge=1, le=1000)  # passing checks in a row per step
    min_duration_s: Number = Field(default=0, ge=0, le=7 * 86400, allow_inf_nan=False)
    min_units: Count = Field(default=0, ge=0)  # candidate units exposed during the step

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        if any(not 0 < s < 100 for s in self.steps):
            raise ValueError(f"steps are the candidate's percent, each in 1..99: {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must increase: {list(self.steps)}")
        return self


class ABTest(SpecModel):
    kind: Literal["ab"] = "ab"
    split: Count = Field(default=50, ge=1, le=99)  # the candidate's percent, fixed for the phase


class Promote(SpecModel):
    kind: Literal["promote"] = "promote"


Phase = Annotated[Shadow | Canary | ABTest | Promote, Field(discriminator="kind")]


def default_guardrails() -> tuple[OperationalGuardrail, ...]:
    """A rollout's guardrails when its spec names none, and the service's for /decision, all
    anytime-valid (checked every tick, a healthy candidate fails each with probability at
    most α = 1 %): the candidate against the stable arm on 5xx answers and on latency
    (requests slower than 50 ms … 1 s), each tolerating 20 % more than stable; and absolute
    ceilings that no comparison excuses: p99 over 1 s, over 5 % errors."""
    relative, ceiling = GuardrailKind.RELATIVE, GuardrailKind.CEILING
    return (
        OperationalGuardrail(name="errors_vs_stable", kind=relative, query="error_ratio"),
        OperationalGuardrail(name="latency_vs_stable", kind=relative, query="p99_latency_ms"),
        OperationalGuardrail(name="p99_latency_ms", kind=ceiling, query="p99_latency_ms",
                             limit=1000),
        OperationalGuardrail(name="error_ratio", kind=ceiling, query="error_ratio", limit=0.05),
    )  # fmt: skip


# An Envoy virtual host domain: a host with an optional port, or a wildcard as Envoy takes it.
DOMAIN_RE = re.compile(r"\*|(\*[.-])?[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?(:[0-9*]{1,5})?")
# An Istio gateway reference: `mesh`, `name` or `namespace/name`.
GATEWAY_RE = re.compile(r"([a-z0-9][a-z0-9-]{0,62}/)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")


_domain = _matching(DOMAIN_RE, "a domain: a host[:port] or a wildcard such as *.example")
_gateway = _matching(GATEWAY_RE, "a gateway: 'mesh', NAME or NAMESPACE/NAME")


def _manifest_path(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or path.suffix not in (".yaml", ".yml"):
        raise ValueError(
            f"path {value!r} must be a relative .yaml file inside the output directory"
        )
    return value


class Target(SpecModel):
    """Where this experiment's routes live; a router writes only this part.  Unset fields take
    the controller's defaults (its command-line options).  Per router:
    istio: `name` (the VirtualService; default: the service), `namespace`, `gateways`;
    gateway-api: `name` (the HTTPRoute), `namespace`; envoy: `route_config` (in the RDS file),
    `domains` of the experiment's virtual host (default `*`), `clusters` (variant -> cluster);
    manifests: `path` (the file under the output directory; default `<experiment>.yaml`);
    kserve: `name` (the InferenceService), `namespace`, `models` (Standard mode: variant ->
    canary predictor name); inference-pool: `name` (the HTTPRoute), `namespace`; seldon: `name`
    (the Experiment), `namespace`, `models` (variant -> Seldon model).  `models` defaults to
    each variant's destination host."""

    router: (
        Literal["envoy", "istio", "gateway-api", "manifests", "kserve", "inference-pool", "seldon"]
        | None
    ) = None
    name: Name | None = None
    namespace: Name | None = None
    gateways: tuple[Annotated[str, AfterValidator(_gateway)], ...] = Field(
        default=(), max_length=20
    )
    route_config: Name | None = None
    domains: tuple[Annotated[str, AfterValidator(_domain)], ...] = Field(
        default=(), max_length=50
    )
    clusters: dict[Name, Name] = Field(default_factory=dict, max_length=26)
    path: Annotated[str, AfterValidator(_manifest_path)] | None = None
    models: dict[Name, Name] = Field(default_factory=dict, max_length=26)


class ScoreDrift(SpecModel):
    """The candidate's prediction scores on its own traffic must stay within a Kolmogorov
    distance `tolerance` of the stable model's (analysis.score_drift), tested at level `alpha`
    at every tick of the canary and A/B phases; shown over it, the rollout rolls back.  Models
    post their predictions as in a shadow phase (`POST /v1/predictions`); scores are binned
    over the shadow phase's `score_range`, [0, 1] without one.  No reading before each arm
    has `min_predictions` scores."""

    tolerance: Number = Field(default=0.1, gt=0, lt=1, allow_inf_nan=False)
    alpha: Number = Field(default=0.01, gt=0, lt=0.5, allow_inf_nan=False)
    min_predictions: Count = Field(default=200, ge=1, le=10_000_000)


class OnNoData(StrEnum):
    HOLD = "hold"  # stay at the step, Progressing=False, until data comes back
    ROLLBACK = "rollback"  # send everything back to the stable model


class Rollout(SpecModel):
    candidate: Name | None = None  # default: the first variant that is not the control
    service: Name | None = None  # the host clients call (VirtualService hosts); default: name
    target: Target = Target()
    # No guardrail data, or no canary step, for this long: Progressing=False and `on_no_data`.
    progress_deadline_s: Number = Field(default=600, ge=10, le=7 * 86400, allow_inf_nan=False)
    on_no_data: OnNoData = OnNoData.ROLLBACK
    guardrails: tuple[OperationalGuardrail, ...] = Field(
        default_factory=default_guardrails, max_length=20
    )
    score_drift: ScoreDrift | None = None
    phases: tuple[Phase, ...] = Field(
        default_factory=lambda: (Canary(), ABTest(), Promote()), min_length=1, max_length=10
    )

    @property
    def shadow(self) -> Shadow | None:
        """The plan's shadow phase (its score range and pairing window), if it has one."""
        return next((p for p in self.phases if isinstance(p, Shadow)), None)

    @model_validator(mode="after")
    def _order(self) -> Self:
        no_repeats([g.name for g in self.guardrails], "rollout.guardrails: names")
        kinds = [p.kind for p in self.phases]
        if "promote" in kinds and kinds.index("promote") != len(kinds) - 1:
            raise ValueError("rollout.phases: 'promote' can only be the last phase")
        if "shadow" in kinds and kinds.index("shadow") != kinds.count("shadow") - 1:
            raise ValueError("rollout.phases: 'shadow' phases come first, before any user is"
                             " served by the candidate")  # fmt: skip
        return self
