"""A hit over Redis in one round trip: the touch rides in the next command (deferred), with the
same side effects as sent at once (``touches="sync"``), against a real redis-server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_py
from conftest import FakeClock, chat, reply
from proxy_support import make_proxy, upstream  # noqa: F401 - fixtures
from redis_support import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures
from store_contract import StoreContract, make_entry

from prismcache import SemanticCache
from prismcache.errors import ConfigError, StoreUnavailable
from prismcache.stores import DocumentStore, open_store
from prismcache.stores.redis import RedisStore


class TestRedisStoreSyncTouches(StoreContract):
    """The contract holds with touches sent as they happen too (the default defers them)."""

    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[DocumentStore]:  # noqa: F811
        store = open_store(redis_url + "?touches=sync")
        yield store
        store.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis_py.Redis]:  # noqa: F811
    client = redis_py.Redis.from_url(redis_url)
    yield client
    client.close()


def server_counts(client: redis_py.Redis) -> tuple[dict[str, int], int]:
    """(calls per command but INFO, socket reads) so far; the reads include this INFO's."""
    stats = client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
             if k != "cmdstat_info"}
    return calls, int(client.info("stats")["total_reads_processed"])


def hits_of(make_cache: Callable[..., SemanticCache], clock: FakeClock, url: str,
            eviction: str, lookups: int) -> tuple[SemanticCache, int]:
    """A cache over the store at ``url`` holding one entry of category faq, hit ``lookups``
    times two seconds apart; the cache and the entry's id."""
    return cache_over(make_cache, clock, open_store(url), eviction, lookups)


def cache_over(make_cache: Callable[..., SemanticCache], clock: FakeClock,
               store: DocumentStore, eviction: str, lookups: int) -> tuple[SemanticCache, int]:
    cache = make_cache({"categories": {"faq": {"eviction": eviction}}}, store=store)
    stored = cache.store(chat("how do I reset my password"), reply("use the link"),
                         tenant="t", category="faq")
    assert stored.entry_id is not None
    for _ in range(lookups):
        clock.tick(2.0)
        assert cache.lookup(chat("how do I reset my password"), tenant="t").hit
    return cache, stored.entry_id


@pytest.mark.parametrize("eviction", ["lru", "lfu", "gdsf"])
def test_a_hits_side_effects_are_those_of_a_sync_touch(
        make_cache: Callable[..., SemanticCache], clock: FakeClock, redis_url: str,  # noqa: F811
        raw: redis_py.Redis, eviction: str) -> None:
    after: dict[str, Any] = {}
    for mode in ("sync", "deferred"):
        start = clock.now
        cache, entry_id = hits_of(make_cache, clock, f"{redis_url}?touches={mode}&prefix={mode}:",
                                  eviction, 3)
        # another client, without waiting: the deferred touches went with the last lookups'
        # reads, all but the last, which the timer sends within 10 ms
        time.sleep(0.1)
        key = f"{mode}:e:{entry_id:019d}"
        row = raw.hmget(key, ["hits", "last_access", "priority"])
        order = raw.zrange(f"{mode}:c:faq", 0, -1, withscores=True)
        after[mode] = {"hits": int(row[0]), "since": float(row[1]) - start,
                       "priority": float(row[2]) - (start if eviction == "lru" else 0.0),
                       "order": [(m[:16], s - (start if eviction == "lru" else 0.0))
                                 for m, s in order],
                       "stats": cache.stats()["faq"].hits}
        assert after[mode]["hits"] == 3 and after[mode]["since"] == 6.0
    # the eviction member encodes last_access, as does LRU's priority: compare offsets only
    assert after["sync"]["hits"] == after["deferred"]["hits"]
    assert after["sync"]["priority"] == pytest.approx(after["deferred"]["priority"])
    assert after["sync"]["stats"] == after["deferred"]["stats"] == 3
    assert len(after["sync"]["order"]) == len(after["deferred"]["order"]) == 1


@pytest.mark.parametrize(("mode", "trips"), [("deferred", 1), ("sync", 2)])
def test_one_round_trip_per_hit(make_cache: Callable[..., SemanticCache], clock: FakeClock,
                                redis_url: str, raw: redis_py.Redis,  # noqa: F811
                                mode: str, trips: int) -> None:
    cache, _ = hits_of(make_cache, clock, f"{redis_url}?touches={mode}", "lru", 1)
    before, reads = server_counts(raw)
    lookups = 100
    for _ in range(lookups):
        clock.tick(1.0)
        assert cache.lookup(chat("how do I reset my password"), tenant="t").hit
    after, reads_after = server_counts(raw)
    # socket reads = the requests the client waited on (the second INFO's own read aside);
    # a few more may come from the cache's change-feed follower and the touch timer
    assert trips * lookups <= reads_after - reads - 1 <= trips * lookups + 8
    ran = {name: n - before.get(name, 0) for name, n in after.items()
           if n != before.get(name, 0)}
    assert trips * lookups <= ran["evalsha"] <= trips * lookups + 8
    assert "hgetall" in ran  # inside the GET script: the read itself
    assert ran.get("hincrby") in (lookups - 1, lookups)  # one touch per hit, none lost


def test_a_touch_reaches_other_processes_within_the_delay(redis_url: str) -> None:  # noqa: F811
    with RedisStore(redis_py.Redis.from_url(redis_url), touch_delay=0.3) as one, \
            open_store(redis_url) as two:
        one.put(make_entry(5))
        one.touch(5, now=50.0, priority=7.0)
        seen = two.get(5)
        assert seen is not None and seen.hits == 0  # not sent yet
        time.sleep(0.6)
        seen = two.get(5)
        assert seen is not None and (seen.hits, seen.last_access, seen.priority) == (1, 50.0,
                                                                                      7.0)


def test_every_other_command_sends_the_touches_first(redis_url: str,  # noqa: F811
                                                     raw: redis_py.Redis) -> None:
    with open_store(redis_url) as store:
        for n in (1, 2, 3):
            store.put(make_entry(n, priority=float(n)))
        store.touch(1, now=99.0, priority=9.0)
        # no get in between: evict_over sees entry 1's new priority at once
        assert [r.id for r in store.evict_over("faq", max_entries=2, max_bytes=None)] == [2]
        store.touch(3, now=100.0, priority=10.0)
        store.close()  # sends what waits
        assert int(raw.hget(f"prism:e:{3:019d}", "hits")) == 1


def test_touches_ride_in_the_next_read_of_their_bucket(redis_url: str,  # noqa: F811
                                                       raw: redis_py.Redis) -> None:
    # a long delay: the timer must not send them while they are being added
    with RedisStore(redis_py.Redis.from_url(redis_url), touch_delay=60.0) as store:
        store.put(make_entry(1))
        store.put(make_entry(2))
        for n in range(600):  # more than one script carries: the first 88 go before
            store.touch(1 + n % 2, now=float(n), priority=float(n))
        before, _ = server_counts(raw)
        seen = store.get(2)
        assert seen is not None and seen.hits == 300  # touches before the read are applied
        after, _ = server_counts(raw)
        assert after["evalsha"] - before["evalsha"] == 2  # 88 touches, then 512 and the read
        store.touch(1, now=1e3, priority=1e3)
        before, _ = server_counts(raw)
        assert store.get(2) is not None
        after, _ = server_counts(raw)
        assert after["evalsha"] - before["evalsha"] == 1  # the read carried the touch
        store.close()
        assert int(raw.hget(f"prism:e:{1:019d}", "hits")) == 301


def test_redis_going_away_mid_hit_fails_open_counted(
        make_cache: Callable[..., SemanticCache], clock: FakeClock,
        redis_server: RedisServer, redis_url: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(redis_url, touch_delay=1.0)  # the server stops before the timer runs
    assert isinstance(store, RedisStore)
    cache, _ = cache_over(make_cache, clock, store, "lru", 1)
    clock.tick(1.0)
    # the read is done, the hit served; the touch waits for the next command (or the timer)
    assert cache.lookup(chat("how do I reset my password"), tenant="t").hit
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="prismcache"):
            time.sleep(1.5)  # the timer tries to send it: lost, counted, logged
            assert store.touches_lost == 1
            assert "1 hit(s) not recorded" in caplog.text
            missed = cache.lookup(chat("how do I reset my password"), tenant="t")
        assert not missed.hit and missed.reason.name == "ERROR"  # failed open
    finally:
        redis_server.start()
    assert sum(stats.errors for stats in cache.stats().values()) == 1  # counted
    clock.tick(1.0)  # the same cache and store carry on (the entry was lost with the server)
    assert cache.store(chat("a new question"), reply("a"), tenant="t").entry_id is not None
    assert cache.lookup(chat("a new question"), tenant="t").hit


def test_a_read_that_fails_loses_the_touches_it_carried(redis_server: RedisServer,  # noqa: F811
                                                        redis_url: str) -> None:  # noqa: F811
    store = RedisStore(redis_py.Redis.from_url(redis_url, socket_timeout=0.5), touch_delay=60.0)
    try:
        store.put(make_entry(1))
        store.touch(1, now=5.0, priority=1.0)
        store.touch(1, now=6.0, priority=1.0)
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            store.get(1)
        assert store.touches_lost == 2
    finally:
        redis_server.start()
        store.close()


def test_touches_option_is_checked(redis_url: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="touches must be one of deferred, sync"):
        open_store(redis_url + "?touches=later")
    with pytest.raises(ConfigError, match="touch_delay must be > 0"):
        RedisStore(redis_py.Redis.from_url(redis_url), touch_delay=0)
    with open_store(redis_url, touches="sync") as store:
        store.put(make_entry(1))
        store.touch(1, now=2.0, priority=3.0)
        assert isinstance(store, RedisStore) and store.touches_lost == 0
        seen = store.get(1)
        assert seen is not None and seen.hits == 1


def test_the_proxy_exports_the_touches_a_redis_store_lost(make_proxy: Callable[..., Any],
                                                          redis_url: str) -> None:
    proxy = make_proxy(store=open_store(redis_url))
    with proxy.http(api_key=None) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert "\nprismcache_store_touches_lost_total 0\n" in response.text


def test_a_store_without_touches_exports_no_such_counter(make_proxy: Callable[..., Any]) -> None:
    proxy = make_proxy()
    with proxy.http(api_key=None) as http:
        assert "prismcache_store_touches_lost_total" not in http.get("/metrics").text
