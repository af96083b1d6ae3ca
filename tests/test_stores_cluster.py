"""The store contract on a real Redis Cluster (3 primaries, 3 replicas on loopback), unchanged,
plus what is specific to a cluster: buckets spread over the shards, fan-out listings, the
change feed across buckets, URLs and detection of cluster mode on ``redis://``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_py
from redis.cluster import RedisCluster
from redis_support import ClusterOfRedis, cluster_url, redis_cluster  # noqa: F401 - fixtures
from store_contract import StoreContract, assert_same_entry, make_entry

from prismcache.errors import ConfigError
from prismcache.stores import DocumentStore, open_store
from prismcache.stores.redis import RedisStore
from prismcache.stores.redis_records import bucket_tags


class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    def store(self, cluster_url: str) -> Iterator[DocumentStore]:  # noqa: F811
        store = open_store(cluster_url)
        yield store
        store.close()


@pytest.fixture
def store(cluster_url: str) -> Iterator[RedisStore]:  # noqa: F811
    opened = open_store(cluster_url)
    assert isinstance(opened, RedisStore)
    yield opened
    opened.close()


def test_tags_spread_evenly_over_slot_ranges() -> None:
    from redis.crc import key_slot

    tags = bucket_tags(16)
    assert len(set(tags)) == 16
    assert [key_slot(t.encode()) * 16 // 16384 for t in tags] == list(range(16))


def test_tenants_land_on_different_shards(store: RedisStore,
                                          redis_cluster: ClusterOfRedis) -> None:  # noqa: F811
    for i in range(1, 61):
        store.put(make_entry(i, tenant=f"tenant-{i % 6}"))
    holders: dict[str, set[int]] = {}
    for node in redis_cluster.masters():
        with redis_py.Redis(port=node.port) as client:
            for key in client.scan_iter(match="prism:*t:tenant-*"):
                holders.setdefault(key.decode().rpartition("t:")[2], set()).add(node.port)
    assert len(holders) == 6
    assert len(set().union(*holders.values())) == 3  # every shard holds entries
    assert {r.id for r in store.find(tenant="tenant-2")} == set(range(2, 61, 6))


def test_scan_partition_reads_only_that_partition(store: RedisStore) -> None:
    for i in range(1, 40):
        store.put(make_entry(i, partition=f"p{i % 4}"))
    got = list(store.scan_partition("p1"))
    assert sorted(e.id for e in got) == list(range(1, 40, 4))
    assert all(e.request == {} for e in got)


def test_change_feed_across_buckets(store: RedisStore) -> None:
    cursor = store.latest_cursor()
    assert cursor.count("/") == 3 * store.buckets - 1
    for i in range(1, 21):
        store.put(make_entry(i))
    store.delete([3, 4])
    seen: list[tuple[str, int]] = []
    while True:
        batch = store.read_changes(cursor, block_ms=0, limit=3)
        assert not batch.behind
        if not batch.changes:
            break
        seen += [(c.op, c.ref.id) for c in batch.changes]
        cursor = batch.cursor
    assert sorted(i for op, i in seen if op == "put") == list(range(1, 21))
    assert sorted(i for op, i in seen if op == "delete") == [3, 4]
    assert seen.index(("put", 3)) < seen.index(("delete", 3))  # one entry's events in order


def test_redis_url_of_a_node_opens_the_cluster(redis_cluster: ClusterOfRedis,  # noqa: F811
                                               cluster_url: str) -> None:  # noqa: F811
    node = redis_cluster.nodes[0]
    with open_store(f"redis://127.0.0.1:{node.port}/0?prefix=det:") as store:
        assert isinstance(store, RedisStore) and store.buckets == 16
        store.put(make_entry(5))
        assert_same_entry(store.get(5), make_entry(5))


def test_every_process_must_use_the_same_buckets(cluster_url: str) -> None:  # noqa: F811
    with open_store(cluster_url + "?buckets=8"), pytest.raises(ConfigError, match="buckets"):
        open_store(cluster_url)


def test_a_hash_tag_in_the_prefix_is_refused(cluster_url: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="hash"):
        open_store(cluster_url + "?prefix={x}:")


def test_library_use_with_a_cluster_client(cluster_url: str) -> None:  # noqa: F811
    seed = cluster_url.removeprefix("redis+cluster://").split(",")[0]
    host, _, port = seed.partition(":")
    client = RedisCluster(host=host, port=int(port), socket_timeout=0.5)
    with RedisStore(client, prefix="lib:", shown="cluster://test") as store:
        store.put(make_entry(7))
        assert_same_entry(store.get(7), make_entry(7))
