"""A real Envoy in front of two toy model servers, with and without abmesh's ext_authz check.

Two listeners share one route table: `x-user-group: group-b` → v2, `group-a` → v1, anything
else → v1 (the stable model).
- `plain`: the app sets the header itself (after calling /v1/assign), as inside a mesh.
- `authz`: the gateway pattern.  The client's own `x-user-group` is removed before routing
  (early header mutation: a later filter would be too late, the route is already chosen), the
  ext_authz filter asks abmesh and copies its `x-user-group` upstream, and `clear_route_cache`
  makes Envoy route on it.  `failure_mode_allow` sends requests to the stable model when abmesh
  is down instead of failing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.localstack import ROUTER, Process, cluster, free_port, run_envoy, start_model

ROUTES = {
    "name": "models",
    "validate_clusters": True,
    "virtual_hosts": [
        {
            "name": "models",
            "domains": ["*"],
            "routes": [
                {
                    "match": {
                        "prefix": "/",
                        "headers": [{"name": "x-user-group", "string_match": {"exact": "group-b"}}],
                    },
                    "route": {"cluster": "model_v2"},
                },
                {
                    "match": {
                        "prefix": "/",
                        "headers": [{"name": "x-user-group", "string_match": {"exact": "group-a"}}],
                    },
                    "route": {"cluster": "model_v1"},
                },
                {"match": {"prefix": "/"}, "route": {"cluster": "model_v1"}},
            ],
        }
    ],
}


def _listener(
    name: str, port: int, filters: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": ROUTES,
        "http_filters": [*filters, ROUTER],
        **(extra or {}),
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def ext_authz_filter(
    header: str = "x-user-group", unit_header: str = "x-user-id"
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "http_service": {
                "server_uri": {"uri": "http://abmesh", "cluster": "abmesh", "timeout": "0.25s"},
                "path_prefix": "/v1/extauthz",
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": header}]}
                },
            },
            "allowed_headers": {"patterns": [{"exact": unit_header}, {"exact": "cookie"}]},
            "failure_mode_allow": True,
            "clear_route_cache": True,
        },
    }


def strip_header(header: str = "x-user-group") -> dict[str, Any]:
    return {
        "early_header_mutation_extensions": [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation"
                    ".header_mutation.v3.HeaderMutation",
                    "mutations": [{"remove": header}],
                },
            }
        ]
    }


@dataclass
class EnvoyStack:
    envoy: Process
    models: list[Process]
    admin: str
    plain: str
    authz: str

    def stop(self) -> None:
        self.envoy.stop()
        for model in self.models:
            model.stop()


def start_stack(abmesh_port: int, workdir: Path) -> EnvoyStack:
    models = [start_model("v1", workdir), start_model("v2", workdir)]
    admin, plain, authz = free_port(), free_port(), free_port()
    config = {
        "node": {"id": "abmesh-test", "cluster": "abmesh-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [
                cluster("model_v1", models[0].port),
                cluster("model_v2", models[1].port),
                cluster("abmesh", abmesh_port),
            ],
            "listeners": [
                _listener("plain", plain, []),
                _listener("authz", authz, [ext_authz_filter()], strip_header()),
            ],
        },
    }
    envoy_proc = run_envoy(config, workdir, admin)
    return EnvoyStack(
        envoy_proc,
        models,
        f"http://127.0.0.1:{admin}",
        f"http://127.0.0.1:{plain}",
        f"http://127.0.0.1:{authz}",
    )
