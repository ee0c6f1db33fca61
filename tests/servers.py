"""Helpers that run real servers for the tests: `abmesh serve` (experiments.localstack) and a
private redis-server.

Each gets a free loopback port and a temp dir, and is stopped by its own PID.

`abmesh serve` starts as it would be deployed: with a token for every role (TOKENS), which the
tests send with `auth(role)`; a test about a closed role starts it with `tokens=False`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from assignment.auth import Role
from experiments import localstack
from experiments.localstack import Process, Service, free_port

__all__ = [
    "TOKENS",
    "Process",
    "Service",
    "auth",
    "free_port",
    "start_redis",
    "start_service",
    "wait_until",
]

TOKENS = {role: f"test-{role.value}-token" for role in Role}


def auth(role: Role) -> dict[str, str]:
    """The header that carries the test token of `role`."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def start_service(
    store_url: str | None,
    workdir: Path,
    port: int | None = None,
    workers: int = 1,
    *,
    tokens: bool = True,
    insecure: bool = False,
    **settings: object,
) -> Service:
    """`abmesh serve` (the package's own, which the demo uses too) with the test tokens of
    every role, unless `tokens=False`; a token given as a setting (admin_token="t") wins."""
    roles = {f"{role.value}_token": token for role, token in TOKENS.items()} if tokens else {}
    # The deadlines (0.5 s for events, 4 s for the other API routes) shed load on a busy
    # machine: a test that is not about them gets generous ones, so a loaded CI host cannot turn
    # an ingest or a report into a 503.  No warm-up unless asked for: importing the analysis
    # stack in every service the suite starts cost minutes of CPU; without it a test's first
    # report imports it, which on a loaded host takes longer than the 4 s API deadline.
    generous = {"events_timeout": 30, "api_timeout": 60, "warmup": 0} | roles | settings
    return localstack.start_service(store_url, workdir, port, workers, insecure=insecure,
                                    **generous)  # fmt: skip


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
