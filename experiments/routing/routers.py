"""Mesh routers: where a route plan is written.  `envoy` writes file-based RDS atomically and
confirms from Envoy's admin API that the new version is live; `manifests` renders the
VirtualService (or HTTPRoute) YAML into a directory for GitOps.  Every router skips a write
that would change nothing.  `make_router` refuses names it does not know."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from experiments.errors import InvalidInputError, StoreError
from experiments.routing.plan import RoutePlan
from experiments.routing.render import (
    envoy_route_configuration,
    http_route,
    istio_destination_rules,
    istio_virtual_service,
)

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


class RouterError(StoreError):
    """The mesh did not take the routes (unreachable, refused, or not confirmed in time)."""


class MeshRouter(Protocol):
    name: str

    def set_routes(self, plan: RoutePlan) -> bool:
        """Make the mesh route as `plan` says; False if it already did (nothing written)."""

    def get_routes(self) -> Any:
        """What the mesh has now, in its own terms (None if nothing of ours)."""


def _version(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


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
    name = "envoy"

    def __init__(
        self,
        routes_file: Path,
        admin_url: str,
        clusters: Mapping[str, str],
        route_name: str = "abmesh",
        confirm_timeout_s: float = 5.0,
    ) -> None:
        self.routes_file, self.admin_url = Path(routes_file), admin_url.rstrip("/")
        self.clusters, self.route_name = dict(clusters), route_name
        self.confirm_timeout_s = confirm_timeout_s

    def set_routes(self, plan: RoutePlan) -> bool:
        missing = [v for v, _ in plan.weights if v not in self.clusters]
        if missing:
            raise InvalidInputError(f"envoy router: no cluster given for variants {missing}")
        config = envoy_route_configuration(plan, self.route_name, self.clusters)
        version = _version(config)
        if self.applied_version() == version:
            return False
        document = {"version_info": version, "resources": [{"@type": ROUTE_TYPE, **config}]}
        write_atomically(self.routes_file, json.dumps(document, indent=1))
        deadline = time.monotonic() + self.confirm_timeout_s
        while self.applied_version() != version:
            if time.monotonic() > deadline:
                raise RouterError(
                    f"envoy at {self.admin_url} did not apply route version {version} within"
                    f" {self.confirm_timeout_s:g} s (rejected, or not watching {self.routes_file})"
                )
            time.sleep(0.005)
        return True

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


class ManifestsRouter:
    """Writes `virtualservice.yaml` + `destinationrules.yaml` (kind "istio") or
    `httproute.yaml` (kind "gateway-api") for a GitOps tool to apply."""

    name = "manifests"

    def __init__(self, directory: Path, kind: str = "istio", namespace: str = "default") -> None:
        if kind not in ("istio", "gateway-api"):
            raise InvalidInputError(
                f"manifests router: kind must be istio or gateway-api, not {kind!r}"
            )
        self.directory, self.kind, self.namespace = Path(directory), kind, namespace

    def _documents(self, plan: RoutePlan) -> dict[str, list[dict[str, Any]]]:
        if self.kind == "gateway-api":
            return {"httproute.yaml": [http_route(plan, self.namespace)]}
        return {
            "virtualservice.yaml": [istio_virtual_service(plan, self.namespace)],
            "destinationrules.yaml": istio_destination_rules(plan, self.namespace),
        }

    def set_routes(self, plan: RoutePlan) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        changed = False
        for name, docs in self._documents(plan).items():
            text = yaml.safe_dump_all(docs, sort_keys=False)
            path = self.directory / name
            if path.exists() and path.read_text() == text:
                continue
            write_atomically(path, text)
            changed = True
        return changed

    def get_routes(self) -> Any:
        path = self.directory / (
            "httproute.yaml" if self.kind == "gateway-api" else "virtualservice.yaml"
        )
        return yaml.safe_load(path.read_text()) if path.exists() else None


ROUTERS = ("envoy", "gateway-api", "istio", "manifests")


def make_router(name: str, /, **options: Any) -> MeshRouter:
    """A router by name; unknown names and missing options are refused with what is needed."""
    try:
        if name == "envoy":
            return EnvoyRouter(**options)
        if name == "manifests":
            return ManifestsRouter(**options)
        if name in ("istio", "gateway-api"):
            from kubernetes.config import ConfigException

            from experiments.routing.kube import GatewayApiRouter, IstioRouter  # the k8s client

            try:
                return IstioRouter(**options) if name == "istio" else GatewayApiRouter(**options)
            except ConfigException as exc:
                raise InvalidInputError(
                    f"router {name!r}: no Kubernetes credentials (in-cluster or kubeconfig): {exc}"
                ) from None
    except TypeError as exc:
        raise InvalidInputError(f"router {name!r}: {exc}") from None
    raise InvalidInputError(f"unknown router {name!r}; known: {', '.join(ROUTERS)}")
