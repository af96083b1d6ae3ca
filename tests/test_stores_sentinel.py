"""``redis+sentinel://`` against real processes: a primary, a replica and three Sentinels on
loopback, then a forced failover (``SENTINEL FAILOVER``) after which the store keeps working
and the cache failed open during the switch."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py
from redis_support import RedisServer, redis_binary, start_all, wait_until
from store_contract import assert_same_entry, make_entry

from prismcache import SemanticCache
from prismcache.errors import ConfigError, StoreError
from prismcache.stores import open_store, redact_url
from prismcache.stores.redis import RedisStore

SERVICE = "prism"


class SentinelSetup:
    """A primary, its replica and three Sentinels (quorum 2) watching them."""

    def __init__(self, directory: Path) -> None:
        binary = redis_binary()
        fast = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(binary, directory, args=fast)
        self.replica = RedisServer(binary, directory,
                                   args=(*fast, "--replicaof", "127.0.0.1", str(self.primary.port)))
        watch = (f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                 f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                 f"sentinel failover-timeout {SERVICE} 10000\n")
        self.sentinels = [RedisServer(binary, directory, config=watch) for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def sentinel(self) -> redis_py.Redis:
        return redis_py.Redis(port=self.sentinels[0].port, socket_timeout=2)

    def master_port(self) -> int:
        with self.sentinel() as client:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def ready(self) -> bool:
        """The replica is in sync; every Sentinel sees it as up, and the other two Sentinels."""
        with redis_py.Redis(port=self.replica.port, socket_timeout=2) as replica:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        for server in self.sentinels:
            with redis_py.Redis(port=server.port, socket_timeout=2) as client:
                state = client.sentinel_master(SERVICE)
                replicas = client.sentinel_slaves(SERVICE)
            if int(state.get("num-other-sentinels", 0)) < 2 or not replicas:
                return False
            if any({"s_down", "disconnected"} & set(r.get("flags", "").split(","))
                   for r in replicas):
                return False
        return True

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSetup]:
    directory = Path(tempfile.mkdtemp(prefix="prism-sentinel-"))
    setup = SentinelSetup(directory)
    try:
        start_all([setup.primary, setup.replica, *setup.sentinels], "redis-server --sentinel")
        wait_until(setup.ready, 30, "Sentinels see the replica and each other")
        yield setup
    finally:
        setup.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_url_opens_the_sentinels_primary(sentinels: SentinelSetup) -> None:
    with open_store(sentinels.url + "?prefix=url:&db=0") as store:
        assert isinstance(store, RedisStore) and store.prefix == "url:"
        store.put(make_entry(1))
        assert_same_entry(store.get(1), make_entry(1))
        assert repr(store) == f"RedisStore({sentinels.url + '?prefix=url:&db=0'!r}, prefix='url:')"
    with redis_py.Redis(port=sentinels.master_port()) as primary:
        assert primary.exists(f"url:e:{1:019d}") == 1


@pytest.mark.parametrize("url", [
    "redis+sentinel://127.0.0.1:1/",                       # no service name
    "redis+sentinel://127.0.0.1:1/prism?frobnicate=1",     # unknown option
    "redis+sentinel://127.0.0.1:notaport/prism",
    "redis+sentinel://127.0.0.1:1/prism?db=x",
])
def test_bad_sentinel_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


def test_passwords_are_redacted() -> None:
    url = "redis+sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2/prism?sentinel_password=s3"
    shown = redact_url(url)
    assert "hunter2" not in shown and "s3" not in shown


def test_forced_failover_keeps_the_store_working(sentinels: SentinelSetup) -> None:
    config = {"store": sentinels.url + "?prefix=fo:", "embedder": "hash:64",
              "classifier": {"examples": None}, "rules": [], "default_category": "c",
              "categories": {"c": {"threshold": 0.5, "ttl": "1h", "quota": 1.0}}}
    body = {"model": "m", "messages": [{"role": "user", "content": "how do I reset it"}]}
    reply = {"choices": [{"message": {"role": "assistant", "content": "so"},
                          "finish_reason": "stop"}]}
    old = sentinels.master_port()
    with SemanticCache.open(config) as cache, open_store(sentinels.url + "?prefix=probe:") as probe:
        store = cache.document_store
        assert isinstance(store, RedisStore)
        assert cache.store(body, reply, tenant="t").stored
        cursor = store.latest_cursor()
        with redis_py.Redis(port=old) as primary:
            assert primary.wait(1, 2000) == 1  # the entry reached the replica
        with sentinels.sentinel() as client:
            assert client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        # During the switch every lookup answers (a hit, or a miss that failed open).
        failed_open = 0
        deadline = time.monotonic() + 30
        while sentinels.master_port() == old or not _writable(probe):
            assert time.monotonic() < deadline, "no new primary within 30 s"
            result = cache.lookup(body, tenant="t")
            failed_open += (not result.hit) and result.reason.startswith("error:")
            time.sleep(0.02)
        assert sentinels.master_port() != old
        # the same store object now talks to the promoted replica: reads, writes, the feed
        assert cache.lookup(body, tenant="t").hit
        again = dict(body, messages=[{"role": "user", "content": "after the failover"}])
        stored = cache.store(again, reply, tenant="t")
        assert stored.stored and cache.lookup(again, tenant="t").hit
        changes = store.read_changes(cursor, block_ms=0).changes
        assert [c.ref.id for c in changes] == [stored.entry_id]
    print(f"lookups that failed open during the failover: {failed_open}")


def _writable(store: object) -> bool:
    try:
        store.put(make_entry(99))  # type: ignore[attr-defined]
        store.delete([99])  # type: ignore[attr-defined]
    except StoreError:
        return False
    return True
