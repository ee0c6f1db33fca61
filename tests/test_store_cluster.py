"""The Redis Cluster store beyond the shared contract (which runs on the cluster through the
`store` fixtures): that the test cluster is a real one, where the keys go, and the URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from experiments import ExperimentSpec, load_spec
from experiments.errors import StoreError
from experiments.folding import FoldPlan
from experiments.store import open_store
from experiments.store.redis import RedisStore
from tests.servers import Cluster, start_redis_cluster

PASSWORD = "cluster-s3cret"


def spec(name: str) -> ExperimentSpec:
    return load_spec(
        {
            "name": name,
            "sticky": True,
            "variants": [
                {"key": "a", "header_value": "a", "weight": 50, "destination": {"host": "m"}},
                {"key": "b", "header_value": "b", "weight": 50, "destination": {"host": "m"}},
            ],
        }
    )


def node_ports(url: str) -> list[int]:
    hosts = url.partition("://")[2].partition("/")[0]
    return [int(address.rpartition(":")[2]) for address in hosts.split(",")]


def keys_by_node(url: str, prefix: str) -> dict[int, set[str]]:
    """Each node's keys of the store, read from the node itself (not through the cluster
    client under test)."""
    found = {}
    for port in node_ports(url):
        node = redis.Redis(port=port, decode_responses=True)
        found[port] = set(node.scan_iter(match=f"{{{prefix}*", count=1000))
        node.close()
    return found


def slot(url: str, key: str) -> int:
    node = redis.Redis(port=node_ports(url)[0], decode_responses=True)
    try:
        return int(node.cluster("keyslot", key))
    finally:
        node.close()


def test_the_test_cluster_has_three_masters_sharing_every_slot(redis_cluster_url: str) -> None:
    for port in node_ports(redis_cluster_url):
        node = redis.Redis(port=port, decode_responses=True)
        info = node.cluster("info")
        masters = [n for n in node.cluster("nodes").values() if "master" in n["flags"]]
        node.close()
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_known_nodes"]) == int(info["cluster_size"]) == 3
        assert len(masters) == 3


def test_an_experiment_is_one_slot_its_log_partitions_one_each_spread_over_nodes(
    redis_cluster_store_url: str,
) -> None:
    store = open_store(redis_cluster_store_url)
    assert isinstance(store, RedisStore)
    # Two names whose slots are served by different masters, found by asking the servers.
    owner: dict[int, str] = {}
    for i in range(64):
        name = f"exp-{i}"
        key_slot = slot(redis_cluster_store_url, store.experiment_key(name, "x"))
        owner.setdefault(_owner(redis_cluster_store_url, key_slot), name)
    first, second = list(owner.values())[:2]
    plan = FoldPlan.from_spec(spec(first))
    for name in (first, second):
        store.put_experiment(spec(name))
        store.put_sticky(name, name, {"u1": "a"})
        units = {f"u{i}": ("a", 1.0) for i in range(64)}  # spread over the log's partitions
        store.record_exposures(name, "main", plan, units)
    by_node = keys_by_node(redis_cluster_store_url, store.prefix)
    every = set().union(*by_node.values())
    slots = {}
    for name in (first, second):
        mine = {k for k in every if k.startswith(store.experiment_key(name, ""))}
        assert len(mine) >= 3  # sticky records, phases, plans
        slots[name] = {slot(redis_cluster_store_url, k) for k in mine}
        assert len(slots[name]) == 1
        assert [port for port, keys in by_node.items() if mine <= keys] == [
            _owner(redis_cluster_store_url, *slots[name])
        ]
        # Each partition of the log, with the statistics folded from it, is one slot; the
        # partitions spread over the masters.
        partition_slots = set()
        for k in range(store.partitions):
            keys = {key for key in every if key.startswith(store.partition_key(name, k, ""))}
            assert len(keys) >= 6  # log, appended, pos, xp, u, st, sh
            assert len({slot(redis_cluster_store_url, key) for key in keys}) == 1
            partition_slots |= {slot(redis_cluster_store_url, key) for key in keys}
        assert len({_owner(redis_cluster_store_url, s) for s in partition_slots}) >= 2
    assert store.record_exposures(first, "main", plan, units) == 0
    assert sum(store.phase_stats(first, "main")[0].get(f"{v}|n", 0) for v in "ab") == 64
    assert slots[first] != slots[second]
    data = tuple(
        start
        for name in (first, second)
        for start in (store.experiment_key(name, ""), store.partition_key(name, "", "")[:-2])
    )  # "{p<name>}:" starts its experiment keys, "{p<name>#" its partitions' keys
    catalog = {k for k in every if not k.startswith(data)}
    assert catalog  # the index, the revisions, the epoch
    assert len({slot(redis_cluster_store_url, k) for k in catalog}) == 1
    # The catalog and the data of an experiment are written in separate transactions: a
    # delete takes both away.
    store.delete_experiment(first)
    left = set().union(*keys_by_node(redis_cluster_store_url, store.prefix).values())
    assert not {k for k in left if k.startswith(data[:2])}
    assert [r.name for r in store.list_experiments()] == [second]
    store.close()


def _owner(url: str, key_slot: int) -> int:
    node = redis.Redis(port=node_ports(url)[0], decode_responses=True)
    try:
        for start, end, master, *_ in node.execute_command("CLUSTER SLOTS"):
            if int(start) <= key_slot <= int(end):
                return int(master[1])
    finally:
        node.close()
    raise AssertionError(f"no master serves slot {key_slot}")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://127.0.0.1:7000/0", "no database numbers"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1/?prefix=a:", "node '127.0.0.1' must be"),
        ("redis+cluster://127.0.0.1:7000,:7001", "node ':7001' must be"),
        ("redis+cluster://127.0.0.1:99999", "node '127.0.0.1:99999' must be"),
        ("redis+cluster://127.0.0.1:7000/?prefix=a b", "prefix 'a b' must be a name"),
        ("redis+cluster://127.0.0.1:7000/?db=1", "unknown option"),
    ],
)
def test_bad_cluster_urls_are_refused_naming_the_part(url: str, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        open_store(url)


def test_an_unreachable_cluster_opens_and_fails_each_call_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = open_store(f"redis+cluster://:{PASSWORD}@127.0.0.1:9/?prefix=a:")
    for call in (store.ping, store.list_experiments, store.config_epoch):
        with pytest.raises(StoreError, match="Redis store") as caught:
            call()
        assert PASSWORD not in str(caught.value)
    store.close()
    monkeypatch.setenv("ABMESH_STORE_PASSWORD", PASSWORD)
    with pytest.raises(StoreError, match="give it once") as refused:
        open_store(f"redis+cluster://:{PASSWORD}@127.0.0.1:9")
    assert PASSWORD not in str(refused.value)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("locked-cluster"), password=PASSWORD)
    yield cluster
    cluster.stop()


def test_a_cluster_with_a_password_from_the_url_or_the_environment(
    locked: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = locked.url.partition("://")[2]
    with_url = open_store(f"redis+cluster://:{PASSWORD}@{hosts}/?prefix=pw-url:")
    with_url.put_experiment(spec("e"))
    assert [r.name for r in with_url.list_experiments()] == ["e"]
    with_url.close()
    monkeypatch.setenv("ABMESH_STORE_PASSWORD", PASSWORD)
    from_env = open_store(f"{locked.url}/?prefix=pw-url:")
    assert [r.name for r in from_env.list_experiments()] == ["e"]
    from_env.close()
    monkeypatch.setenv("ABMESH_STORE_PASSWORD", "wrong-" + PASSWORD)
    wrong = open_store(f"{locked.url}/?prefix=pw-url:")
    with pytest.raises(StoreError, match="Redis store") as caught:
        wrong.ping()
    assert PASSWORD not in str(caught.value)
    wrong.close()
