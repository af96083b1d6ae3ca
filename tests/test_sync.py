"""Several caches over one Redis stay in step through the change feed (in one process: the
multi-process version is tests/test_cluster.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_py
from conftest import TEST_CONFIG, CountingEmbedder, chat, reply
from redis_support import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures

from prismcache import SemanticCache
from prismcache.entry import EntryRef
from prismcache.stores import open_store
from prismcache.stores.memory import MemoryStore
from prismcache.stores.redis import RedisStore
from prismcache.sync import Change, ChangeFeed, Follower, apply_changes

CONFIG: dict[str, Any] = {**TEST_CONFIG, "default_category": "loose"}


@pytest.fixture
def open_cache(redis_url: str) -> Iterator[Callable[..., SemanticCache]]:  # noqa: F811
    opened: list[SemanticCache] = []

    def make(**store_options: Any) -> SemanticCache:
        cache = SemanticCache.open(CONFIG, store=open_store(redis_url, **store_options),
                                   embedder=CountingEmbedder())
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()


def wait_for(condition: Callable[[], bool], timeout: float = 1.0) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def follower(cache: SemanticCache) -> Follower:
    found = cache._follower  # the hook under test
    assert found is not None and found.running
    return found


def test_only_stores_with_a_feed_are_followed(redis_url: str) -> None:  # noqa: F811
    assert Follower.of(MemoryStore()) is None
    with open_store(redis_url) as store:
        assert isinstance(store, ChangeFeed)
        assert Follower.of(store) is not None


def test_a_store_through_one_cache_is_a_hit_through_another(
    open_cache: Callable[..., SemanticCache],
) -> None:
    a, b = open_cache(), open_cache()
    assert a.store(chat("how do I reset my password"), reply("Click reset."), tenant="t").stored
    wait_for(lambda: b.lookup(chat("how do I reset my password"), tenant="t").hit)
    assert b.lookup(chat("how can I reset my password?"), tenant="t").hit  # semantic tier
    assert not b.lookup(chat("how do I reset my password"), tenant="other").hit


def test_invalidation_and_eviction_reach_the_other_cache(
    open_cache: Callable[..., SemanticCache],
) -> None:
    a, b = open_cache(), open_cache()
    for n in range(5):
        a.store(chat(f"question number {n} about invoices"), reply(f"answer {n}"), tenant="t")
    wait_for(lambda: len(b._tiers) == 5)
    assert b.invalidate(tenant="t") == 5
    wait_for(lambda: len(a._tiers) == 0 and a._tiers.vectors == 0)
    assert not a.lookup(chat("question number 1 about invoices"), tenant="t").hit


def test_expiry_reaches_the_other_cache(open_cache: Callable[..., SemanticCache]) -> None:
    a, b = open_cache(), open_cache()
    store = a.document_store
    assert isinstance(store, RedisStore)
    a.store(chat("what is the capital of France"), reply("Paris"), tenant="t")
    wait_for(lambda: len(b._tiers) == 1)
    (ref,) = store.find()
    store.delete([ref.id])  # as an expiry would: the store logs the removal
    wait_for(lambda: len(b._tiers) == 0)


def test_start_takes_the_cursor_before_the_rebuild(
    open_cache: Callable[..., SemanticCache], redis_url: str,  # noqa: F811
) -> None:
    a = open_cache()
    a.store(chat("first question"), reply("one"), tenant="t")
    b = open_cache()  # rebuilt from the store: has the first already
    assert b.lookup(chat("first question"), tenant="t").hit
    a.store(chat("second question"), reply("two"), tenant="t")
    wait_for(lambda: b.lookup(chat("second question"), tenant="t").hit)


def test_falling_behind_the_retention_rebuilds(
    open_cache: Callable[..., SemanticCache],
) -> None:
    a = open_cache(stream_maxlen=1)
    b = open_cache(stream_maxlen=1)
    feed = follower(b)
    feed._stop.set()  # pause b's follower: let a's writes outrun the stream's retention
    feed._thread.join(5)  # type: ignore[union-attr]
    for n in range(250):
        a.store(chat(f"question {n} on the topic of shipping"), reply(f"{n}"), tenant="t")
    cursor = feed.cursor
    batch = b.document_store.read_changes(cursor, block_ms=0)  # type: ignore[attr-defined]
    assert batch.behind
    restarted = Follower(b.document_store, cursor)  # type: ignore[arg-type]
    restarted.start(lambda: b._tiers, reload=lambda: setattr(b, "_tiers", b._load_tiers()))
    try:
        wait_for(lambda: restarted.rebuilds == 1, timeout=5)
        assert len(b._tiers) == 250
        assert b.lookup(chat("question 249 on the topic of shipping"), tenant="t").hit
    finally:
        restarted.stop()


def test_follower_survives_redis_down_and_resyncs_after_an_empty_restart(
    open_cache: Callable[..., SemanticCache], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = open_cache(), open_cache()
    a.store(chat("question before the outage"), reply("old"), tenant="t")
    wait_for(lambda: len(b._tiers) == 1)
    redis_server.stop()
    # Generous deadlines: the follower backs off up to 2 s between retries, and this machine
    # is shared; wait_for returns as soon as the condition holds. (The one-second sync bound
    # is asserted by test_cluster.py on a healthy Redis.)
    wait_for(lambda: follower(b).errors > 0, timeout=10)
    assert not b.lookup(chat("question before the outage"), tenant="t").hit  # fails open
    redis_server.start()  # empty: no persistence
    wait_for(lambda: follower(b).rebuilds >= 1 and len(b._tiers) == 0, timeout=15)
    a.store(chat("question after the outage"), reply("new"), tenant="t")
    wait_for(lambda: b.lookup(chat("question after the outage"), tenant="t").hit, timeout=10)
    assert follower(b).running


def test_close_stops_the_follower(open_cache: Callable[..., SemanticCache]) -> None:
    cache = open_cache()
    feed = follower(cache)
    started = time.monotonic()
    cache.close()
    assert not feed.running and time.monotonic() - started < 2.0


def test_apply_changes_is_idempotent_and_ordered(
    open_cache: Callable[..., SemanticCache], redis_url: str,  # noqa: F811
) -> None:
    a = open_cache()
    a.store(chat("a question"), reply("an answer"), tenant="t")
    raw = redis_py.Redis.from_url(redis_url)
    try:
        assert [f[b"op"] for _, f in raw.xrange("prism:changes")] == [b"put"]
    finally:
        raw.close()
    store = a.document_store
    batch = store.read_changes("x/0-0/0", block_ms=0)  # type: ignore[attr-defined]
    assert batch.behind  # an unknown epoch: the log is not the one the cursor came from
    cursor = store.latest_cursor().split("/")[0] + "/0-0/0"  # type: ignore[attr-defined]
    (put,) = store.read_changes(cursor, block_ms=0).changes  # type: ignore[attr-defined]
    assert put.op == "put" and put.vector is not None
    tiers = a._tiers
    apply_changes(tiers, [put, put])
    assert len(tiers) == 1 and tiers.vectors == 1
    gone = Change(op="delete", ref=put.ref)
    apply_changes(tiers, [put, gone, put, gone])
    assert len(tiers) == 0 and tiers.vectors == 0
    other = Change(op="put", ref=EntryRef(id=5, partition="p", category="loose", exact_key="ab"
                                          * 8), embedder="another:64", vector=put.vector)
    apply_changes(tiers, [other])  # another embedder's vector is skipped, not raised
    assert tiers.vectors == 0


def test_doctests() -> None:
    import doctest

    import prismcache.sync

    assert doctest.testmod(prismcache.sync).failed == 0
