"""Helpers that run real servers for the tests: `abmesh serve` and a private redis-server.

Each gets a free loopback port and a temp dir, and is stopped by its own PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from experiments import localstack
from experiments.localstack import Process, free_port


def wait_until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    localstack.wait_until(check, what, timeout, (OSError, httpx.HTTPError, redis.RedisError))


@dataclass
class Service(Process):
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)


def start_service(
    store_url: str | None,
    workdir: Path,
    port: int | None = None,
    workers: int = 1,
    **settings: object,
) -> Service:
    """`abmesh serve` with ABMESH_<NAME> settings, e.g. admin_token="t"; store_url None: the
    embedded default (an SQLite file in `workdir`)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABMESH_")}
    if store_url is not None:
        env["ABMESH_STORE"] = store_url
    env.update({f"ABMESH_{k.upper()}": str(v) for k, v in settings.items()})
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
                "--log-level",
                "warning",
                "--workers",
                str(workers),
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


def start_redis(workdir: Path, port: int | None = None, persist: bool = False) -> Process:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"redis-{port}.log"
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--logfile",
        str(log),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        wait_until(client.ping, f"redis-server on port {port}", timeout=10)
    finally:
        client.close()
    log.touch()
    return Process(proc, log, port)
