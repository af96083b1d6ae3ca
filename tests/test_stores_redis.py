"""The store contract against a real redis-server, plus what is specific to Redis: native
expiry behind the indexes' back, fail-open timing, recovery, error translation, URLs."""

from __future__ import annotations

import doctest
import time
from collections.abc import Iterator

import pytest
import redis as redis_py
import redis.sentinel
from redis_support import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures
from store_contract import StoreContract, assert_same_entry, make_entry, usage_of

from prismcache.errors import ConfigError, StoreError, StoreTimeout, StoreUnavailable
from prismcache.stores import DocumentStore, open_store, redis_connect, redis_records
from prismcache.stores import redis as redis_store
from prismcache.stores.redis import RedisStore
from prismcache.sync import ChangeFeed


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[DocumentStore]:  # noqa: F811
        store = open_store(redis_url)
        yield store
        store.close()

    def test_use_after_close_is_unavailable(self, store: DocumentStore) -> None:
        store.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            store.get(1)


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:  # noqa: F811
    opened = open_store(redis_url)
    assert isinstance(opened, RedisStore)
    yield opened
    opened.close()


def test_is_a_change_feed(store: RedisStore) -> None:
    assert isinstance(store, ChangeFeed)


def test_native_expiry_keeps_the_store_consistent(store: RedisStore, redis_url: str) -> None:  # noqa: F811
    soon = time.time() + 0.3
    doomed = [make_entry(i, category="ab"[i % 2], expires=soon, priority=float(i))
              for i in (1, 2, 3, 4)]
    kept = [make_entry(i, category="ab"[i % 2], priority=float(i)) for i in (5, 6, 7)]
    for entry in doomed + kept:
        store.put(entry)
    raw = redis_py.Redis.from_url(redis_url)
    try:
        assert raw.pttl(f"prism:e:{1:019d}") > 0  # native expiry is set
        time.sleep(0.45)
        assert raw.exists(f"prism:e:{1:019d}") == 0  # Redis deleted the hash by itself
        # the indexes still name them until something reconciles:
        assert raw.hexists("prism:refs", f"{2:019d}")
        assert store.get(1) is None
        assert store.usage() == usage_of(kept)  # reaped: counters exact again
        assert {r.id for r in store.find()} == {5, 6, 7}
        assert {r.id for r in store.find(category="a")} == {6}
        assert raw.hlen("prism:refs") == 3 and raw.zcard("prism:exp") == 0
        assert [r.id for r in store.evict_over("b", max_entries=1, max_bytes=None)] == [5]
        assert {r.id for r in store.find(category="b")} == {7}
        assert store.expire(time.time()) == []
        assert store.delete([1, 2, 3, 4]) == []
        # every removal is in the change feed, once
        deleted = [f[b"id"] for _, f in raw.xrange("prism:changes") if f[b"op"] == b"delete"]
        assert sorted(deleted) == sorted(f"{i:019d}".encode() for i in (1, 2, 3, 4, 5))
    finally:
        raw.close()


def test_expire_returns_natively_expired_entries(store: RedisStore) -> None:
    entry = make_entry(9, expires=time.time() + 0.2)
    store.put(entry)
    store.put(make_entry(10))
    time.sleep(0.35)
    assert [r.id for r in store.expire(time.time())] == [9]
    assert store.usage() == usage_of([make_entry(10)])
    assert store.expire(time.time()) == []


def test_evict_over_reconciles_and_touch_ignores_gone_hashes(store: RedisStore) -> None:
    store.put(make_entry(1, expires=time.time() + 0.2, priority=0.0))
    store.put(make_entry(2, priority=5.0))
    store.put(make_entry(3, priority=6.0))
    time.sleep(0.35)
    store.touch(1, now=1.0, priority=9.0)  # its hash is gone: ignored (and unindexed)
    assert store.get(1) is None
    assert [r.id for r in store.evict_over("faq", max_entries=1, max_bytes=None)] == [2]
    assert store.usage() == usage_of([make_entry(3)])


def test_entry_stored_already_expired_gets_no_native_expiry(store: RedisStore,
                                                            redis_url: str) -> None:  # noqa: F811
    store.put(make_entry(1, expires=1000.0))
    raw = redis_py.Redis.from_url(redis_url)
    try:
        assert raw.pttl(f"prism:e:{1:019d}") == -1
    finally:
        raw.close()
    assert_same_entry(store.get(1), make_entry(1, expires=1000.0))


def test_prefixes_keep_stores_apart(redis_url: str) -> None:  # noqa: F811
    with open_store(redis_url + "?prefix=one:") as one, \
            open_store(redis_url, prefix="{two}:") as two:
        one.put(make_entry(1))
        assert two.get(1) is None and two.usage() == {}
        assert one.prefix == "one:" and two.prefix == "{two}:"


def test_redis_down_fails_fast_then_recovers(redis_server: RedisServer,  # noqa: F811
                                             redis_url: str) -> None:  # noqa: F811
    store = open_store(redis_url)
    try:
        store.put(make_entry(1))
        redis_server.stop()
        for call in (lambda: store.get(1), lambda: store.put(make_entry(2)),
                     lambda: store.usage(), lambda: store.delete([1]),
                     lambda: list(store.scan())):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert time.monotonic() - started < 1.0
            assert not isinstance(caught.value, redis_py.RedisError)
        redis_server.start()
        store.put(make_entry(3))  # same store object, new connections, scripts reloaded
        assert_same_entry(store.get(3), make_entry(3))
        assert store.usage() == usage_of([make_entry(3)])
    finally:
        store.close()


def test_unresponsive_redis_times_out(redis_server: RedisServer,  # noqa: F811
                                      redis_url: str) -> None:  # noqa: F811
    with open_store(redis_url, socket_timeout=0.2) as store:
        store.put(make_entry(1))
        redis_server.process.send_signal(19)  # SIGSTOP: connected, but silent
        try:
            started = time.monotonic()
            with pytest.raises(StoreTimeout):
                store.get(1)
            assert time.monotonic() - started < 1.0
        finally:
            redis_server.process.send_signal(18)  # SIGCONT
        assert store.get(1) is not None


def test_unreachable_at_open_is_unavailable_and_redacted() -> None:
    from redis_support import free_port

    with pytest.raises(StoreUnavailable) as caught:
        open_store(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0?socket_timeout=zero", "redis://127.0.0.1:1/0?socket_timeout=0",
     "redis://127.0.0.1:1/0?cluster=true", "redis://127.0.0.1:1/0?prefix=",
     "redis+cluster://127.0.0.1:x/", "redis+cluster://127.0.0.1:1/?frobnicate=1",
     "redis+cluster:///?prefix=p:", "redis://127.0.0.1:1/0?buckets=many"],
)
def test_bad_options_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (redis_py.exceptions.ConnectionError("refused"), StoreUnavailable),
        (redis_py.exceptions.BusyLoadingError("loading"), StoreUnavailable),
        (redis_py.exceptions.AuthenticationError("bad password"), StoreUnavailable),
        (redis_py.exceptions.ReadOnlyError("replica"), StoreUnavailable),
        (redis_py.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
         StoreUnavailable),
        (redis_py.exceptions.TryAgainError("TRYAGAIN"), StoreUnavailable),
        (redis_py.sentinel.MasterNotFoundError("no master"), StoreUnavailable),
        (redis_py.exceptions.TimeoutError("timed out"), StoreTimeout),
        (redis_py.exceptions.ResponseError("OOM command not allowed"), StoreError),
    ],
)
def test_translation(error: Exception, kind: type) -> None:
    translated = redis_store._translate(error, "redis://h:***@x/0")
    assert type(translated) is kind and "redis://h:***@x/0" in str(translated)


@pytest.mark.parametrize("module", [redis_store, redis_records, redis_connect])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0


def test_built_from_a_client_as_with_sentinel(redis_url: str) -> None:  # noqa: F811
    """The library path docs/deployment.md shows for Sentinel: a ready redis-py client, no
    separate feed client (blocking reads then stay within the client's socket timeout)."""
    client = redis_py.Redis.from_url(redis_url, socket_timeout=0.5)
    store = RedisStore(client, prefix="lib:", shown="sentinel://test")
    try:
        cursor = store.latest_cursor()
        started = time.monotonic()
        assert store.read_changes(cursor, block_ms=5000).changes == []
        assert time.monotonic() - started < 0.5  # clamped to half the socket timeout
        store.put(make_entry(1))
        (change,) = store.read_changes(cursor, block_ms=0).changes
        assert change.op == "put" and change.ref.id == 1
        assert repr(store) == "RedisStore('sentinel://test', prefix='lib:')"
    finally:
        store.close()
