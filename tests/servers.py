"""Helpers that run real servers for the tests: `abmesh serve` (experiments.localstack) and a
private redis-server or Redis Cluster.

Each gets a free loopback port and a temp dir, and is stopped by its own PID.

`abmesh serve` starts as it would be deployed: with a token for every role (TOKENS), which the
tests send with `auth(role)`; a test about a closed role starts it with `tokens=False`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from assignment.auth import Role
from experiments import localstack
from experiments.localstack import Process, Service, free_port

__all__ = [
    "TOKENS",
    "Cluster",
    "Process",
    "Service",
    "auth",
    "free_port",
    "start_redis",
    "start_redis_cluster",
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
    workdir: Path,
    port: int | None = None,
    persist: bool = False,
    password: str | None = None,
    extra: Sequence[str] = (),
) -> Process:
    """A redis-server on `port` (default: a free one) with its data and log in `workdir`;
    `extra` are more command-line options."""
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
        *extra,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
    try:
        wait_until(client.ping, f"redis-server on port {port}", timeout=10)
    except BaseException:
        Process(proc, log, port).stop()
        raise
    finally:
        client.close()
    log.touch()
    return Process(proc, log, port)


@dataclass
class Cluster:
    """A Redis Cluster of masters on loopback ports, each a `Process` of its own."""

    nodes: list[Process]

    @property
    def url(self) -> str:
        """The store URL of the cluster (without a prefix)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(workdir: Path, masters: int = 3, password: str | None = None) -> Cluster:
    """`masters` cluster-enabled redis-servers, each in its own dir under `workdir`, joined by
    `redis-cli --cluster create` (no replicas); returns once every node reports
    cluster_state:ok, so the first command of a test finds every slot served."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed (Debian package redis-tools)")
    nodes: list[Process] = []
    try:
        for i in range(masters):
            nodes.append(
                start_redis(
                    workdir / f"node-{i}",
                    password=password,
                    # The bus port on a free port of its own: the default, port + 10000,
                    # may be taken or above 65535.
                    extra=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        str(free_port()),
                    ],
                )
            )
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
        env = {**os.environ, **({"REDISCLI_AUTH": password} if password else {})}
        done = subprocess.run([*create, "--cluster-yes"], capture_output=True, text=True,
                              timeout=60, check=False, env=env)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        for node in nodes:
            client = redis.Redis(port=node.port, password=password, decode_responses=True)
            try:
                wait_until(lambda c=client: c.cluster("info")["cluster_state"] == "ok" or None,
                           f"cluster_state:ok on port {node.port}", timeout=30)  # fmt: skip
            finally:
                client.close()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return Cluster(nodes)
