"""Route targets: where each experiment's routes live, and which experiment may write there.

A spec's `rollout.target` names its part of the mesh (a VirtualService, an HTTPRoute, an Envoy
route configuration's virtual host, a manifest file); unset fields take the controller's
defaults.  The controller builds one router per target and caches it, so several experiments
are driven side by side, each writing only its own part.

Two active experiments must not write the same part: the routes would flip between them at
every tick.  `claims` decides, the same way in every controller, which one holds each part:
the earliest created (uid breaks ties); the others get `RouteTargetReady=False` with the
holder named, and their rollout waits.  A concluded experiment keeps its claim until its final
routes are confirmed, then frees the target for the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.routing.routers import MeshRouter, make_router, refusal
from experiments.errors import InvalidInputError
from experiments.spec import ExperimentSpec
from experiments.status import State
from experiments.store import ExperimentRecord

Claim = tuple[str, ...]
PLATFORM_KINDS = {"kserve": "InferenceService", "inference-pool": "HTTPRoute",
                  "seldon": "Experiment"}  # fmt: skip


@dataclass(frozen=True)
class Defaults:
    """The controller's command-line options: what a spec's target leaves unset."""

    router: str = "envoy"
    namespace: str = "default"
    envoy_routes: Path | None = None
    envoy_admin: str = "http://127.0.0.1:9901"
    route_name: str = "abmesh"
    clusters: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None
    api_client: Any = None  # a kubernetes ApiClient (tests point it at a stub)


@dataclass(frozen=True)
class Resolved:
    router: str
    options: tuple[tuple[str, Any], ...]  # the router's constructor arguments, hashable
    claims: frozenset[Claim]
    where: str  # for people: "envoy route config abmesh, domains *"

    def option(self, name: str) -> Any:
        return dict(self.options)[name]


def resolve(spec: ExperimentSpec, defaults: Defaults) -> Resolved:
    """The target of `spec`, with the controller's defaults filled in."""
    assert spec.rollout is not None
    t = spec.rollout.target
    kind = t.router or defaults.router
    why = refusal(kind, [p.kind for p in spec.rollout.phases])
    if why is not None:
        raise InvalidInputError(why)
    service = spec.rollout.service or spec.name
    namespace = t.namespace or defaults.namespace
    if kind == "envoy":
        if defaults.envoy_routes is None:
            raise InvalidInputError("router envoy needs the RDS file (--envoy-routes)")
        domains = t.domains or ("*",)
        clusters = {
            v.key: t.clusters.get(v.key)
            or defaults.clusters.get(v.key)
            or (v.destination.subset or v.destination.host)
            for v in spec.variants
        }
        route_config = t.route_config or defaults.route_name
        file = str(defaults.envoy_routes)
        options: dict[str, Any] = {
            "routes_file": defaults.envoy_routes, "admin_url": defaults.envoy_admin,
            "clusters": tuple(sorted(clusters.items())), "route_name": route_config,
            "domains": domains,
        }  # fmt: skip
        claims: set[Claim] = {("envoy", file, route_config, d) for d in domains}
        where = f"envoy route config {route_config}, domains {', '.join(domains)}"
    elif kind in ("istio", "gateway-api"):
        name = t.name or service
        options = {"name": name, "namespace": namespace, "api_client": defaults.api_client}
        if kind == "istio":
            options["gateways"] = t.gateways
        claims = {(kind, namespace, name)}
        where = f"{'VirtualService' if kind == 'istio' else 'HTTPRoute'} {namespace}/{name}"
    elif kind in ("kserve", "inference-pool", "seldon"):
        name = t.name or service
        options = {"name": name, "namespace": namespace, "api_client": defaults.api_client}
        if kind != "inference-pool":
            options["control"] = spec.control_variant.key
            options["models"] = tuple(sorted(t.models.items()))
        # An inference-pool target is an HTTPRoute: it conflicts with gateway-api's.
        claims = {("gateway-api" if kind == "inference-pool" else kind, namespace, name)}
        where = f"{PLATFORM_KINDS[kind]} {namespace}/{name}"
    elif kind == "manifests":
        if defaults.out_dir is None:
            raise InvalidInputError("router manifests needs the output directory (--out-dir)")
        path = defaults.out_dir / (t.path or f"{spec.name}.yaml")
        options = {"path": path, "namespace": namespace, "gateways": t.gateways}
        claims = {("manifests", str(path.resolve()))}
        where = f"manifest {path}"
    else:
        raise InvalidInputError(f"unknown router {kind!r}")
    return Resolved(kind, tuple(sorted(options.items())), frozenset(claims), where)


class Routers:
    """One router per target, built on first use and kept (routers hold clients)."""

    def __init__(
        self, defaults: Defaults, make: Callable[[Resolved], MeshRouter] | None = None
    ) -> None:
        self.defaults = defaults
        self._make = make or _make
        self._built: dict[tuple[str, tuple[tuple[str, Any], ...]], MeshRouter] = {}

    def resolve(self, spec: ExperimentSpec) -> Resolved:
        return resolve(spec, self.defaults)

    def router(self, target: Resolved) -> MeshRouter:
        key = (target.router, target.options)
        if key not in self._built:
            self._built[key] = self._make(target)
        return self._built[key]


def _make(target: Resolved) -> MeshRouter:
    options = dict(target.options)
    if target.router == "envoy":
        options["clusters"] = dict(options["clusters"])
    if options.get("api_client") is None:
        options.pop("api_client", None)
    return make_router(target.router, **options)


def claimant(record: ExperimentRecord, settled: bool) -> bool:
    """Whether the experiment holds on to its target: a rollout that is active, or concluded
    with its final routes not yet confirmed (`settled`)."""
    if record.spec.rollout is None or record.state is State.DRAFT:
        return False
    return record.state.active or not settled


def claims(
    records: Iterable[tuple[ExperimentRecord, Resolved]],
) -> dict[Claim, ExperimentRecord]:
    """Which experiment holds each claimed part: the earliest created, then by uid."""
    holders: dict[Claim, ExperimentRecord] = {}
    for record, target in sorted(records, key=lambda rt: (rt[0].created_at, rt[0].uid)):
        for claim in target.claims:
            holders.setdefault(claim, record)
    return holders


def blocker(
    record: ExperimentRecord, target: Resolved, holders: dict[Claim, ExperimentRecord]
) -> ExperimentRecord | None:
    """The experiment that holds part of `target`, if it is not `record`."""
    for claim in sorted(target.claims):
        holder = holders.get(claim)
        if holder is not None and holder.uid != record.uid:
            return holder
    return None
