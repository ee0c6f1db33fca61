"""`abmesh controller`, `history`, and the manual `promote`, `rollback`, `pause`, `resume`.

A manual command is written into the experiment's status (its rollout state) as a request,
with a compare-and-set, and carried out by the controller's next tick, so it never races the
controller."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from controlplane.lifecycle import RETRIES
from controlplane.rollout import Request, RolloutState
from controlplane.routing.routers import ROUTERS
from experiments.cli_common import (
    LogFormatOpt,
    LogLevelOpt,
    Output,
    OutputOpt,
    StoreOpt,
    fail,
    out,
    print_data,
    store_for,
)
from experiments.errors import AbmeshError, ConflictError
from experiments.logs import LogLevel, configure, resolve_format

ClusterOpt = Annotated[
    list[str] | None,
    typer.Option("--cluster", help="VARIANT=CLUSTER for the envoy router and queries. Repeatable."),
]


def _clusters(pairs: list[str]) -> dict[str, str]:
    out_: dict[str, str] = {}
    for pair in pairs:
        variant, sep, cluster = pair.partition("=")
        if not sep or not variant or not cluster:
            fail(f"--cluster {pair!r} is not VARIANT=CLUSTER")
        out_[variant] = cluster
    return out_


class Source(StrEnum):
    STORE = "store"
    KUBERNETES = "kubernetes"


def controller(
    router: Annotated[
        str,
        typer.Option(
            help="Default router for specs whose target names none: envoy, istio,"
            " gateway-api or manifests."
        ),
    ] = "envoy",
    interval: Annotated[float, typer.Option(help="Seconds between ticks.", min=0.1)] = 10.0,
    prometheus: Annotated[str, typer.Option(help="Prometheus base URL.")] = "http://127.0.0.1:9090",
    mesh: Annotated[str, typer.Option(help="Query templates: envoy or istio.")] = "envoy",
    window: Annotated[str, typer.Option(help="Rate window of the queries.")] = "30s",
    settle: Annotated[
        float | None,
        typer.Option(help="Seconds after a step before checks count (default: the window).", min=0),
    ] = None,
    envoy_routes: Annotated[Path | None, typer.Option(help="RDS file Envoy watches.")] = None,
    envoy_admin: Annotated[str, typer.Option(help="Envoy admin URL.")] = "http://127.0.0.1:9901",
    route_name: Annotated[
        str, typer.Option(help="Default Envoy route configuration (target.route_config).")
    ] = "abmesh",
    out_dir: Annotated[
        Path | None, typer.Option(help="Directory for the manifests router.")
    ] = None,
    namespace: Annotated[
        str, typer.Option(help="Default Kubernetes namespace (target.namespace).")
    ] = "default",
    cluster: ClusterOpt = None,
    experiment: Annotated[
        list[str] | None, typer.Option(help="Only these experiments (default: all).")
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="This controller's identity, stable across restarts so a"
            " restarted one resumes its leases (default: $POD_NAME, else the host name).",
        ),
    ] = None,
    lease: Annotated[
        float | None,
        typer.Option(help="Lease TTL in seconds (default: 3 intervals, at least 5 s).", min=1),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics, /healthz, /readyz.")] = (
        "127.0.0.1"
    ),
    metrics_port: Annotated[
        int, typer.Option(help="Port of /metrics, /healthz, /readyz (0: none).", min=0, max=65535)
    ] = 9102,
    once: Annotated[bool, typer.Option(help="One tick, then exit.")] = False,
    source: Annotated[
        Source,
        typer.Option(
            help="Where experiments come from: the store (abmesh apply), or Experiment"
            " objects (kubectl apply), mirrored into the store."
        ),
    ] = Source.STORE,
    watch_namespace: Annotated[
        str | None,
        typer.Option(
            help="--source kubernetes: the namespace of the Experiment objects; '*'"
            " for all (default: $POD_NAMESPACE, else --namespace)."
        ),
    ] = None,
    lease_namespace: Annotated[
        str | None,
        typer.Option(
            help="--source kubernetes: the namespace of the controllers' Leases"
            " (default: $POD_NAMESPACE, else --namespace)."
        ),
    ] = None,
    store: StoreOpt = None,
    log_level: LogLevelOpt = LogLevel.INFO,
    log_format: LogFormatOpt = None,
) -> None:
    """Walk every running experiment's rollout plan: canary steps, A/B, promotion or rollback.
    Each experiment's routes go to its own target (spec rollout.target; these options are the
    defaults); several controllers share the experiments through per-experiment leases."""
    configure(log_level, resolve_format(log_format, sys.stderr))
    from controlplane.controller import Controller
    from controlplane.metrics import ProviderConfig, Providers, make_provider
    from controlplane.observability import ControllerTelemetry, HealthServer, liveness
    from controlplane.targets import Defaults, Routers

    if router not in ROUTERS:
        fail(f"--router {router!r} is not one of {', '.join(ROUTERS)}")
    if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", window):
        fail(f"--window {window!r} is not a Prometheus duration such as 30s or 1m")
    defaults = Defaults(
        router=router, namespace=namespace, envoy_routes=envoy_routes, envoy_admin=envoy_admin,
        route_name=route_name, clusters=_clusters(cluster or []), out_dir=out_dir,
    )  # fmt: skip
    try:
        config = ProviderConfig(prometheus_url=prometheus, mesh=mesh, window=window)
        make_provider("prometheus", config)  # a wrong --mesh fails here, not at every tick
        provider = Providers(config)
    except AbmeshError as exc:
        fail(str(exc))
    identity = owner or os.environ.get("POD_NAME") or socket.gethostname()
    with store_for(store) as st:
        telemetry = ControllerTelemetry()
        loop = Controller(
            st, Routers(defaults), provider, owner=identity, interval=interval,
            settle_s=_seconds(window) if settle is None else settle, lease_s=lease,
            experiments=experiment or (), telemetry=telemetry,
        )  # fmt: skip
        stopped = threading.Event()
        kube = None
        if source is Source.KUBERNETES:
            from controlplane.kube.source import connect

            here = os.environ.get("POD_NAMESPACE") or namespace
            watched = watch_namespace or here
            try:
                kube = connect(st, None if watched == "*" else watched, lease_namespace or here)
            except AbmeshError as exc:
                fail(str(exc))
            kube.attach(loop)
            kube.start(stopped)
        if once:
            if kube is not None and not kube.watch.synced.wait(30):
                fail("--source kubernetes: no list of Experiments from the API in 30 s")
            loop.tick()
            loop.release_leases()
            stopped.set()
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopped.set())
        started = time.time()
        health = None
        if metrics_port:
            health = HealthServer(
                telemetry, host=metrics_host, port=metrics_port,
                healthy=lambda: liveness(telemetry.last_tick_at, started, interval, time.time()),
                ready=lambda: loop.store_ok,
            )  # fmt: skip
            try:
                health.start()
            except OSError as exc:
                fail(f"--metrics-port {metrics_port}: {exc.strerror}")
        out.print(f"controller {identity}: default router {router}, every {interval:g} s,"
                  f" leases of {loop.lease_s:g} s")  # fmt: skip
        # Ticks run on their own thread: a signal stops the process within a moment even in
        # the middle of a slow tick (a Prometheus or router timeout), and the leases are given
        # up so another controller takes over at once.
        worker = threading.Thread(target=loop.run, args=(stopped,), daemon=True)
        worker.start()
        while not stopped.wait(0.5):
            if not worker.is_alive():
                break
        worker.join(timeout=1.0)
        if kube is not None:
            kube.stop()
        loop.release_leases()
        if health is not None:
            health.stop()


def _seconds(window: str) -> float:
    number, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h)", window).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def history(
    experiment: Annotated[str | None, typer.Argument(help="The experiment's name.")] = None,
    uid: Annotated[
        str | None, typer.Option(help="An experiment's uid: the history of a deleted one.")
    ] = None,
    output: OutputOpt = Output.TEXT,
    store: StoreOpt = None,
) -> None:
    """The rollout's audit log: every step, promotion and rollback with its numbers."""
    if (experiment is None) == (uid is None):
        fail("name an experiment, or give --uid (for a deleted one), not both")
    with store_for(store) as st:
        key = uid or st.get_experiment(str(experiment)).uid
        entries = st.audit(key)
    experiment = experiment or f"uid {uid}"
    if output is not Output.TEXT:
        print_data(entries, output)
        return
    if not entries:
        out.print(f"{experiment}: no rollout history")
    for e in entries:
        when = datetime.fromtimestamp(e.get("at", 0), UTC).strftime("%H:%M:%S")
        weights = " ".join(f"{k}={v}" for k, v in e.get("weights", {}).items())
        checks = ", ".join(
            f"{g['name']} {'no data' if g['value'] is None else format(g['value'], '.4g')}"
            f" (limit {g['limit']:g}, {g['status']})"
            for g in e.get("guardrails", [])
        )
        line = f"{when} {e.get('action', '?'):<8} [{weights}] {e.get('what', '')}"
        out.print(line + (f" | {checks}" if checks else ""), markup=False)


def _request(experiment: str, request: Request, store: str | None) -> None:
    with store_for(store) as st:
        for _ in range(RETRIES):
            record = st.get_experiment(experiment)
            if record.status.rollout is None:
                fail(f"{experiment} has no rollout in progress (no controller has started it)")
            state = RolloutState.from_dict(record.status.rollout)
            state.request = request
            status = replace(record.status, rollout=state.to_dict())
            try:
                st.commit_status(experiment, status, expected_version=record.status.version)
                break
            except ConflictError:
                continue  # the controller wrote meanwhile: ask again on what it wrote
        else:
            fail("the rollout kept changing under the command: run it again")
    out.print(f"{request.value} requested for {experiment}; the controller's next tick does it")


def promote(experiment: str, store: StoreOpt = None) -> None:
    """Promote the candidate (or the declared winner) now."""
    _request(experiment, Request.PROMOTE, store)


def rollback(experiment: str, store: StoreOpt = None) -> None:
    """Send all traffic back to the stable model now."""
    _request(experiment, Request.ROLLBACK, store)


def pause(experiment: str, store: StoreOpt = None) -> None:
    """Hold the rollout where it is."""
    _request(experiment, Request.PAUSE, store)


def resume(experiment: str, store: StoreOpt = None) -> None:
    """Continue a paused rollout."""
    _request(experiment, Request.RESUME, store)


class RenderKind(StrEnum):
    ISTIO = "istio"
    GATEWAY_API = "gateway-api"
    ENVOY = "envoy"


def render(
    file: Annotated[Path, typer.Option("--file", "-f", help="The experiment spec.")],
    candidate_percent: Annotated[
        int, typer.Option(help="The candidate's share of the default route.", min=0, max=100)
    ] = 0,
    kind: Annotated[RenderKind, typer.Option(help="What to render.")] = RenderKind.ISTIO,
    namespace: Annotated[str, typer.Option(help="Namespace of the objects.")] = "default",
    cluster: ClusterOpt = None,
) -> None:
    """Print the routes of a spec at a given split, as the routers write them (for GitOps)."""
    import yaml

    from controlplane.rollout import split
    from controlplane.routing import render as r
    from controlplane.routing.plan import plan_routes
    from experiments.loader import load_spec

    try:
        spec = load_spec(file)
    except AbmeshError as exc:
        fail(str(exc))
    plan = plan_routes(spec, split(spec, candidate_percent))
    if kind is RenderKind.ENVOY:
        clusters = _clusters(cluster or []) or {v.key: v.destination.host for v in spec.variants}
        docs: list[object] = [r.envoy_route_configuration(plan, "abmesh", clusters)]
    elif kind is RenderKind.GATEWAY_API:
        docs = [r.http_route(plan, namespace)]
    else:
        gateways = spec.rollout.target.gateways if spec.rollout is not None else ()
        docs = [
            r.istio_virtual_service(plan, namespace, gateways=gateways),
            *r.istio_destination_rules(plan, namespace),
        ]
    out.print(yaml.safe_dump_all(docs, sort_keys=False).rstrip(), markup=False)


def register(app: typer.Typer) -> None:
    for command in (controller, history, promote, rollback, pause, resume, render, demo):
        app.command()(command)


def demo(
    fast: Annotated[
        bool, typer.Option(help="Under a minute or so: shorter canary checks.")
    ] = False,
    scenario: Annotated[
        str,
        typer.Option(
            help="promote; regression (a rollback); shadow (a candidate stopped by"
            " the shadow comparison before serving anyone)."
        ),
    ] = "promote",
    workdir: Annotated[
        Path | None, typer.Option(help="Where logs, the store and the report go.")
    ] = None,
) -> None:
    """Run the whole loop on this machine: service, Envoy, two models, Prometheus, controller
    and simulated users, through a canary and an A/B test to a promotion (or a rollback)."""
    import tempfile

    from experiments.demo import run_demo

    where = workdir or Path(tempfile.mkdtemp(prefix="abmesh-demo-"))
    try:
        result = run_demo(where, fast=fast, scenario=scenario, console=out)
    except AbmeshError as exc:
        fail(str(exc))
    out.print(
        f"\n{result.status} after {result.seconds:.0f} s; report: {result.report};"
        f" logs and store in {where}; every process the demo started has been stopped"
    )
    if result.status not in ("promoted", "rolled_back", "no_difference"):
        raise typer.Exit(1)
