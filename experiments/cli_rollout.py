"""`abmesh controller`, `history`, and the manual `promote`, `rollback`, `pause`, `resume`.

A manual command is written into the rollout's state as a request (with a compare-and-set)
and carried out by the controller's next tick, so it never races the controller."""

from __future__ import annotations

import re
import signal
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from experiments.cli_common import Output, OutputOpt, StoreOpt, fail, out, print_data, store_for
from experiments.errors import AbmeshError, ConflictError
from experiments.rollout_state import Request, RolloutState
from experiments.spec import Variant

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


def controller(
    router: Annotated[str, typer.Option(help="envoy, istio, gateway-api or manifests.")] = "envoy",
    interval: Annotated[float, typer.Option(help="Seconds between ticks.", min=0.1)] = 10.0,
    prometheus: Annotated[str, typer.Option(help="Prometheus base URL.")] = "http://127.0.0.1:9090",
    mesh: Annotated[str, typer.Option(help="Query templates: envoy or istio.")] = "envoy",
    window: Annotated[str, typer.Option(help="Rate window of the queries.")] = "30s",
    envoy_routes: Annotated[Path | None, typer.Option(help="RDS file Envoy watches.")] = None,
    envoy_admin: Annotated[str, typer.Option(help="Envoy admin URL.")] = "http://127.0.0.1:9901",
    route_name: Annotated[str, typer.Option(help="Envoy route configuration name.")] = "abmesh",
    out_dir: Annotated[
        Path | None, typer.Option(help="Directory for the manifests router.")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace (istio, gateway-api).")] = (
        "default"
    ),
    target: Annotated[
        str | None, typer.Option(help="VirtualService / HTTPRoute to manage (istio, gateway-api).")
    ] = None,
    cluster: ClusterOpt = None,
    experiment: Annotated[
        list[str] | None,
        typer.Option(help="Only these experiments (one route configuration, one experiment)."),
    ] = None,
    once: Annotated[bool, typer.Option(help="One tick, then exit.")] = False,
    store: StoreOpt = None,
) -> None:
    """Walk every running experiment's rollout plan: canary steps, A/B, promotion or rollback."""
    from experiments.controller import Controller
    from experiments.metrics_provider import PrometheusProvider, query_labels
    from experiments.routing.routers import make_router

    clusters = _clusters(cluster or [])
    by_router: dict[str, dict[str, object]] = {
        "envoy": {"routes_file": envoy_routes, "admin_url": envoy_admin, "clusters": clusters,
                  "route_name": route_name},
        "manifests": {"directory": out_dir, "namespace": namespace},
        "istio": {"name": target, "namespace": namespace},
        "gateway-api": {"name": target, "namespace": namespace},
    }  # fmt: skip
    options = by_router.get(router, {})
    if router in ("istio", "gateway-api") and target is None:
        fail(f"--router {router} needs --target NAME (the object to manage)")
    if router == "envoy" and envoy_routes is None:
        fail("--router envoy needs --envoy-routes FILE (the RDS file Envoy watches)")
    if router == "manifests" and out_dir is None:
        fail("--router manifests needs --out-dir DIR")
    if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", window):
        fail(f"--window {window!r} is not a Prometheus duration such as 30s or 1m")
    try:
        mesh_router = make_router(router, **options)
        provider = PrometheusProvider(prometheus, mesh=mesh, window=window)
    except AbmeshError as exc:
        fail(str(exc))

    def labels(variant: Variant) -> dict[str, str]:
        d = variant.destination
        return query_labels(d.host, d.subset, clusters.get(variant.key, variant.key))

    with store_for(store) as st:
        loop = Controller(
            st, mesh_router, provider, labels, interval=interval,
            settle_s=_seconds(window), experiments=experiment or (),
        )  # fmt: skip
        if once:
            try:
                loop.tick()
            except AbmeshError as exc:
                fail(str(exc))
            return
        stopped = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopped.set())
        out.print(f"controller {loop.owner}: router {router}, every {interval:g} s")
        loop.run(stopped.is_set)


def _seconds(window: str) -> float:
    number, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h)", window).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def history(experiment: str, output: OutputOpt = Output.TEXT, store: StoreOpt = None) -> None:
    """The rollout's audit log: every step, promotion and rollback with its numbers."""
    with store_for(store) as st:
        entries = st.audit(experiment)
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
        st.get_experiment(experiment)
        doc, version = st.get_control(experiment)
        if doc is None:
            fail(f"{experiment} has no rollout in progress (no controller has started it)")
        state = RolloutState.from_dict(doc)
        state.request = request
        try:
            st.put_control(experiment, state.to_dict(), version)
        except ConflictError:
            fail("the controller changed the rollout at the same moment: run the command again")
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

    from experiments.loader import load_spec
    from experiments.rollout_state import split
    from experiments.routing import render as r
    from experiments.routing.plan import plan_routes

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
        docs = [
            r.istio_virtual_service(plan, namespace),
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
    scenario: Annotated[str, typer.Option(help="promote, or regression (a rollback).")] = "promote",
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
