"""Indexes within a memory budget (``index.max_bytes``): partitions load from the store on first
use without blocking the lookup, stay while used, are dropped least recently used first, and
give the same answers after being dropped and reloaded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from redis_support import redis_server, redis_url  # noqa: F401 - fixtures
from store_contract import make_entry

from prismcache import SemanticCache
from prismcache.config import load_config
from prismcache.entry import Entry
from prismcache.errors import ConfigError, StoreUnavailable
from prismcache.index import IndexSpec
from prismcache.index.exact import ExactIndex
from prismcache.index.hnsw import HnswIndex
from prismcache.stores import open_store
from prismcache.stores.memory import MemoryStore
from prismcache.tiers import Tiers, entry_bytes

DIM = 8
SPEC = IndexSpec(kind="exact")
PARTITIONS = [f"part-{n}" for n in range(6)]
PER_PARTITION = 50


def partition_bytes() -> int:
    """What the budget counts for one held partition: its exact-tier items (estimated) and
    what its index allocates."""
    index = ExactIndex(DIM)
    index.add(np.arange(1, PER_PARTITION + 1), np.ones((PER_PARTITION, DIM), dtype=np.float32))
    return PER_PARTITION * entry_bytes(DIM, SPEC)[0] + index.nbytes


PARTITION_BYTES = partition_bytes()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def filled_store() -> tuple[MemoryStore, list[Entry]]:
    store = MemoryStore()
    entries = [make_entry(n * PER_PARTITION + i + 1, partition=partition,
                          exact_key=f"{n * PER_PARTITION + i + 1:016x}")
               for n, partition in enumerate(PARTITIONS) for i in range(PER_PARTITION)]
    for entry in entries:
        store.put(entry)
    return store, entries


def budgeted(store: MemoryStore, partitions: float) -> Tiers:
    return Tiers(dim=DIM, embedder_id=f"hash:{DIM}", spec=SPEC,
                 max_bytes=int(partitions * PARTITION_BYTES),
                 loader=store.scan_partition)


def search_when_held(tiers: Tiers, partition: str, query: np.ndarray) -> list[tuple[int, float]]:
    """Search until the partition is held: the first searches miss while it loads."""
    found = tiers.search(partition, "faq", query, 5)
    while not found:
        time.sleep(0.005)
        found = tiers.search(partition, "faq", query, 5)
    return found


def test_a_cold_partition_misses_then_loads_and_answers_as_a_full_index() -> None:
    store, entries = filled_store()
    full = Tiers(dim=DIM, embedder_id=f"hash:{DIM}", spec=SPEC)
    full.add(store.scan(documents=False))
    tiers = budgeted(store, 2.5)
    query = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    assert tiers.search("part-0", "faq", query, 5) == []  # loading: a miss, not a wait
    assert search_when_held(tiers, "part-0", query) == full.search("part-0", "faq", query, 5)
    assert tiers.exact(entries[0].exact_key, "part-0") == entries[0].id
    stats = tiers.budget_stats()
    assert stats is not None and stats.loads == 1 and stats.loaded_entries == PER_PARTITION
    assert stats.load_misses >= 1 and stats.partitions == 1
    assert stats.bytes == PARTITION_BYTES


def test_least_recently_used_partitions_are_dropped_and_reload_the_same() -> None:
    store, _ = filled_store()
    tiers = budgeted(store, 2.5)
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    first = {p: search_when_held(tiers, p, query) for p in PARTITIONS[:2]}
    search_when_held(tiers, PARTITIONS[0], query)  # part-0 used last: part-1 is the LRU
    search_when_held(tiers, PARTITIONS[2], query)
    stats = tiers.budget_stats()
    assert stats is not None and stats.evictions == 1 and stats.partitions == 2
    assert stats.bytes <= stats.max_bytes
    assert tiers.search(PARTITIONS[0], "faq", query, 5) == first[PARTITIONS[0]]  # still held
    assert tiers.search(PARTITIONS[1], "faq", query, 5) == []  # dropped: loads again
    assert search_when_held(tiers, PARTITIONS[1], query) == first[PARTITIONS[1]]


def test_a_burst_over_every_partition_stays_within_the_budget() -> None:
    store, _ = filled_store()
    tiers = budgeted(store, 2.5)
    query = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    peak = 0
    for _ in range(3):
        for partition in PARTITIONS:
            search_when_held(tiers, partition, query)
            stats = tiers.budget_stats()
            assert stats is not None
            peak = max(peak, stats.bytes)
    assert peak <= tiers.budget_stats().max_bytes  # type: ignore[union-attr]
    assert tiers.budget_stats().evictions >= len(PARTITIONS) * 3 - 2  # type: ignore[union-attr]


def test_adds_apply_to_held_partitions_only() -> None:
    store, _ = filled_store()
    tiers = budgeted(store, 2.5)
    query = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    search_when_held(tiers, "part-0", query)
    fresh = [make_entry(10_001, partition="part-0", vector=query, exact_key="a" * 16),
             make_entry(10_002, partition="part-5", vector=query, exact_key="b" * 16)]
    tiers.add(fresh)  # what the change feed and the store path do
    def ids() -> set[int]:
        return {i for i, _ in tiers.search("part-0", "faq", query, 2 * PER_PARTITION)}

    assert 10_001 in ids() and tiers.exact("a" * 16) == 10_001
    assert tiers.exact("b" * 16) is None  # part-5 is not held: ignored
    tiers.drop([fresh[0].ref()])
    assert 10_001 not in ids() and tiers.exact("a" * 16) is None
    assert tiers.budget_stats().bytes == PARTITION_BYTES  # type: ignore[union-attr]


def test_a_partition_larger_than_the_budget_is_refused_for_a_while() -> None:
    store, _ = filled_store()
    tiers = budgeted(store, 0.5)
    query = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    assert tiers.search("part-0", "faq", query, 5) == []
    wait_for(lambda: tiers.budget_stats().refused == 1)  # type: ignore[union-attr]
    wait_for(lambda: tiers.budget_stats().loading == 0)  # type: ignore[union-attr]
    stats = tiers.budget_stats()
    assert stats is not None and stats.bytes == 0 and stats.partitions == 0 and tiers.vectors == 0
    assert tiers.search("part-0", "faq", query, 5) == []
    time.sleep(0.05)
    assert tiers.budget_stats().refused == 1  # type: ignore[union-attr]  # not retried yet


def test_a_failing_store_makes_the_load_a_counted_miss() -> None:
    calls = []

    def broken(partition: str) -> Iterator[Entry]:
        calls.append(partition)
        raise StoreUnavailable("down")

    tiers = Tiers(dim=DIM, embedder_id=f"hash:{DIM}", spec=SPEC, max_bytes=10**6,
                  loader=broken)
    query = np.ones(DIM, dtype=np.float32)
    assert tiers.search("p", "faq", query, 5) == []
    wait_for(lambda: tiers.budget_stats().load_errors == 1)  # type: ignore[union-attr]
    wait_for(lambda: tiers.budget_stats().loading == 0)  # type: ignore[union-attr]
    assert tiers.search("p", "faq", query, 5) == []  # tried again
    wait_for(lambda: len(calls) == 2)


def test_lookups_never_wait_for_a_slow_load() -> None:
    release = threading.Event()
    store, _ = filled_store()

    def slow(partition: str) -> Iterator[Entry]:
        release.wait(5)
        yield from store.scan_partition(partition)

    tiers = Tiers(dim=DIM, embedder_id=f"hash:{DIM}", spec=SPEC, max_bytes=10**6, loader=slow)
    query = np.ones(DIM, dtype=np.float32)
    started = time.monotonic()
    for _ in range(100):
        assert tiers.search("part-0", "faq", query, 5) == []
    assert time.monotonic() - started < 0.5
    release.set()
    search_when_held(tiers, "part-0", query)


CONFIG = {"embedder": "hash:64", "classifier": {"examples": None}, "rules": [],
          "default_category": "c", "index": {"max_bytes": "1MiB"},
          "categories": {"c": {"threshold": 0.5, "ttl": "1h", "quota": 1.0, "guards": [],
                               "verifier": "none"}}}


def chat(text: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


REPLY = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


def test_config_parses_the_budget_and_refuses_it_with_a_snapshot() -> None:
    assert load_config({"index": {"max_bytes": "2GiB"}}).index["max_bytes"] == 2 * 2**30
    assert load_config({}).index["max_bytes"] is None
    with pytest.raises(ConfigError, match="snapshot"):
        load_config({"index": {"max_bytes": "1GiB"}, "snapshot": "/tmp/x"})


def test_a_cache_within_a_budget_hits_once_the_partition_is_loaded() -> None:
    store = MemoryStore()
    with SemanticCache.open(dict(CONFIG), store=store) as writer:
        assert writer.store(chat("how do I reset my password"), REPLY, tenant="t").stored
        reader = SemanticCache(writer.config, store=store, embedder=writer.embedder)
        reader.lookup(chat("how do I reset my password"), tenant="t")  # starts the load
        wait_for(lambda: reader.lookup(chat("how can I reset my password?"), tenant="t").hit)
        assert reader.lookup(chat("how do I reset my password"), tenant="t").tier == "exact"
        assert reader.lookup(chat("how do I reset my password"), tenant="other").hit is False
        budget = reader.index_budget
        assert budget is not None and budget.loads >= 1 and budget.partitions >= 1
        assert "prismcache_index_loads_total" in "\n".join(budget.metric_lines())
        reader.close()


def test_the_change_feed_keeps_loaded_partitions_current(redis_url: str) -> None:  # noqa: F811
    a = SemanticCache.open({**CONFIG, "store": redis_url})
    b = SemanticCache.open({**CONFIG, "store": redis_url})
    try:
        a.store(chat("how do I reset my password"), REPLY, tenant="t")
        wait_for(lambda: b.lookup(chat("how do I reset my password?"), tenant="t").hit)
        a.store(chat("what are your opening hours"), REPLY, tenant="t")  # held by b: fed
        wait_for(lambda: b.lookup(chat("what are your opening hours?"), tenant="t").hit, 2.0)
        a.store(chat("a question of another tenant"), REPLY, tenant="u")  # not held: ignored
        time.sleep(0.3)
        stats = b._tiers.budget_stats()
        assert stats is not None and stats.partitions == 1 and len(b._tiers) == 2
    finally:
        a.close()
        b.close()


def test_doctests() -> None:
    import doctest

    from prismcache import tiers

    assert doctest.testmod(tiers).failed == 0


def test_redis_partition_sets_are_built_for_older_data(redis_url: str) -> None:  # noqa: F811
    import redis as redis_py

    with open_store(redis_url) as store:
        for i in range(1, 30):
            store.put(make_entry(i, partition=f"p{i % 3}"))
    raw = redis_py.Redis.from_url(redis_url)
    try:  # what a store written before partition sets looks like
        raw.delete("prism:layout", *[f"prism:p:p{n}" for n in range(3)])
    finally:
        raw.close()
    with open_store(redis_url) as store:
        assert sorted(e.id for e in store.scan_partition("p1")) == list(range(1, 30, 3))


def test_the_budget_counts_what_an_hnsw_graph_allocates() -> None:
    store, entries = filled_store()
    tiers = Tiers(dim=DIM, embedder_id=f"hash:{DIM}", spec=IndexSpec(kind="hnsw"),
                  max_bytes=10**8, loader=store.scan_partition)
    query = np.random.default_rng(6).standard_normal(DIM).astype(np.float32)
    search_when_held(tiers, "part-0", query)
    graph = HnswIndex(DIM, capacity=PER_PARTITION)
    graph.add(np.array([e.id for e in entries[:PER_PARTITION]]),
              np.stack([e.vector for e in entries[:PER_PARTITION]]))
    held = tiers.budget_stats().bytes  # type: ignore[union-attr]
    # hnswlib's fixed 2.6 MB per graph is counted, not only the vectors the estimate knows
    assert held >= graph.nbytes > 65536 * 40 > 100 * PER_PARTITION * sum(entry_bytes(DIM, SPEC))


def test_a_budget_fixes_the_mmap_threshold_where_glibc_allows_it() -> None:
    import platform

    from prismcache.index.memory import fix_mmap_threshold

    took = fix_mmap_threshold()
    assert isinstance(took, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert took and fix_mmap_threshold()  # and a second call is a no-op
