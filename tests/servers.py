"""Helpers that run real servers for the tests: `abmesh serve` (experiments.localstack) and a
private redis-server.

Each gets a free loopback port and a temp dir, and is stopped by its own PID."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from experiments import localstack
from experiments.localstack import Process, Service, free_port, start_service

# `abmesh serve` for the tests is the package's own (the demo uses it too).
__all__ = ["Process", "Service", "free_port", "start_redis", "start_service", "wait_until"]


def wait_until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    localstack.wait_until(check, what, timeout, (OSError, httpx.HTTPError, redis.RedisError))


def start_redis(
    workdir: Path, port: int | None = None, persist: bool = False, password: str | None = None
) -> Process:
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
        *(["--requirepass", password] if password else []),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
    try:
        wait_until(client.ping, f"redis-server on port {port}", timeout=10)
    finally:
        client.close()
    log.touch()
    return Process(proc, log, port)
