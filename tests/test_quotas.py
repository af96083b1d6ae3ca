"""Work-conserving quotas: the rule (prismcache.quotas), its config, and its gauges."""

from __future__ import annotations

import pytest

from typing import Any

from conftest import chat, reply
from prismcache.config import CategoryPolicy, load_config
from prismcache.entry import UsageCount
from prismcache.errors import ConfigError
from prismcache.quotas import Quotas
from proxy_support import ADMIN_TOKEN, make_proxy, upstream  # noqa: F401 - fixtures
from redis_support import redis_server, redis_url, store_url  # noqa: F401 - fixtures

Q = Quotas(capacity_entries=100, capacity_bytes=10_000, shares={"a": 0.5, "b": 0.3},
           ceilings={"b": 0.4})


def test_no_victim_while_there_is_room() -> None:
    assert Q.next_victim({"a": (90, 9000), "b": (10, 1000)}, "a") is None


@pytest.mark.parametrize(("usage", "admitting", "victim"), [
    ({"a": (80, 100), "b": (21, 100)}, "b", "a"),        # entries full: a borrows 30
    ({"a": (40, 100), "b": (31, 100), "c": (30, 0)}, "a", "c"),  # c has no share at all
    ({"a": (10, 9000), "b": (10, 1001)}, "b", "a"),      # bytes full: a borrows 40%
    ({"a": (50, 100), "b": (41, 100)}, "a", "b"),        # b over its 0.4 ceiling
    ({"a": (10, 100), "b": (41, 100)}, "a", "b"),        # ... even with room to spare
])
def test_victims(usage: dict[str, tuple[int, int]], admitting: str, victim: str) -> None:
    assert Q.next_victim(usage, admitting) == victim


def test_over_committed_shares_evict_the_admitting_category() -> None:
    q = Quotas(capacity_entries=10, capacity_bytes=None, shares={"a": 0.8, "b": 0.8})
    assert q.next_victim({"a": (6, 0), "b": (5, 0)}, "b") == "b"
    assert q.next_victim({"a": (6, 0), "b": (5, 0)}, "a") == "a"


def test_borrowed_is_what_a_category_holds_above_its_share() -> None:
    usage = {"a": UsageCount(entries=70, bytes=1000), "b": UsageCount(entries=10, bytes=4000),
             "c": UsageCount(entries=3, bytes=30)}
    assert Q.borrowed(usage) == {"a": UsageCount(entries=20, bytes=0),
                                 "b": UsageCount(entries=0, bytes=1000),
                                 "c": UsageCount(entries=3, bytes=30)}


def test_quotas_of_a_config() -> None:
    config = load_config({"capacity": {"entries": 500, "bytes": "1MB"},
                          "categories": {"code": {"max_share": 0.5}}})
    q = Quotas.of(config)
    assert (q.capacity_entries, q.capacity_bytes) == (500, 10**6)
    assert q.shares["code"] == 0.25 and q.ceilings == {"code": 0.5}


@pytest.mark.parametrize("values", [{"quota": 0.3, "max_share": 0.2}, {"max_share": 1.5},
                                    {"threshold": 0.9, "fallback_threshold": 0.95},
                                    {"fallback_threshold": 0.0}])
def test_bad_policy_values_are_config_errors(values: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        CategoryPolicy(**values)  # type: ignore[arg-type]


def test_metrics_and_admin_stats_export_borrowed_capacity(make_proxy) -> None:
    proxy = make_proxy({"capacity": {"entries": 10}},  # loose and strict: 0.5 each
                       server={"admin_token_env": "PRISM_ADMIN"},
                       environ={"PRISM_ADMIN": ADMIN_TOKEN})
    for i in range(7):
        proxy.cache.store(chat(f"question number {i}"), reply(f"a{i}"), tenant="t",
                          category="loose")
    with proxy.http() as http:
        text = http.get("/metrics").text
        stats = http.get("/admin/stats",
                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert 'prismcache_borrowed_entries{category="loose"} 2' in text
    assert 'prismcache_entries{category="loose"} 7' in text
    assert stats["categories"]["loose"]["borrowed_entries"] == 2
    assert stats["categories"]["strict"]["borrowed_entries"] == 0


def test_a_flooding_category_never_takes_the_others_guaranteed_share(
        make_cache: Any, clock: Any, store_url: str) -> None:
    shares = {name: {"threshold": 0.99, "quota": 0.25} for name in ("a", "b", "c", "flood")}
    cache = make_cache({"store": store_url, "capacity": {"entries": 20},
                        "default_category": "flood", "categories": shares})
    for name in ("a", "b", "c"):  # 6 each: above the guaranteed 5 while space is free
        for i in range(6):
            clock.tick(1)
            cache.store(chat(f"{name} question {i}"), reply(f"{name}{i}"), category=name)
    held = []
    for i in range(100):  # one-off requests of one category, none ever asked again
        clock.tick(1)
        cache.store(chat(f"flood note {i}"), reply(f"f{i}"), category="flood")
        stats = cache.stats()
        held.append({name: stats[name].entries for name in shares})
        assert sum(held[-1].values()) <= 20
        assert all(held[-1][name] >= 5 for name in ("a", "b", "c")), held[-1]
    assert held[-1] == {"a": 5, "b": 5, "c": 5, "flood": 5}  # what it borrowed went first
    stats = cache.stats()
    assert [stats[name].evictions for name in ("a", "b", "c")] == [1, 1, 1]
    assert stats["flood"].evictions == 95
    for name in ("a", "b", "c"):  # the least recently used one of each went
        assert not cache.lookup(chat(f"{name} question 0"), category=name).hit
        assert cache.lookup(chat(f"{name} question 5"), category=name).hit
