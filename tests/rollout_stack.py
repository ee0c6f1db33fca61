"""The real parts of a rollout, each on its own loopback port and temp dir, stopped by PID:
two toy model servers (v1 stable, v2 candidate, latency and errors adjustable while running),
an Envoy whose routes come from a file (file-based RDS, which the `envoy` router writes), and
a Prometheus scraping Envoy's stats every second."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.envoy_stack import ROUTER, _cluster, run_envoy
from tests.servers import Process, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RolloutStack:
    models: dict[str, Process]
    envoy: Process
    prometheus: Process
    routes_file: Path
    admin: str
    front: str
    prometheus_url: str

    def set_model(self, name: str, **config: float) -> None:
        port = self.models[name].port
        httpx.post(f"http://127.0.0.1:{port}/admin/config", json=config, timeout=5)

    def stop(self) -> None:
        for proc in (self.prometheus, self.envoy, *self.models.values()):
            proc.stop()


def _model(name: str, workdir: Path) -> Process:
    port = free_port()
    log = workdir / f"model-{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.toy_model", "--port", str(port), "--name", name],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    model = Process(proc, log, port)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, name)
    return model


def _envoy(
    workdir: Path, models: dict[str, Process], routes_file: Path
) -> tuple[Process, int, int]:
    admin, front = free_port(), free_port()
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "front",
        "rds": {
            "route_config_name": "abmesh",
            "config_source": {"path_config_source": {"path": str(routes_file)}},
        },
        "http_filters": [ROUTER],
    }
    config: dict[str, Any] = {
        "node": {"id": "abmesh-rollout", "cluster": "abmesh-rollout"},
        # Envoy publishes histograms at each stats flush (5 s by default): at 1 s the p99 a
        # guardrail reads is as fresh as the counters.
        "stats_flush_interval": "1s",
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [_cluster(name, p.port) for name, p in models.items()],
            "listeners": [
                {
                    "name": "front",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": front}},
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
            ],
        },
    }
    return run_envoy(config, workdir, admin), admin, front


def _prometheus(workdir: Path, envoy_admin: int) -> Process:
    port = free_port()
    data = workdir / "prometheus-data"
    data.mkdir()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: envoy\n"
        "    metrics_path: /stats/prometheus\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{envoy_admin}']}}]\n"
    )
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Process(proc, log, port)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {prom.output()}")
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200

    wait_until(ready, "prometheus")
    return prom


def start_rollout_stack(workdir: Path) -> RolloutStack:
    models = {name: _model(name, workdir) for name in ("v1", "v2")}
    routes_file = workdir / "routes.json"
    # Envoy needs a route file to start: everything to the stable model until the router writes.
    routes_file.write_text(
        json.dumps(
            {
                "version_info": "initial",
                "resources": [
                    {
                        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                        "name": "abmesh",
                        "virtual_hosts": [
                            {
                                "name": "all",
                                "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "v1"}}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    envoy, admin, front = _envoy(workdir, models, routes_file)
    prom = _prometheus(workdir, admin)
    return RolloutStack(
        models,
        envoy,
        prom,
        routes_file,
        f"http://127.0.0.1:{admin}",
        f"http://127.0.0.1:{front}",
        f"http://127.0.0.1:{prom.port}",
    )
