"""The route plan: what the mesh should do with a request, independent of the mesh.

Ordered header rules come first (forcing headers such as `x-user-group: internal-testers`, then
one rule per arm's group header, so an assigned user never falls through), then a weighted
default route for requests with no group header, integer weights summing to 100.  The same
plan renders to an Istio VirtualService, an Envoy RouteConfiguration and a Gateway API
HTTPRoute (controlplane.routing.render).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from experiments.spec import Destination, ExperimentSpec

MANAGED_PREFIX = "abmesh-"  # route names abmesh owns; others are never touched


class Mode(StrEnum):
    EXPERIMENT = "experiment"  # header rules per arm, weighted default route
    PROMOTED = "promoted"  # everything to the winner, no header rules
    ROLLED_BACK = "rolled_back"  # everything to stable; header rules kept, all to stable


@dataclass(frozen=True, slots=True)
class HeaderRule:
    name: str  # the route's name, MANAGED_PREFIX + what it is for
    header: str
    value: str
    variant: str


@dataclass(frozen=True, slots=True)
class Mirror:
    """Copies of `percent` % of the requests (of `methods`) that go to the stable arm are sent,
    fire-and-forget, to `variant`; its answers are dropped by the mesh (a shadow phase)."""

    variant: str
    percent: float
    methods: tuple[str, ...]

    def __post_init__(self) -> None:
        # No methods would render as a mirrored route without a method match: a catch-all.
        if not self.methods or not 0 < self.percent <= 100:
            raise ValueError(f"a mirror needs methods and a percent in (0, 100], got {self}")


@dataclass(frozen=True, slots=True)
class RoutePlan:
    experiment: str
    service: str  # the host clients call
    rules: tuple[HeaderRule, ...]
    weights: tuple[tuple[str, int], ...]  # (variant, percent), summing to 100
    destinations: tuple[tuple[str, Destination], ...]
    mirror: Mirror | None = None

    def __post_init__(self) -> None:
        total = sum(w for _, w in self.weights)
        if total != 100 or any(w < 0 for _, w in self.weights):
            raise ValueError(
                f"route weights must be non-negative and sum to 100, got {self.weights}"
            )
        mirror = self.mirror
        if mirror is not None and (
            mirror.variant not in dict(self.destinations)
            or self.mirrored_arm in (None, mirror.variant)
        ):
            # Mirroring a weighted default route would copy requests the candidate already
            # serves to it a second time.
            raise ValueError(
                f"a mirror to {mirror.variant!r} needs it among the arms and the default route"
                f" wholly on another arm, got {self.weights}"
            )

    def destination(self, variant: str) -> Destination:
        return dict(self.destinations)[variant]

    def weight(self, variant: str) -> int:
        return dict(self.weights).get(variant, 0)

    @property
    def mirrored_arm(self) -> str | None:
        """The arm whose requests are mirrored: the one the default route sends everything
        to (a shadow phase moves no weight)."""
        return next((v for v, w in self.weights if w == 100), None)


def plan_routes(
    spec: ExperimentSpec,
    weights: dict[str, int],
    mode: Mode = Mode.EXPERIMENT,
    mirror: Mirror | None = None,
) -> RoutePlan:
    """The plan for `spec` with the default route at `weights` (variant -> percent), and the
    shadow phase's `mirror` (only while the experiment runs)."""
    stable = spec.control_variant.key
    if mode is Mode.PROMOTED:
        rules: tuple[HeaderRule, ...] = ()
    else:
        forced = [
            HeaderRule(f"{MANAGED_PREFIX}force-{o.header.value}", o.header.name, o.header.value,
                       stable if mode is Mode.ROLLED_BACK else o.variant)
            for o in spec.overrides
            if o.header is not None
        ]  # fmt: skip
        groups = [
            HeaderRule(f"{MANAGED_PREFIX}arm-{v.header_value}", spec.header, v.header_value,
                       stable if mode is Mode.ROLLED_BACK else v.key)
            for v in spec.variants
        ]  # fmt: skip
        rules = tuple(forced + groups)
    if mode is Mode.ROLLED_BACK:
        weights = {stable: 100}
    return RoutePlan(
        spec.name,
        (spec.rollout.service if spec.rollout else None) or spec.name,
        rules,
        tuple((v.key, int(weights.get(v.key, 0))) for v in spec.variants),
        tuple((v.key, v.destination) for v in spec.variants),
        mirror if mode is Mode.EXPERIMENT else None,
    )
