"""`abmesh controller --source kubernetes`: Experiment objects through the real `kubernetes`
client against the loopback API-server stub (tests/kube_stub.py: list, watch, status
subresource, finalizers, Leases).  Objects are mirrored into the store, their status written
back through the status subresource, a watch that meets 410 lists again, and two controllers
split the experiments by Lease."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from controlplane.controller import Controller
from controlplane.kube import leases as leases_module
from controlplane.kube.crd import GROUP, PLURAL, VERSION
from controlplane.kube.leases import KubeLeases, micro_time, object_name
from controlplane.kube.mirror import FINALIZER, Mirror
from controlplane.kube.objects import experiment_object
from controlplane.kube.origins import Origins
from controlplane.kube.source import KubeSource
from controlplane.kube.watch import ExperimentWatch
from experiments.errors import NotFoundError
from experiments.loader import load_spec
from experiments.status import State
from experiments.store import open_store
from tests.controller_rig import Rig, spec_of
from tests.kube_stub import KubeStub

NS = "models"


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub()
    yield s
    s.stop()


@pytest.fixture
def kube(stub: KubeStub) -> k8s.ApiClient:
    return k8s.ApiClient(k8s.Configuration(host=stub.url))


@pytest.fixture
def live_rig(rig: Rig) -> Rig:
    rig.clock.now = time.time()  # the store's lifecycle times are wall-clock times
    return rig


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    """The objects' API, one watch and one mirror per controller, and helpers to read back."""

    def __init__(self, kube: k8s.ApiClient, rig: Rig, namespace: str | None = NS) -> None:
        self.api = k8s.CustomObjectsApi(kube)
        self.kube, self.rig, self.namespace = kube, rig, namespace
        self.stops: list[tuple[threading.Event, ExperimentWatch]] = []

    def controller(self, owner: str = "c1") -> tuple[Controller, ExperimentWatch]:
        source = KubeSource(
            self.kube,
            self.rig.store,
            self.namespace,
            "abmesh",
            clock=self.rig.clock,
            watch_s=1,
            retry_s=0.05,
        )
        stop = threading.Event()
        source.start(stop)
        self.stops.append((stop, source.watch))
        wait_for(source.watch.synced.is_set, "the first list")
        controller = self.rig.controller(owner)
        source.attach(controller)
        return controller, source.watch

    def create(self, doc: dict[str, Any], namespace: str = NS, **extra: Any) -> dict[str, Any]:
        body = experiment_object(load_spec(doc), namespace)
        body["spec"].update(extra)
        created: dict[str, Any] = self.api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
        return created

    def get(self, name: str, namespace: str = NS) -> dict[str, Any]:
        got: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return got

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": spec})

    def seen(
        self, watch: ExperimentWatch, name: str, check: Callable[[dict[str, Any]], bool]
    ) -> None:
        """Wait until the watch holds the object and `check` passes on it."""

        def present() -> bool:
            obj = watch.objects().get(f"{NS}/{name}")
            return obj is not None and check(obj)

        wait_for(present, f"{name} in the watch")

    def stop(self) -> None:
        for stop, watch in self.stops:
            stop.set()
            watch.stop()


@pytest.fixture
def cluster(kube: k8s.ApiClient, live_rig: Rig) -> Iterator[Cluster]:
    c = Cluster(kube, live_rig)
    yield c
    c.stop()


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_an_applied_object_runs_and_its_status_comes_back(cluster: Cluster) -> None:
    controller, watch = cluster.controller()
    created = cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", lambda o: bool(o))
    controller.tick()
    record = cluster.rig.store.get_experiment("ranker")
    assert record.state is State.RUNNING
    obj = cluster.get("ranker")
    assert FINALIZER in obj["metadata"]["finalizers"]
    status = obj["status"]
    assert status["uid"] == record.uid
    assert status["state"] == "running"
    assert status["observedGeneration"] == 1
    assert "outcome" not in status
    # the printer columns' paths
    assert status["rolloutPhase"] == "canary"
    assert status["candidateWeight"] == 10.0
    assert condition(obj, "Accepted")["status"] == "True"
    assert condition(obj, "RouteTargetReady")["status"] == "True"
    assert condition(obj, "StickyRouting")["reason"] == "HeaderRules"
    # the rollout's summary, not its whole state (that stays in the store)
    assert status["rollout"] == {"status": "running", "phase": 0, "step": 0}
    assert obj["metadata"]["uid"] == created["metadata"]["uid"]


def test_updates_reapplies_and_bad_specs(cluster: Cluster) -> None:
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    store = cluster.rig.store
    # the same spec again (a GitOps tool re-applying), then the same spec written otherwise (a
    # default spelled out): no new revision in the store
    revisions = len(store.experiment_history("ranker"))
    cluster.patch("ranker", cluster.get("ranker")["spec"])
    cluster.patch("ranker", {"description": ""})
    cluster.seen(watch, "ranker", lambda o: o["metadata"]["generation"] == 2)
    controller.tick()
    assert len(store.experiment_history("ranker")) == revisions
    # a change: generation 3 mirrored, observed
    cluster.patch("ranker", {"description": "new model"})
    cluster.seen(watch, "ranker", lambda o: o["metadata"]["generation"] == 3)
    controller.tick()
    assert store.get_experiment("ranker").spec.description == "new model"
    assert cluster.get("ranker")["status"]["observedGeneration"] == 3
    # a spec the model refuses: the store keeps the last good one, status says why
    cluster.patch("ranker", {"coverage": 7})
    cluster.seen(watch, "ranker", lambda o: o["metadata"]["generation"] == 4)
    controller.tick()
    assert store.get_experiment("ranker").spec.description == "new model"
    accepted = condition(cluster.get("ranker"), "Accepted")
    assert accepted["status"] == "False"
    assert accepted["reason"] == "InvalidSpec"
    assert "coverage" in accepted["message"]
    assert cluster.get("ranker")["status"]["state"] == "running"


def test_desired_state_pauses_and_stops(cluster: Cluster) -> None:
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"), desiredState="paused")
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    assert cluster.rig.store.get_experiment("ranker").state is State.DRAFT  # never started
    cluster.patch("ranker", {"desiredState": "running"})
    cluster.seen(watch, "ranker", lambda o: o["spec"]["desiredState"] == "running")
    controller.tick()
    assert cluster.rig.store.get_experiment("ranker").state is State.RUNNING
    cluster.patch("ranker", {"desiredState": "paused"})
    cluster.seen(watch, "ranker", lambda o: o["spec"]["desiredState"] == "paused")
    controller.tick()
    assert cluster.rig.store.get_experiment("ranker").state is State.PAUSED
    cluster.patch("ranker", {"desiredState": "stopped"})
    cluster.seen(watch, "ranker", lambda o: o["spec"]["desiredState"] == "stopped")
    controller.tick()
    controller.tick()
    obj = cluster.get("ranker")
    assert obj["status"]["state"] == "concluded"
    assert obj["status"]["outcome"] == "stopped"


def test_a_deleted_object_is_rolled_back_then_removed(cluster: Cluster, stub: KubeStub) -> None:
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    uid = cluster.rig.store.get_experiment("ranker").uid
    cluster.api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "ranker")
    assert cluster.get("ranker")["metadata"]["deletionTimestamp"]  # held by the finalizer
    cluster.seen(watch, "ranker", lambda o: bool(o["metadata"].get("deletionTimestamp")))
    for _ in range(5):
        controller.tick()
        if not cluster.rig.store.list_experiments():
            break
    with pytest.raises(NotFoundError):
        cluster.rig.store.get_experiment("ranker")
    # the controller rolled the routes back before the store forgot the experiment
    assert cluster.rig.router("ranker").weights == {"stable": 100}
    wait_for(lambda: f"{NS}/ranker" not in watch.objects(), "the object to go")
    assert [p.rsplit("/", 1)[-1] for p in stub.objects] == ["abmesh.controller.c1"]  # its Lease
    # created again under the same name: a new experiment, from nothing
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    assert cluster.rig.store.get_experiment("ranker").uid != uid


def test_one_name_in_two_namespaces_is_refused_for_the_second(
    kube: k8s.ApiClient, live_rig: Rig
) -> None:
    cluster = Cluster(kube, live_rig, namespace=None)
    try:
        controller, watch = cluster.controller()
        cluster.create(spec_of("ranker"), namespace="team-a")
        wait_for(lambda: "team-a/ranker" in watch.objects(), "team-a's object")
        controller.tick()
        cluster.create(spec_of("ranker"), namespace="team-b")
        wait_for(lambda: "team-b/ranker" in watch.objects(), "team-b's object")
        controller.tick()
        refused = condition(cluster.get("ranker", "team-b"), "Accepted")
        assert refused["reason"] == "NameTaken"
        assert "team-a/ranker" in refused["message"]
        assert condition(cluster.get("ranker", "team-a"), "Accepted")["status"] == "True"
    finally:
        cluster.stop()


def test_a_watch_that_meets_410_lists_again(cluster: Cluster, stub: KubeStub) -> None:
    _, watch = cluster.controller()
    cluster.create(spec_of("a"))
    cluster.seen(watch, "a", bool)
    assert watch.relists == 1
    stub.compact()  # the server forgets: the resumed watch's version is too old
    cluster.create(spec_of("b"))
    wait_for(lambda: watch.relists >= 2, "a second list")
    cluster.seen(watch, "b", bool)
    assert set(watch.objects()) == {f"{NS}/a", f"{NS}/b"}
    # the re-list asked for the collection without a version, then watched from its version
    lists = [p for m, p in stub.requests if m == "GET" and "watch" not in p]
    assert len(lists) >= 2


def test_two_controllers_split_the_experiments_by_lease(cluster: Cluster, stub: KubeStub) -> None:
    one, watch = cluster.controller("c1")
    two, watch_two = cluster.controller("c2")
    names = [f"exp-{i}" for i in range(4)]
    for name in names:
        cluster.create(spec_of(name))
    wait_for(lambda: len(watch.objects()) == len(watch_two.objects()) == 4, "four objects")
    for _ in range(4):
        cluster.rig.clock.now += 1
        one.tick()
        two.tick()
    assert len(one.held) == 2
    assert len(two.held) == 2
    assert not one.held & two.held
    leases = {
        o["metadata"]["annotations"]["abmesh.io/lease"]: o["spec"]["holderIdentity"]
        for p, o in stub.objects.items()
        if "/leases/" in p
    }
    for record in cluster.rig.store.list_experiments():
        owner = leases[f"{record.uid}#rollout"]
        assert record.uid in (one.held if owner == "c1" else two.held)
    # c1 gone (its leases released): c2 takes over every experiment
    one.release_leases()
    for _ in range(3):
        cluster.rig.clock.now += 10
        two.tick()
    assert len(two.held) == 4


def test_kube_leases_follow_lease_rules(kube: k8s.ApiClient, stub: KubeStub) -> None:
    """client-go's rules: a Lease another holds expires when its record has not changed for
    its duration by the reader's own clock, from when the reader first saw that record (so
    the two controllers' clocks need not agree: b's runs an hour ahead here)."""
    now = [1_000.0]
    a = KubeLeases(kube, "abmesh", clock=lambda: now[0])
    b = KubeLeases(kube, "abmesh", clock=lambda: now[0] + 3600)
    assert a.acquire_lease("u1#rollout", "c1", ttl_s=10)
    assert not b.acquire_lease("u1#rollout", "c2", ttl_s=10)  # b first sees the record
    assert a.lease_holders("u1") == {"u1#rollout": "c1"}
    now[0] += 5
    assert a.acquire_lease("u1#rollout", "c1", ttl_s=10)  # renewed: a new record
    now[0] += 8
    assert not b.acquire_lease("u1#rollout", "c2", ttl_s=10)  # b sees the renewal now
    now[0] += 9.5
    assert not b.acquire_lease("u1#rollout", "c2", ttl_s=10)
    assert b.lease_holders("") == {"u1#rollout": "c1"}
    now[0] += 1  # 10.5 s since b saw the record: a stopped renewing
    assert b.lease_holders("") == {}
    assert b.acquire_lease("u1#rollout", "c2", ttl_s=10)
    path = f"/apis/coordination.k8s.io/v1/namespaces/abmesh/leases/{object_name('u1#rollout')}"
    lease = stub.objects[path]["spec"]
    assert lease["leaseTransitions"] == 1
    assert lease["holderIdentity"] == "c2"
    assert lease["renewTime"] == "1970-01-01T01:17:03.500000Z"  # b's clock, as MicroTime
    assert micro_time(1000.0) == "1970-01-01T00:16:40.000000Z"  # six digits on a whole second
    a.release_lease("u1#rollout", "c1")  # not c1's: nothing happens
    assert path in stub.objects
    b.release_lease("u1#rollout", "c2")
    assert path not in stub.objects
    assert object_name("7f3a#rollout") == "abmesh.7f3a.rollout"
    for awkward in ("controller#Pod_1", "controller#-x", "controller#A"):  # not DNS labels
        assert object_name(awkward).startswith("abmesh.h-")
    assert object_name("controller#A") != object_name("controller#a")


def test_the_controller_command_runs_from_objects(
    stub: KubeStub, kube: k8s.ApiClient, tmp_path: Path
) -> None:
    """`abmesh controller --source kubernetes` with a kubeconfig that points at the stub."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": stub.url}}],
        "users": [{"name": "abmesh", "user": {"token": "t"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "abmesh"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    api = k8s.CustomObjectsApi(kube)
    body = experiment_object(load_spec(spec_of("ranker")), NS)
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    store = f"sqlite:///{tmp_path}/abmesh.db"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig"), "POD_NAMESPACE": NS}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "controller",
            "--source",
            "kubernetes",
            "--once",
            "--router",
            "manifests",
            "--out-dir",
            str(tmp_path),
            "--metrics-port",
            "0",
            "--store",
            store,
            "--id",
            "pod-1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert open_store(store).get_experiment("ranker").state is State.RUNNING
    obj = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "ranker")
    assert obj["status"]["state"] == "running"
    assert obj["status"]["rolloutPhase"] == "canary"
    assert (tmp_path / "ranker.yaml").exists()  # its routes
    # the leases were Leases in the pod's namespace, given up on exit
    assert not [p for p in stub.objects if "/leases/" in p]
    assert any(m == "POST" and f"/namespaces/{NS}/leases" in p for m, p in stub.requests)


def test_an_api_server_that_hangs_fails_the_tick_not_the_controller(
    cluster: Cluster, stub: KubeStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    assert controller.held
    monkeypatch.setattr(leases_module, "TIMEOUT_S", 0.3)  # only while it hangs
    stub.hang.set()
    ticking = threading.Thread(target=controller.tick)
    ticking.start()
    ticking.join(timeout=120)
    assert not ticking.is_alive()  # every request has a deadline
    assert not controller.held  # no lease could be renewed: nothing is driven blind
    stub.hang.clear()
    monkeypatch.setattr(leases_module, "TIMEOUT_S", 10.0)
    controller.tick()
    assert controller.held
    assert cluster.rig.store.get_experiment("ranker").state is State.RUNNING


def test_a_weights_only_target_says_so_and_refuses_an_ab_phase(cluster: Cluster) -> None:
    controller, watch = cluster.controller()
    canary = [{"kind": "canary", "steps": [10, 50], "checks": 1}, {"kind": "promote"}]
    cluster.create(spec_of("ranker", phases=canary, target={"router": "kserve"}))
    cluster.create(spec_of("ab-test", target={"router": "kserve"}))  # canary, A/B, promote
    cluster.seen(watch, "ab-test", bool)
    controller.tick()
    sticky = condition(cluster.get("ranker"), "StickyRouting")
    assert sticky["status"] == "False"
    assert sticky["reason"] == "WeightsOnly"
    assert sticky["message"].startswith("InferenceService default/ranker: router kserve")
    refused = condition(cluster.get("ab-test"), "Accepted")
    assert refused["status"] == "False"
    assert "A/B phase is refused" in refused["message"]
    with pytest.raises(NotFoundError):
        cluster.rig.store.get_experiment("ab-test")


def test_a_controller_whose_watch_is_behind_undoes_nothing(cluster: Cluster) -> None:
    """Another controller's copy of the objects can lag: without an object it still has, or
    with an older generation of it.  Neither retires the experiment nor applies the old spec."""
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    old = watch.objects()
    controller.tick()
    cluster.patch("ranker", {"description": "generation 2"})
    cluster.seen(watch, "ranker", lambda o: o["metadata"]["generation"] == 2)
    controller.tick()
    behind = Mirror(cluster.kube, cluster.rig.store, NS, cluster.rig.clock, controller.settled)
    behind.sync({})  # it has not seen the object yet
    behind.sync(old)  # it has generation 1
    record = cluster.rig.store.get_experiment("ranker")
    assert record.state is State.RUNNING
    assert record.spec.description == "generation 2"
    assert Origins(cluster.rig.store).get("ranker") is not None


def test_two_controllers_claim_two_new_objects_at_once(cluster: Cluster) -> None:
    """Each sees only its own new object in the same tick: both are mirrored and kept."""
    controller, watch = cluster.controller()
    cluster.create(spec_of("a"))
    cluster.create(spec_of("b"))
    wait_for(lambda: len(watch.objects()) == 2, "both objects")
    both = watch.objects()
    mirrors = [
        Mirror(cluster.kube, cluster.rig.store, NS, cluster.rig.clock, controller.settled)
        for _ in range(2)
    ]
    mirrors[0].sync({k: v for k, v in both.items() if k.endswith("/a")})
    mirrors[1].sync({k: v for k, v in both.items() if k.endswith("/b")})
    assert set(Origins(cluster.rig.store).all()) == {"a", "b"}
    for name in ("a", "b"):
        assert cluster.rig.store.get_experiment(name).state is State.RUNNING
    controller.tick()
    for name in ("a", "b"):
        assert condition(cluster.get(name), "Accepted")["status"] == "True"


def test_an_object_deleted_and_created_while_no_controller_ran(
    cluster: Cluster, stub: KubeStub
) -> None:
    """Its finalizer removed by hand: the new object (a new uid) replaces the old experiment,
    which is rolled back and removed first."""
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    old = cluster.rig.store.get_experiment("ranker").uid
    cluster.api.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "ranker", {"metadata": {"finalizers": None}}
    )
    cluster.api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "ranker")
    created = cluster.create(spec_of("ranker"))
    new = created["metadata"]["uid"]
    cluster.seen(watch, "ranker", lambda o: o.get("metadata", {}).get("uid") == new)
    for _ in range(6):
        controller.tick()
        if cluster.rig.store.get_experiment("ranker").uid != old:
            break
    assert cluster.rig.store.get_experiment("ranker").uid != old
    controller.tick()
    assert condition(cluster.get("ranker"), "Accepted")["status"] == "True"
    assert Origins(cluster.rig.store).get("ranker").uid == created["metadata"]["uid"]


def test_a_lease_renewed_a_moment_ago_is_not_asked_for_again(
    kube: k8s.ApiClient, stub: KubeStub
) -> None:
    now = [1_000.0]
    leases = KubeLeases(kube, "abmesh", clock=lambda: now[0])
    assert leases.acquire_lease("u1#rollout", "c1", ttl_s=30)
    asked = len(stub.requests)
    now[0] += 5
    assert leases.acquire_lease("u1#rollout", "c1", ttl_s=30)  # within a third: no request
    assert len(stub.requests) == asked
    now[0] += 6
    assert leases.acquire_lease("u1#rollout", "c1", ttl_s=30)  # 11 s: renewed at the API
    assert len(stub.requests) == asked + 2  # read, replace
    leases.release_lease("u1#rollout", "c1")
    assert leases.acquire_lease("u1#rollout", "c1", ttl_s=30)  # released: taken anew
    assert len(stub.requests) == asked + 2 + 2 + 2  # read, delete; read, create


def test_an_experiment_deleted_from_the_store_comes_back_from_its_object(
    cluster: Cluster,
) -> None:
    controller, watch = cluster.controller()
    cluster.create(spec_of("ranker"))
    cluster.seen(watch, "ranker", bool)
    controller.tick()
    cluster.rig.store.delete_experiment("ranker")  # `abmesh delete --force` behind its back
    controller.tick()
    assert cluster.rig.store.get_experiment("ranker").state is State.RUNNING
