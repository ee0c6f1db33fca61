"""Mesh routers: where a route plan is written.  `envoy` writes its virtual host into a
file-based RDS file atomically and confirms from Envoy's admin API that the new version is
live; `manifests` renders the VirtualService (or HTTPRoute) YAML into a file for GitOps.  Every
router writes only its experiment's part and skips a write that would change nothing.  The
Kubernetes ones (istio, gateway-api, and the serving platforms' kserve, inference-pool, seldon)
live in modules of their own, imported when asked for.  `make_router` refuses names it does
not know; `sticky` says, without building one, whether a router keeps units on their arms."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from controlplane.routing.plan import RoutePlan
from controlplane.routing.render import (
    envoy_virtual_host,
    http_route,
    istio_destination_rules,
    istio_virtual_service,
)
from experiments import strict_yaml
from experiments.errors import InvalidInputError, StoreError

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


class RouterError(StoreError):
    """The mesh did not take the routes (unreachable, refused, or not confirmed in time)."""


class MeshRouter(Protocol):
    name: str
    # True when the router renders abmesh's header rules, so a unit always reaches the arm it
    # was assigned; False when the platform takes weights only (each request drawn afresh).
    sticky: bool
    mirrors: bool  # whether it can mirror requests (a shadow phase)

    def set_routes(self, plan: RoutePlan) -> bool:
        """Make the mesh route as `plan` says; False if it already did (nothing written)."""

    def get_routes(self) -> Any:
        """What the mesh has now, in its own terms (None if nothing of ours)."""


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename: readers see the old or the new file,
    never half of one (Envoy ignores a file rewritten in place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EnvoyRouter:
    """Writes the experiment's virtual host into one route configuration of a file-based RDS
    file, keeping every other resource and virtual host in it, so several experiments (and
    controllers) share one file.  A read-modify-write under an advisory file lock; the file's
    `version_info` is a counter, so each writer can confirm from Envoy's admin API that a
    version at least as new as its own is live.  A virtual host that serves one of the
    experiment's domains is replaced: the target claims those domains, so the host is either
    not abmesh's or left by an experiment that no longer claims them (one concluded before this
    one started, or deleted); Envoy would refuse the file with both."""

    name = "envoy"
    sticky = mirrors = True

    def __init__(
        self,
        routes_file: Path,
        admin_url: str,
        clusters: Mapping[str, str],
        route_name: str = "abmesh",
        domains: Sequence[str] = ("*",),
        confirm_timeout_s: float = 5.0,
    ) -> None:
        self.routes_file, self.admin_url = Path(routes_file), admin_url.rstrip("/")
        self.clusters, self.route_name = dict(clusters), route_name
        self.domains = tuple(domains)
        self.confirm_timeout_s = confirm_timeout_s

    def set_routes(self, plan: RoutePlan) -> bool:
        missing = [v for v, _ in plan.weights if v not in self.clusters]
        if missing:
            raise InvalidInputError(f"envoy router: no cluster given for variants {missing}")
        host = envoy_virtual_host(plan, self.clusters, self.domains)
        with _locked(self.routes_file):
            document = _read_rds(self.routes_file)
            config = _route_config(document, self.route_name)
            others = [
                v for v in config.get("virtual_hosts", [])
                if v.get("name") != host["name"] and not _taken(v, set(self.domains))
            ]  # fmt: skip
            wanted = {**config, "validate_clusters": True, "virtual_hosts": [*others, host]}
            version = int(document["version_info"])
            changed = wanted != config
            if changed:
                version += 1
                resources = [
                    r for r in document["resources"] if r.get("name") != self.route_name
                ]
                document = {
                    "version_info": str(version),
                    "resources": [*resources, {"@type": ROUTE_TYPE, **wanted}],
                }
                write_atomically(self.routes_file, json.dumps(document, indent=1))
        if not changed and self._live(version):
            return False
        deadline = time.monotonic() + self.confirm_timeout_s
        while not self._live(version):
            if time.monotonic() > deadline:
                raise RouterError(
                    f"envoy at {self.admin_url} did not apply route version {version} of"
                    f" {self.routes_file} within {self.confirm_timeout_s:g} s (rejected, or"
                    " not watching the file)"
                )
            time.sleep(0.005)
        return True

    def _live(self, version: int) -> bool:
        applied = self.applied_version()
        return applied is not None and applied.isdigit() and int(applied) >= version

    def _dump(self) -> dict[str, Any] | None:
        try:
            reply = httpx.get(
                f"{self.admin_url}/config_dump", params={"resource": "dynamic_route_configs"},
                timeout=2.0,
            )  # fmt: skip
            reply.raise_for_status()
        except httpx.HTTPError as exc:
            raise RouterError(f"envoy admin {self.admin_url}: {exc}") from None
        for config in reply.json().get("configs", []):
            if config.get("route_config", {}).get("name") == self.route_name:
                return dict(config)
        return None

    def applied_version(self) -> str | None:
        dump = self._dump()
        return None if dump is None else str(dump.get("version_info"))

    def get_routes(self) -> Any:
        dump = self._dump()
        return None if dump is None else dump.get("route_config")


def _taken(host: dict[str, Any], domains: set[str]) -> bool:
    """A virtual host that serves one of `domains`."""
    return bool(domains & set(host.get("domains", [])))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An advisory lock beside the file: writers on this machine take turns."""
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_rds(path: Path) -> dict[str, Any]:
    """The RDS file, or an empty one; a version that is not a counter (a hand-written file)
    counts as 0, so the first write makes it one."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version_info": "0", "resources": []}
    except (OSError, ValueError) as exc:
        raise RouterError(f"RDS file {path}: not readable JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("resources", []), list):
        raise RouterError(f"RDS file {path}: not a DiscoveryResponse")
    version = str(document.get("version_info", "0"))
    return {"version_info": version if version.isdigit() else "0",
            "resources": document.get("resources", [])}  # fmt: skip


def _route_config(document: dict[str, Any], name: str) -> dict[str, Any]:
    for resource in document["resources"]:
        if resource.get("name") == name:
            return {k: v for k, v in resource.items() if k != "@type"}
    return {"name": name, "virtual_hosts": []}


class ManifestsRouter:
    """Writes the experiment's routes as one YAML file for a GitOps tool to apply: the
    VirtualService and its DestinationRules (kind "istio") or the HTTPRoute ("gateway-api").
    One file per experiment: experiments never rewrite each other's."""

    name = "manifests"
    sticky = mirrors = True

    def __init__(
        self,
        path: Path,
        kind: str = "istio",
        namespace: str = "default",
        gateways: Sequence[str] = (),
    ) -> None:
        if kind not in ("istio", "gateway-api"):
            raise InvalidInputError(
                f"manifests router: kind must be istio or gateway-api, not {kind!r}"
            )
        self.path, self.kind, self.namespace = Path(path), kind, namespace
        self.gateways = tuple(gateways)

    def _documents(self, plan: RoutePlan) -> list[dict[str, Any]]:
        if self.kind == "gateway-api":
            return [http_route(plan, self.namespace)]
        return [
            istio_virtual_service(plan, self.namespace, gateways=self.gateways),
            *istio_destination_rules(plan, self.namespace),
        ]

    def set_routes(self, plan: RoutePlan) -> bool:
        text = yaml.safe_dump_all(self._documents(plan), sort_keys=False)
        if self.path.exists() and self.path.read_text() == text:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, text)
        return True

    def get_routes(self) -> Any:
        if not self.path.exists():
            return None
        return strict_yaml.load_all(self.path.read_text())


ROUTERS = ("envoy", "gateway-api", "inference-pool", "istio", "kserve", "manifests", "seldon")


def _router_class(name: str) -> type[MeshRouter]:
    """The class of router `name`; the Kubernetes ones imported only when asked for."""
    if name == "envoy":
        return EnvoyRouter
    if name == "manifests":
        return ManifestsRouter
    if name in ("istio", "gateway-api"):
        from controlplane.routing.kube import GatewayApiRouter, IstioRouter

        return IstioRouter if name == "istio" else GatewayApiRouter
    if name == "kserve":
        from controlplane.routing.kserve import KServeRouter

        return KServeRouter
    if name == "inference-pool":
        from controlplane.routing.inference_pool import InferencePoolRouter

        return InferencePoolRouter
    if name == "seldon":
        from controlplane.routing.seldon import SeldonRouter

        return SeldonRouter
    raise InvalidInputError(f"unknown router {name!r}; known: {', '.join(ROUTERS)}")


def sticky(router_name: str) -> bool:
    """Whether router `router_name` keeps each unit on its assigned arm (see MeshRouter)."""
    return _router_class(router_name).sticky


def refusal(router_name: str, phase_kinds: Sequence[str]) -> str | None:
    """Why a rollout with these phases cannot run through router `router_name`, if it cannot.
    An A/B phase compares users, so it needs every user kept on one arm: a weights-only
    platform would mix the arms inside each user, and the statistics would compare nothing.
    Canary and shadow phases are judged on requests (guardrails, paired predictions), which
    such a platform splits honestly."""
    cls = _router_class(router_name)
    if "ab" in phase_kinds and not cls.sticky:
        return (
            f"router {router_name} splits requests by weight only (each request drawn afresh),"
            " so no user stays on one arm: an A/B phase is refused on it; use canary and"
            " shadow phases, or a router with header rules (istio, gateway-api,"
            " inference-pool, envoy)"
        )
    if "shadow" in phase_kinds and not cls.mirrors:
        return f"router {router_name} cannot mirror requests: a shadow phase is refused on it"
    return None


def make_router(name: str, /, **options: Any) -> MeshRouter:
    """A router by name; unknown names and missing options are refused with what is needed."""
    cls = _router_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise InvalidInputError(f"router {name!r}: {exc}") from None
