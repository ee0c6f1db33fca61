"""Argo Rollouts' `web` provider and Flagger's webhooks against the real service, with the
guardrails read from a real Prometheus scraping a real Envoy in front of the two models."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from assignment import assign_many
from assignment.auth import Role
from controlplane.lifecycle import Action, change_state
from controlplane.routing.plan import plan_routes
from controlplane.routing.routers import EnvoyRouter
from experiments import load_spec
from experiments.folding import Event, FoldPlan
from experiments.localstack import RolloutStack, start_rollout_stack
from experiments.store import open_store
from tests.rollout_support import Traffic, spec_doc
from tests.servers import TOKENS, Service, start_service, wait_until

pytestmark = pytest.mark.timeout(180)
TOKEN = "s3cret"
DEFAULTS = ["errors_vs_stable", "latency_vs_stable", "p99_latency_ms", "error_ratio"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[RolloutStack, Service, str]]:
    stack = start_rollout_stack(tmp_path)
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    doc = spec_doc([{"kind": "ab", "split": 50}])
    doc["variants"][0]["weight"] = doc["variants"][1]["weight"] = 50
    spec = load_spec(doc)
    store.put_experiment(spec)
    running = change_state(store, spec.name, Action.START)
    # The outside controller runs the A/B phase at 50/50: the status holds the weights in
    # force (without them a spec with a rollout gives everyone control).
    store.commit_status(
        spec.name,
        replace(running.status, weights={"control": 50.0, "treatment": 50.0}),
        expected_version=running.status.version,
    )
    store.close()
    router = EnvoyRouter(stack.routes_file, stack.admin, {"control": "v1", "treatment": "v2"})
    router.set_routes(plan_routes(spec, {"control": 50, "treatment": 50}))
    service = start_service(
        url, tmp_path, admin_token=TOKEN, prometheus_url=stack.prometheus_url, metrics_mesh="envoy"
    )
    yield stack, service, url
    service.stop()
    stack.stop()


def hook(service: Service, name: str, **metadata: str) -> httpx.Response:
    payload = {"name": "ranker-v2", "namespace": "models", "phase": "Progressing",
               "checksum": "85d557f47b", "metadata": {"token": TOKEN, **metadata}}  # fmt: skip
    return httpx.post(f"{service.url}/v1/flagger/{name}", json=payload, timeout=30)


def decision(service: Service, token: str | None = TOKENS[Role.READER]) -> httpx.Response:
    """As Argo Rollouts asks, with the reader token (manifests/integrations)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(
        f"{service.url}/v1/experiments/ranker-v2/decision", headers=headers, timeout=30
    )


def feed(url: str, rates: dict[str, float]) -> None:
    """4,000 users assigned by the stored spec, with conversions at the given rates."""
    store = open_store(url)
    record = store.get_experiment("ranker-v2")
    plan = FoldPlan.from_spec(record.spec)
    units = [f"user-{i}" for i in range(4000)]
    arms = {u: a.variant for u, a in zip(units, assign_many(record.spec, units), strict=True)}
    rng, now = random.Random(3), time.time()
    store.record_exposures("ranker-v2", record.phase, plan, {u: (arms[u], now) for u in units})
    events = [Event(f"e-{u}", u, "click", 1.0, now) for u in units if rng.random() < rates[arms[u]]]
    store.ingest_events("ranker-v2", record.phase, plan, events)
    store.close()


def test_argo_web_provider_and_flagger_hooks_follow_the_evidence(
    world: tuple[RolloutStack, Service, str],
) -> None:
    stack, service, url = world
    assert decision(service, None).status_code == 401
    assert decision(service, "wrong").status_code == 401
    assert hook(service, "rollout", token="wrong").status_code == 401
    # No traffic yet, so no data for v2 (traffic starts only after these checks, or its data
    # could reach Prometheus between two of them): guardrails are not a pass.
    first = decision(service).json()
    assert first["decision"] == "continue"
    assert (first["guardrails_ok"], first["guardrails_failed"]) == (False, False)
    assert hook(service, "rollout").status_code == 200  # no data yet is not a failed check
    assert hook(service, "confirm-traffic-increase").status_code == 412  # nor a reason to go on
    traffic = Traffic(stack.front)
    try:
        wait_until(lambda: decision(service).json()["guardrails_ok"], "guardrail data", timeout=30)
        body: dict[str, Any] = decision(service).json()
        assert [g["name"] for g in body["guardrails"]] == DEFAULTS
        assert hook(service, "confirm-rollout").status_code == 200
        assert hook(service, "rollout").status_code == 200
        assert hook(service, "confirm-promotion").status_code == 412  # no winner yet
        assert hook(service, "rollback").status_code == 412  # no signal to roll back
        feed(url, {"control": 0.10, "treatment": 0.16})
        won = decision(service).json()
        assert (won["decision"], won["winner"]) == ("promote", "treatment")
        assert any("significantly better" in r for r in won["reasons"])
        assert hook(service, "confirm-promotion").status_code == 200
        stack.set_model("v2", delay_ms=300)
        wait_until(
            lambda: hook(service, "rollback").status_code == 200, "rollback signal", timeout=30
        )
        assert hook(service, "rollout").status_code == 412
        bad = hook(service, "rollout").json()
        failed = [g for g in bad["guardrails"] if g["status"] == "fail"]
        assert [g["name"] for g in failed] == ["latency_vs_stable"]  # the ceiling is 1 s
        assert failed[0]["pvalue"] < failed[0]["alpha"]
    finally:
        traffic.stop()
    event = hook(service, "event", eventMessage="Advance ranker-v2 canary weight 10")
    assert event.status_code == 200
    store = open_store(url)
    uid = store.get_experiment("ranker-v2").uid
    assert store.audit(uid)[-1]["what"] == "Advance ranker-v2 canary weight 10"
    store.close()
    assert hook(service, "event", experiment="nope").status_code == 404
    history = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "history", "ranker-v2", "--store", url],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "flagger-event" in history
    unknown = httpx.post(
        f"{service.url}/v1/flagger/confirm-something", json={"name": "x"}, timeout=10
    )
    assert unknown.status_code == 422
    missing = httpx.get(f"{service.url}/v1/experiments/nope/decision",
                        headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
    assert missing.status_code == 404


def test_the_example_manifests_call_endpoints_that_exist() -> None:
    from typing import get_args

    import yaml

    from assignment.routes.integrations import Hook

    root = Path(__file__).resolve().parent.parent / "manifests" / "integrations"
    canary = yaml.safe_load((root / "flagger-canary.yaml").read_text())
    analysis = canary["spec"]["analysis"]
    # A/B mode on abmesh's header: users, not requests, are split (no weight-based steps).
    assert analysis["match"] == [{"headers": {"x-user-group": {"exact": "group-b"}}}]
    assert "stepWeight" not in analysis
    assert "maxWeight" not in analysis
    hooks = analysis["webhooks"]
    assert {h["type"] for h in hooks} <= set(get_args(Hook))
    for h in hooks:
        assert h["url"].endswith(f"/v1/flagger/{h['type']}")
        assert h["metadata"]["experiment"] == "ranker-v2"
    templates = list(yaml.safe_load_all((root / "argo-analysistemplate.yaml").read_text()))
    assert [t["kind"] for t in templates] == ["AnalysisTemplate", "AnalysisTemplate"]
    for t in templates:
        web = t["spec"]["metrics"][0]["provider"]["web"]
        assert web["url"].endswith("/v1/experiments/{{args.experiment}}/decision")
        assert web["jsonPath"] == "{$}"


def test_every_query_template_is_valid_promql_for_prometheus(tmp_path: Path) -> None:
    from controlplane.metrics import Phase
    from controlplane.metrics.prometheus import TEMPLATES, PrometheusProvider, query_labels
    from experiments.spec_rollout import OperationalGuardrail

    stack = start_rollout_stack(tmp_path)
    try:
        for mesh, templates in TEMPLATES.items():
            provider = PrometheusProvider(stack.prometheus_url, mesh=mesh, window="1m")
            for name in templates:
                for host in ("model-inference", "model-inference.models.svc.cluster.local"):
                    # Prometheus answers 400 to a malformed query: an error, not no data
                    guardrail = OperationalGuardrail(name=name, query=name, limit=1,
                                                     min_requests=1)  # fmt: skip
                    m = provider.query(guardrail, query_labels(host, "v2", "v2"))
                    assert m.phase is Phase.NO_DATA, m.message
    finally:
        stack.stop()


def test_an_experiment_without_guardrails_is_never_reported_healthy(tmp_path: Path) -> None:
    """No `rollout:` section, or one with no guardrails: not configured, unless the service has
    Prometheus, whose default guardrails (p99 150 ms, error ratio 0.001) then apply."""
    from tests.json_server import GrowingEnvoy, JsonServer

    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    bare = spec_doc([{"kind": "ab"}])
    del bare["rollout"]
    empty = spec_doc([{"kind": "ab"}], name="ranker-v3")
    empty["rollout"]["guardrails"] = []
    for doc in (bare, empty):
        store.put_experiment(load_spec(doc))
        change_state(store, doc["name"], Action.START)
    store.close()
    names = ("ranker-v2", "ranker-v3")
    service = start_service(url, tmp_path, admin_token=TOKEN)
    try:
        for name in names:
            body = hook(service, "confirm-rollout", experiment=name).json()
            assert (body["guardrails_configured"], body["guardrails_source"]) == (
                False, "not configured")  # fmt: skip
            assert (body["guardrails_ok"], body["guardrails"]) == (False, [])
            assert hook(service, "rollout", experiment=name).status_code == 412
            assert hook(service, "confirm-traffic-increase", experiment=name).status_code == 412
    finally:
        service.stop()
    prometheus = JsonServer().start()
    # Healthy counters that grow at every read: the first reading of a sequential guardrail
    # only starts its count, the next ones judge what came since.
    prometheus.answer_for = GrowingEnvoy("0.0001")
    service = start_service(
        url, tmp_path, admin_token=TOKEN, prometheus_url=prometheus.url, metrics_mesh="envoy"
    )
    try:
        for name in names:
            first = hook(service, "confirm-rollout", experiment=name).json()
            assert (first["guardrails_configured"], first["guardrails_source"]) == (
                True, "service defaults")  # fmt: skip
            assert [(g["name"], g["status"]) for g in first["guardrails"]] == [
                (g, "not_enough_data") for g in DEFAULTS]  # fmt: skip
            body = hook(service, "confirm-rollout", experiment=name).json()
            assert body["guardrails_ok"] is True, body["guardrails"]
            assert [g["name"] for g in body["guardrails"]] == DEFAULTS
            assert hook(service, "rollout", experiment=name).status_code == 200
            assert hook(service, "confirm-traffic-increase", experiment=name).status_code == 200
    finally:
        service.stop()
        prometheus.stop()


def test_pre_rollout_needs_a_running_experiment_and_post_rollout_is_recorded(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'abmesh.db'}"
    store = open_store(url)
    store.put_experiment(load_spec(spec_doc([{"kind": "ab"}])))  # a draft
    service = start_service(url, tmp_path, admin_token=TOKEN)
    try:
        draft = hook(service, "pre-rollout")
        assert draft.status_code == 412
        assert draft.json()["state"] == "draft"  # its users would all get control
        change_state(store, "ranker-v2", Action.START)
        assert hook(service, "pre-rollout").status_code == 200
        done = hook(service, "post-rollout")
        assert (done.status_code, done.json()) == (200, {"recorded": True})
        assert hook(service, "post-rollout", token="wrong").status_code == 401
    finally:
        service.stop()
    entries = store.audit(store.get_experiment("ranker-v2").uid)
    assert [(e["action"], e["what"]) for e in entries][-1] == (
        "flagger-post-rollout",
        "post-rollout: canary Progressing",
    )
    store.close()
